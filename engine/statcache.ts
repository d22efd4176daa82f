// The incremental-snapshot cache: for each file of a workspace's last
// snapshot (or restore), the host-local facts (size, mtime, ctime, inode)
// under which its chunk list is known. One cache per workspace, named by a
// key: the box id, or a hash of the directory's absolute path.
//
// A later snapshot of the same workspace reuses a file's chunk list without reading
// it when all of path, size, mtime, ctime and inode are unchanged (ctime
// catches edits that restore the mtime). The cache lives in the host's cache
// directory, one file per workspace, never in the repository: inode numbers
// mean nothing on another host, and keeping them out of trees lets equal
// directories share one tree object across boxes. A missing or damaged cache
// only costs a full read.

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import type { BlobId } from "../store/ids.js"

export interface CachedFile {
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  chunks: BlobId[]
  /**
   * The mtime to record in trees when the file is unchanged, when it differs
   * from the one on disk: a restore sets mtimes to the microsecond (libuv's
   * limit), so an unchanged restored file keeps the nanoseconds it was
   * snapshotted with, and its directory keeps its tree id.
   */
  treeMtime?: string
}

export type StatCache = Map<string, CachedFile>

function cacheFile(cacheDir: string, key: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(key)) throw new Error(`invalid cache key ${JSON.stringify(key)}`)
  return path.join(cacheDir, "statcache", `${key}.json`)
}

export function dirCacheKey(absDir: string): string {
  return `dir-${createHash("sha256").update(absDir).digest("hex").slice(0, 32)}`
}

export async function loadStatCache(cacheDir: string, key: string): Promise<StatCache> {
  const cache: StatCache = new Map()
  let text: string
  try {
    text = await fsp.readFile(cacheFile(cacheDir, key), "utf8")
  } catch {
    return cache
  }
  try {
    const rows = JSON.parse(text) as Array<[string, number, string, string, string, string, string?]>
    for (const [rel, size, mtime, ctime, ino, chunks, treeMtime] of rows) {
      cache.set(rel, {
        size,
        mtimeNs: BigInt(mtime),
        ctimeNs: BigInt(ctime),
        ino: BigInt(ino),
        chunks: chunks === "" ? [] : (chunks.split(",") as BlobId[]),
        ...(treeMtime ? { treeMtime } : {}),
      })
    }
  } catch {
    cache.clear() // a damaged cache is no cache
  }
  return cache
}

export async function saveStatCache(cacheDir: string, key: string, cache: StatCache): Promise<void> {
  const rows = [...cache].map(([rel, f]) => {
    const row = [rel, f.size, String(f.mtimeNs), String(f.ctimeNs), String(f.ino), f.chunks.join(",")]
    if (f.treeMtime !== undefined && f.treeMtime !== String(f.mtimeNs)) row.push(f.treeMtime)
    return row
  })
  const file = cacheFile(cacheDir, key)
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.tmp-${process.pid}`
  await fsp.writeFile(temp, JSON.stringify(rows), { mode: 0o600 })
  await fsp.rename(temp, file)
}

export async function dropStatCache(cacheDir: string, key: string): Promise<void> {
  await fsp.rm(cacheFile(cacheDir, key), { force: true })
}
