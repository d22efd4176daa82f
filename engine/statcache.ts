// The incremental-snapshot cache: for each file of a snapshot, the host-local
// facts (size, mtime, ctime, inode) under which its chunk list is known.
//
// A later snapshot of the same box reuses a file's chunk list without reading
// it when all of path, size, mtime, ctime and inode are unchanged (ctime
// catches edits that restore the mtime). The cache lives in the host's cache
// directory, one file per snapshot, never in the repository: inode numbers
// mean nothing on another host, and keeping them out of trees lets equal
// directories share one tree object across boxes. A missing or damaged cache
// only costs a full read.

import { promises as fsp } from "node:fs"
import path from "node:path"
import type { BlobId } from "../store/ids.js"

export interface CachedFile {
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  chunks: BlobId[]
}

export type StatCache = Map<string, CachedFile>

function cacheFile(cacheDir: string, snapshotId: string): string {
  return path.join(cacheDir, "statcache", `${snapshotId}.json`)
}

export async function loadStatCache(cacheDir: string, snapshotId: string): Promise<StatCache> {
  const cache: StatCache = new Map()
  let text: string
  try {
    text = await fsp.readFile(cacheFile(cacheDir, snapshotId), "utf8")
  } catch {
    return cache
  }
  try {
    const rows = JSON.parse(text) as Array<[string, number, string, string, string, string]>
    for (const [rel, size, mtime, ctime, ino, chunks] of rows) {
      cache.set(rel, {
        size,
        mtimeNs: BigInt(mtime),
        ctimeNs: BigInt(ctime),
        ino: BigInt(ino),
        chunks: chunks === "" ? [] : (chunks.split(",") as BlobId[]),
      })
    }
  } catch {
    cache.clear() // a damaged cache is no cache
  }
  return cache
}

export async function saveStatCache(cacheDir: string, snapshotId: string, cache: StatCache): Promise<void> {
  const rows = [...cache].map(([rel, f]) => [rel, f.size, String(f.mtimeNs), String(f.ctimeNs), String(f.ino), f.chunks.join(",")])
  const file = cacheFile(cacheDir, snapshotId)
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.tmp-${process.pid}`
  await fsp.writeFile(temp, JSON.stringify(rows), { mode: 0o600 })
  await fsp.rename(temp, file)
}

export async function dropStatCache(cacheDir: string, snapshotId: string): Promise<void> {
  await fsp.rm(cacheFile(cacheDir, snapshotId), { force: true })
}
