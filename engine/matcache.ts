// The materialization cache: files a restore has already rebuilt, kept on
// this host so that later restores of the same content copy them instead of
// reading, decoding and hash-checking their chunks again.
//
// An entry is keyed by the file's content identity, the sha256 of its chunk
// id list, and lives at <cacheDir>/files/<xx>/<key>. It is a private copy:
// restores copy out of it with fs.copyFile (a copy-on-write clone where the
// filesystem has them, else a kernel copy), so no box can change the cache or
// another box. An explicit hardlink mode links instead, for read-only use:
// the linked files share one inode with the cache and with each other, so
// writing through one changes all of them (cairn makes them read-only).
//
// Entries are written to a temp name and renamed, so readers only ever see
// whole files. The cache is not trusted: every placed copy is hash-checked,
// chunk by chunk (each chunk's byte range, its length taken from the index),
// against the snapshot's chunk list before it is used, so a damaged entry
// (bit rot, a stray write) is deleted and the file is rebuilt from the packs
// instead. Each use refreshes the entry's access time, and trim() deletes
// the least recently used entries beyond the size limit. Only files of at
// least MIN_SIZE are cached: below that, decoding costs no more than copying.

import { createHash, randomBytes } from "node:crypto"
import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import type { BlobId } from "../store/ids.js"

export const MIN_SIZE = 256 * 1024
const DEFAULT_LIMIT = 1024 * 1024 * 1024

export class MaterializationCache {
  readonly dir: string
  readonly limit: number

  constructor(cacheDir: string, limit?: number) {
    this.dir = path.join(cacheDir, "files")
    const env = Number(process.env.CAIRN_RESTORE_CACHE_BYTES)
    this.limit = limit ?? (Number.isFinite(env) && env >= 0 && process.env.CAIRN_RESTORE_CACHE_BYTES ? env : DEFAULT_LIMIT)
  }

  key(chunks: readonly BlobId[]): string {
    return createHash("sha256").update(chunks.join(",")).digest("hex")
  }

  /** placeEntry for the entry of key. */
  place(key: string, dest: string, link: boolean, expect: ExpectedContent): boolean {
    return placeEntry(this.file(key), dest, link, expect)
  }

  /** Where an entry lives (for placeEntry in another thread). */
  file(key: string): string {
    return path.join(this.dir, key.slice(0, 2), key)
  }

  /** Adds a restored file (copied, so the restored file stays private). */
  async add(key: string, restored: string, readOnly: boolean): Promise<void> {
    if (this.limit === 0) return
    const dest = this.file(key)
    if (fs.existsSync(dest)) return
    await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 })
    const temp = `${dest}.tmp-${randomBytes(6).toString("hex")}`
    try {
      await fsp.copyFile(restored, temp, fs.constants.COPYFILE_FICLONE)
      if (!readOnly) await fsp.chmod(temp, 0o600)
      const now = Date.now() / 1000
      const st = await fsp.stat(temp)
      await fsp.utimes(temp, now, st.mtime)
      await fsp.rename(temp, dest)
    } catch {
      await fsp.rm(temp, { force: true })
    }
  }

  /** Deletes least recently used entries until the cache fits its limit. */
  async trim(): Promise<{ removed: number; bytes: number }> {
    const entries: Array<{ file: string; size: number; used: number }> = []
    for (const sub of await fsp.readdir(this.dir).catch(() => [] as string[])) {
      for (const name of await fsp.readdir(path.join(this.dir, sub)).catch(() => [] as string[])) {
        const file = path.join(this.dir, sub, name)
        const st = await fsp.stat(file).catch(() => undefined)
        if (st) entries.push({ file, size: st.size, used: st.atimeMs })
      }
    }
    let total = entries.reduce((n, e) => n + e.size, 0)
    let removed = 0
    entries.sort((a, b) => a.used - b.used)
    for (const e of entries) {
      if (total <= this.limit) break
      await fsp.rm(e.file, { force: true })
      total -= e.size
      removed++
    }
    return { removed, bytes: total }
  }
}

export interface ExpectedContent {
  size: number
  chunks: readonly BlobId[]
  /** each chunk's length, from the index: the copy is checked range by range, without re-chunking */
  lengths: readonly number[]
}

/**
 * What contentMatches and placeEntry use of Node, passed in rather than
 * imported so that their source runs unchanged in a worker thread
 * (PLACE_SOURCE), whatever a bundler or test runner does to imports.
 */
export interface Sys {
  fs: typeof fs
  createHash: typeof createHash
}
const nodeSys: Sys = { fs, createHash }

/** Checks a file's size and the hash of each chunk's byte range against the expected list. */
export function contentMatches(file: string, expect: ExpectedContent, sys: Sys = nodeSys): boolean {
  const { chunks, lengths } = expect
  if (chunks.length !== lengths.length) return false
  let total = 0
  let longest = 0
  for (const n of lengths) {
    total += n
    longest = Math.max(longest, n)
  }
  if (total !== expect.size) return false
  const fd = sys.fs.openSync(file, "r")
  try {
    if (sys.fs.fstatSync(fd).size !== expect.size) return false
    const buf = Buffer.allocUnsafe(longest)
    let pos = 0
    for (let k = 0; k < chunks.length; k++) {
      const piece = buf.subarray(0, lengths[k]!)
      for (let got = 0; got < piece.length; ) {
        const n = sys.fs.readSync(fd, piece, got, piece.length - got, pos + got)
        if (n === 0) return false
        got += n
      }
      if (sys.createHash("sha256").update(piece).digest("hex") !== chunks[k]) return false
      pos += piece.length
    }
    return true
  } finally {
    sys.fs.closeSync(fd)
  }
}

/**
 * Copies (or links) a cache entry to dest and checks the copy against the
 * expected content; false if there is no entry or it was damaged (the entry
 * is then deleted and dest removed). Runs in restore's writer threads too
 * (PLACE_SOURCE): it uses nothing but its arguments and contentMatches.
 */
export function placeEntry(src: string, dest: string, link: boolean, expect: ExpectedContent, sys: Sys = nodeSys): boolean {
  try {
    if (link) sys.fs.linkSync(src, dest)
    else sys.fs.copyFileSync(src, dest, sys.fs.constants.COPYFILE_FICLONE | sys.fs.constants.COPYFILE_EXCL)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false
    throw err
  }
  if (!contentMatches(dest, expect, sys)) {
    sys.fs.rmSync(dest, { force: true })
    sys.fs.rmSync(src, { force: true })
    return false
  }
  try {
    // last use, for trim(): the access time (the mtime may be the file's own, in link mode)
    const st = sys.fs.statSync(src)
    sys.fs.utimesSync(src, Date.now() / 1000, st.mtime)
  } catch {
    // trimmed meanwhile by another process: the copy we made is complete
  }
  return true
}

/** placeEntry and contentMatches, as source for a worker (which passes its own Sys). */
export const PLACE_SOURCE = [contentMatches, placeEntry].map(String).join("\n")
