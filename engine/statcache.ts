// The incremental-snapshot cache: for each entry of a workspace's last
// snapshot (or restore), the host-local facts (size, mtime, ctime, inode)
// under which its stored form is known. One cache per workspace, named by a
// key: the box id, or a hash of the directory's absolute path.
//
// A later snapshot of the same workspace reuses a file's chunk list without
// reading it when all of path, size, mtime, ctime and inode are unchanged
// (ctime catches edits that restore the mtime, and chmod/chown), and reuses a
// directory's whole tree object when the directory and everything below it
// are unchanged and the exclude patterns are the same: an unchanged subtree
// costs its lstat calls and nothing else.
//
// The cache also carries each blob's stored length and the names of the
// index files that listed every one of them when it was saved. While all of
// those index files still exist, no pack holding the blobs was deleted (gc
// replaces an index file before it deletes a pack the file names), so the
// blobs need no index lookups; after a gc they are looked up once, in bulk.
//
// The cache lives in the host's cache directory, one file per workspace,
// never in the repository: inode numbers mean nothing on another host, and
// keeping them out of trees lets equal directories share one tree object
// across boxes. A missing, damaged or older-format cache only costs a full read.

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import type { BlobId } from "../store/ids.js"

export interface CachedBlob {
  id: BlobId
  /** stored (compressed) length in the repository; -1 when the writer did not know it */
  length: number
}

/** A directory's tree object, reusable while nothing below the directory changed. */
export interface CachedTree extends CachedBlob {
  /** logical bytes below the directory (what the parent's entry records) */
  size: number
  /** entries in the tree: a cheap guard against a changed set of names */
  entries: number
}

export interface CachedEntry {
  kind: "file" | "link" | "dir" | "symlink"
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  /** a regular file's chunks ("link", a hardlink group's later member, has none: its first member holds them) */
  chunks: CachedBlob[]
  /**
   * The mtime to record in trees when the entry is unchanged, when it differs
   * from the one on disk: a restore sets mtimes to the microsecond (libuv's
   * limit), so an unchanged restored file keeps the nanoseconds it was
   * snapshotted with, and its directory keeps its tree id.
   */
  treeMtime?: string
  tree?: CachedTree
}

export interface StatCache {
  entries: Map<string, CachedEntry>
  /** the exclude patterns the trees were built with; undefined: unknown, trees not reusable */
  patterns?: string[]
  /** index files that listed every blob named here when the cache was saved; undefined: unknown */
  indexFiles?: string[]
}

export const emptyStatCache = (): StatCache => ({ entries: new Map() })

const FORMAT = 2
const KINDS = { f: "file", h: "link", d: "dir", l: "symlink" } as const
const CODES = { file: "f", link: "h", dir: "d", symlink: "l" } as const

/**
 * On disk: JSON {v, patterns, index, rows}; one row per entry,
 * [rel, kind, size, mtimeNs, ctimeNs, ino, blobs, treeMtime], where kind is
 * f/h/d/l, blobs is "id:length,..." (a file's chunks) or
 * "id:length:size:entries" (a directory's tree) or "", and treeMtime is ""
 * when it equals mtimeNs.
 */
type Row = [string, keyof typeof KINDS, number, string, string, string, string, string]

function cacheFile(cacheDir: string, key: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(key)) throw new Error(`invalid cache key ${JSON.stringify(key)}`)
  return path.join(cacheDir, "statcache", `${key}.json`)
}

export function dirCacheKey(absDir: string): string {
  return `dir-${createHash("sha256").update(absDir).digest("hex").slice(0, 32)}`
}

function parseBlob(field: string): CachedBlob {
  const colon = field.indexOf(":")
  return colon < 0 ? { id: field as BlobId, length: -1 } : { id: field.slice(0, colon) as BlobId, length: Number(field.slice(colon + 1)) }
}

function parseRow(row: Row): CachedEntry {
  const [, code, size, mtime, ctime, ino, blobs, treeMtime] = row
  const kind = KINDS[code]
  if (kind === undefined || typeof size !== "number" || typeof blobs !== "string") throw new Error("bad row")
  const entry: CachedEntry = { kind, size, mtimeNs: BigInt(mtime), ctimeNs: BigInt(ctime), ino: BigInt(ino), chunks: [] }
  if (treeMtime) entry.treeMtime = treeMtime
  if (kind === "file" && blobs !== "") entry.chunks = blobs.split(",").map(parseBlob)
  if (kind === "dir" && blobs !== "") {
    const [id, length, treeSize, entries] = blobs.split(":")
    entry.tree = { id: id as BlobId, length: Number(length), size: Number(treeSize), entries: Number(entries) }
  }
  return entry
}

export async function loadStatCache(cacheDir: string, key: string): Promise<StatCache> {
  let text: string
  try {
    text = await fsp.readFile(cacheFile(cacheDir, key), "utf8")
  } catch {
    return emptyStatCache()
  }
  try {
    const doc = JSON.parse(text) as { v: number; patterns: string[] | null; index: string[] | null; rows: Row[] }
    if (doc.v !== FORMAT || !Array.isArray(doc.rows)) return emptyStatCache()
    const entries = new Map<string, CachedEntry>()
    for (const row of doc.rows) entries.set(row[0], parseRow(row))
    return {
      entries,
      ...(Array.isArray(doc.patterns) ? { patterns: doc.patterns } : {}),
      ...(Array.isArray(doc.index) ? { indexFiles: doc.index } : {}),
    }
  } catch {
    return emptyStatCache() // a damaged cache is no cache
  }
}

const blobField = (b: CachedBlob): string => (b.length < 0 ? b.id : `${b.id}:${b.length}`)

export async function saveStatCache(cacheDir: string, key: string, cache: StatCache): Promise<void> {
  const rows: Row[] = []
  for (const [rel, e] of cache.entries) {
    const mtime = String(e.mtimeNs)
    const blobs = e.tree ? `${e.tree.id}:${e.tree.length}:${e.tree.size}:${e.tree.entries}` : e.chunks.map(blobField).join(",")
    const treeMtime = e.treeMtime !== undefined && e.treeMtime !== mtime ? e.treeMtime : ""
    rows.push([rel, CODES[e.kind], e.size, mtime, String(e.ctimeNs), String(e.ino), blobs, treeMtime])
  }
  const doc = { v: FORMAT, patterns: cache.patterns ?? null, index: cache.indexFiles ?? null, rows }
  const file = cacheFile(cacheDir, key)
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.tmp-${process.pid}`
  await fsp.writeFile(temp, JSON.stringify(doc), { mode: 0o600 })
  await fsp.rename(temp, file)
}

export async function dropStatCache(cacheDir: string, key: string): Promise<void> {
  await fsp.rm(cacheFile(cacheDir, key), { force: true })
}
