// Restore's file writers: worker threads that turn a pack segment into
// finished single-chunk files.
//
// A workspace is mostly small files, one chunk each, and restoring one costs
// a decode, a hash check and six system calls (create, write, chmod, set
// times, close, rename). On the main thread those calls serialize with the
// reading and bookkeeping, and file creation on a busy ext4 is slow enough
// (~100-200 us) that it dominated restores. A writer takes a whole segment
// (many blobs, transferred, not copied twice) with the files each blob
// becomes, and does all of it with synchronous calls in its own thread, so
// two writers and the main thread overlap.
//
// Chunks of larger files are written the same way, each at its offset into a
// temporary file the main thread created; the main thread renames it when
// every chunk is in. Large files the materialization cache holds are copied
// out of it, checked chunk by chunk and renamed into place here as well
// (place), so that the copying and hashing overlap with the rest.
//
// A chunk of zeros is not written but left as a hole (isZeroChunk), so that
// sparse files stay sparse.
//
// The contract is restore's: each file is written, in its (already created)
// directory, only after its blob decoded to exactly its raw length and
// hashed to its id, under a temporary name renamed into place when done, or
// under its own name inside the restore's stage, which no one sees yet; a
// file that fails is removed and reported, never left under its final name. The main
// thread computes every path from validated trees and passes them in; the
// worker creates nothing else. Codec numbers come from store/codec.ts.

import os from "node:os"
import { CODEC_NONE } from "../store/codec.js"
import { CODER_SOURCE } from "../store/codec-pool.js"
import { GARBAGE_SOURCE, WorkerPool } from "../store/worker-pool.js"
import { PLACE_SOURCE, type ExpectedContent } from "./matcache.js"

/** A whole file: the blob is all of it. */
export interface WholeFile {
  /**
   * Where it is written before it is renamed to final; absent: written
   * under final itself, which no one sees yet (inside a restore's stage).
   */
  temp?: string
  final: string
  mode: number
  /** seconds, as fs.utimes takes them (see utimesSeconds) */
  mtime: number
  /** set only when ownership must be restored */
  owner?: { uid: number; gid: number }
}

/** One chunk of a larger file: written at offset into a temp file the main thread created (and finishes). */
export interface FilePart {
  part: string
  offset: number
}

export type WriteFile = WholeFile | FilePart

export interface WriteBlob {
  id: string
  codec: number
  /** offset and length of the stored bytes inside the segment */
  offset: number
  length: number
  rawLength: number
  files: WriteFile[]
}

/** A file restored from the materialization cache (see place). */
export interface PlaceFile {
  src: string
  /** as WholeFile's */
  temp?: string
  final: string
  link: boolean
  expect: ExpectedContent
  /** set unless linking: the file's own metadata */
  meta?: Omit<WholeFile, "temp" | "final">
  /**
   * Other files of the same content (equal files of one restore): copied
   * from the checked temp file before it is renamed, so that the cache entry
   * is copied and hashed once. Not when linking.
   */
  copies?: WholeFile[]
}

/** Per blob: undefined when every file was written, else what went wrong (per file, or for the blob). */
export interface BlobOutcome {
  /** the blob did not decode or hash: every file of it failed */
  integrity?: string
  /** index in files -> [errno code, message] for files that failed */
  failed?: Record<number, [string, string]>
  /** the blob is all zeros: written as a hole (see isZeroChunk) */
  zero?: boolean
}

/**
 * Whether a decoded chunk is all zero bytes, so that it is written as a hole
 * (a sparse file stays sparse, as cp keeps it). memcmp against a zero block
 * stops at the first non-zero byte: data costs almost nothing to rule out.
 * Chunks under a file-system block are written as they are.
 */
export function isZeroChunk(b: Uint8Array): boolean {
  if (b.length < 4096 || b[0] !== 0 || b[b.length - 1] !== 0) return false
  const zeros: Buffer = ((isZeroChunk as { zeros?: Buffer }).zeros ??= Buffer.alloc(65536))
  for (let at = 0; at < b.length; at += zeros.length) {
    const n = Math.min(zeros.length, b.length - at)
    if (Buffer.compare(b.subarray(at, at + n), zeros.subarray(0, n)) !== 0) return false
  }
  return true
}

const WORKER_SOURCE = `
const fs = require("node:fs")
const zlib = require("node:zlib")
const { createHash } = require("node:crypto")
const { parentPort } = require("node:worker_threads")
${GARBAGE_SOURCE}
const NONE = ${CODEC_NONE}

${CODER_SOURCE}
const decodeBlob = blobDecoder(zlib)
// a blob decodes into this buffer (grown to the largest blob seen): it is written out before the next one decodes
let scratch = new Uint8Array(0)
function decode(codec, bytes, rawLength) {
  if (codec === NONE) return bytes
  if (scratch.length < rawLength) scratch = new Uint8Array(Math.max(rawLength, 64 * 1024))
  const raw = decodeBlob(codec, bytes, rawLength, scratch)
  // a new buffer (the decoder's fallback) is garbage once written
  if (raw.buffer !== scratch.buffer) handled(raw.length)
  return raw
}

${isZeroChunk.toString()}

function writePart(f, raw, zero) {
  if (zero) return // a hole: the main thread sizes the file when it finishes it
  const fd = fs.openSync(f.part, "r+")
  try {
    let done = 0
    while (done < raw.length) done += fs.writeSync(fd, raw, done, raw.length - done, f.offset + done)
  } finally {
    fs.closeSync(fd)
  }
}

function writeFile(f, raw, zero) {
  if (f.part !== undefined) return writePart(f, raw, zero)
  const fd = fs.openSync(f.temp ?? f.final, "wx", 0o600)
  try {
    if (zero) fs.ftruncateSync(fd, raw.length)
    else for (let done = 0; done < raw.length; ) done += fs.writeSync(fd, raw, done, raw.length - done)
    if (f.owner) fs.fchownSync(fd, f.owner.uid, f.owner.gid)
    fs.fchmodSync(fd, f.mode)
    fs.futimesSync(fd, f.mtime, f.mtime)
  } finally {
    fs.closeSync(fd)
  }
  if (f.temp !== undefined) fs.renameSync(f.temp, f.final)
}

${PLACE_SOURCE}
const sys = { fs, createHash }

function placeOne(p) {
  const at = p.temp ?? p.final
  if (!placeEntry(p.src, at, p.link, p.expect, sys)) return [false, ...(p.copies ?? []).map(() => false)]
  // the copies come from the checked file while it is still this restore's alone (not yet renamed, or in the stage)
  const copied = (p.copies ?? []).map((c) => finishPlaced(c, at))
  return [finishPlaced({ temp: p.temp, final: p.final, ...p.meta }, undefined), ...copied]
}

/** Sets a placed file's metadata and renames it into place (copying it from "from" first, if given); false, and no temp file left, if any step failed. */
function finishPlaced(f, from) {
  const at = f.temp ?? f.final
  try {
    if (from !== undefined) fs.copyFileSync(from, at, fs.constants.COPYFILE_EXCL)
    if (f.mode !== undefined) {
      if (f.owner) fs.chownSync(at, f.owner.uid, f.owner.gid)
      fs.chmodSync(at, f.mode)
      fs.utimesSync(at, f.mtime, f.mtime)
    }
    if (f.temp !== undefined) fs.renameSync(f.temp, f.final)
    return true
  } catch (err) {
    try { fs.rmSync(at, { force: true }) } catch {}
    return false
  }
}

parentPort.on("message", (job) => {
  try {
    if (job.place) return parentPort.postMessage({ id: job.id, outcomes: placeOne(job.place) })
    const outcomes = writeAll(job)
    // the segment's buffer goes back, for the caller's next read
    parentPort.postMessage({ id: job.id, outcomes, buffer: job.buffer }, [job.buffer])
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) })
  }
})

function writeAll(job) {
  const segment = new Uint8Array(job.buffer, 0, job.length)
  return job.blobs.map((b) => {
    let raw
    try {
      raw = decode(b.codec, segment.subarray(b.offset, b.offset + b.length), b.rawLength)
    } catch (err) {
      return { integrity: "does not decode: the pack is damaged" }
    }
    if (raw.length !== b.rawLength || createHash("sha256").update(raw).digest("hex") !== b.id) {
      return { integrity: "does not match its hash: the pack is damaged" }
    }
    let failed
    const zero = isZeroChunk(raw)
    b.files.forEach((f, i) => {
      try {
        writeFile(f, raw, zero)
      } catch (err) {
        if (f.part === undefined) try { fs.rmSync(f.temp ?? f.final, { force: true }) } catch {}
        ;(failed ??= {})[i] = [String(err && err.code || "IO"), String(err && err.message || err)]
      }
    })
    return failed || zero ? { failed, zero } : undefined
  })
}
`

export class FileWriterPool {
  private readonly pool: WorkerPool

  constructor(readonly size = defaultWriters()) {
    this.pool = new WorkerPool(WORKER_SOURCE, size, { maxYoungGenerationSizeMb: 4 })
  }

  /**
   * Decodes, checks and writes the blobs of one segment. With `handOver`,
   * the memory of a segment that starts its buffer moves to the worker
   * (unusable here after); otherwise its bytes are copied and the caller's
   * stay usable. The buffer the segment travelled in comes back with the
   * outcomes, the caller's to reuse.
   */
  async write(segment: Uint8Array, blobs: WriteBlob[], handOver = false): Promise<{ outcomes: (BlobOutcome | undefined)[]; buffer: ArrayBuffer }> {
    const movable = segment.byteOffset === 0 && segment.buffer instanceof ArrayBuffer
    const buffer = handOver && movable ? (segment.buffer as ArrayBuffer) : (segment.buffer.slice(segment.byteOffset, segment.byteOffset + segment.byteLength) as ArrayBuffer)
    return this.pool.run<{ outcomes: (BlobOutcome | undefined)[]; buffer: ArrayBuffer }>({ buffer, length: segment.byteLength, blobs }, [buffer])
  }

  /**
   * Copies (or links) a materialization-cache entry to its temp name, checks
   * it chunk by chunk, makes its copies, sets their metadata and renames them
   * into place. Per file (the entry's first, then its copies): false when the
   * entry is absent or damaged (then deleted), or a copy failed, leaving
   * nothing behind: the caller rebuilds that file from packs.
   */
  async place(p: PlaceFile): Promise<boolean[]> {
    const reply = await this.pool.run<{ outcomes: boolean[] }>({ place: p })
    return reply.outcomes
  }

  /** Starts the threads ahead of the first segment. */
  warm(): void {
    this.pool.warm()
  }

  close(): Promise<void> {
    return this.pool.close()
  }
}

/** $CAIRN_RESTORE_WRITERS, else one per core (at least 2: file creation waits on the disk as much as on a core). */
export function defaultWriters(): number {
  const env = Number(process.env.CAIRN_RESTORE_WRITERS)
  if (process.env.CAIRN_RESTORE_WRITERS && Number.isInteger(env) && env >= 0) return Math.min(env, 16)
  return Math.min(4, Math.max(2, os.availableParallelism()))
}

let shared: FileWriterPool | undefined

/** The process-wide pool (concurrent restores share its threads), or undefined when $CAIRN_RESTORE_WRITERS is 0. */
export function fileWriterPool(): FileWriterPool | undefined {
  if (defaultWriters() === 0) return undefined
  shared ??= new FileWriterPool()
  return shared
}
