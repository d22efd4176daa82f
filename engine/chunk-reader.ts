// Chunk readers: worker threads that read a large file, cut it into FastCDC
// chunks and hash them, so that the main thread only deduplicates and packs.
//
// Why: for a large file the main thread spent ~4 ms per MiB chunking (the
// gear loop in JavaScript) and hashing, while the compression worker waited:
// a first snapshot of a workspace with a few hundred MiB of binaries was
// bound by one core. A reader does that work on another thread and hands
// back the bytes with the chunks' lengths and ids. It reads into the memory
// of its WebAssembly cut loop (fastcdc.ts) and sends a copy (~0.3 ms per
// span, against ~3 ms to cut it); without WebAssembly it reads into a fresh
// buffer and transfers that.
//
// A changed file's previous chunks (the stat cache's list) ride along as a
// sorted set of 32-bit id prefixes in shared memory: a chunk whose id is in
// it leaves without its bytes, which saves the copy (and the page faults of
// a fresh buffer) for the unchanged bulk of a big file with a small edit.
// The caller checks that the repository holds each such chunk.
//
// Requests are stateless, so any worker of the pool can serve one: FastCDC's
// hash restarts at every chunk start, so cutting from a known boundary gives
// the boundaries a whole-file pass gives. A request reads SPAN bytes from a
// boundary plus up to maxSize of lookahead, cuts chunks while a full maxSize
// window (or the end of the file) is in the buffer, and returns where it
// stopped: the next request starts there. Each reply carries the file's
// fstat, so the caller notices a file replaced or rewritten between requests.
//
// Small files go to the readers too, many to a message (readSmallFiles):
// each is read whole, cut and hashed there, and all their bytes come back
// in one buffer, so that the main thread, which spent its system calls and
// a hash on each of a workspace's thousands of small files, only stores
// their chunks.

import fs, { constants as fsConstants } from "node:fs"
import os from "node:os"
import { SpareBuffers } from "../store/spare-buffers.js"
import { SMALL_HEAP, WorkerPool } from "../store/worker-pool.js"
import { hashBytes, type BlobId } from "../store/ids.js"
import { CUT_SOURCE, WASM_CUTTER_SOURCE, cutPoint, resolve, type ChunkerParams } from "./fastcdc.js"

/**
 * Bytes of chunk starts per request: eight chunks of the default average
 * size per message. Smaller spans cost the main thread more messages, each
 * waking a reader; larger ones hold more memory (a file being read holds up
 * to four reply buffers of SPAN + maxSize, and each reader a WebAssembly
 * memory as large). A first snapshot of the bench's workspace, medians of 6
 * alternating runs since a reader starts a span where the one before ended
 * (no joins to cut): 2.97-3.00 s and 157-159 MiB at 1 MiB, 3.05-3.15 s and
 * 161-164 MiB at 2, 3.13 s and 158 MiB at 512 KiB; after the bench's change
 * 1.00 s at 1 MiB, 0.99 at 2. (Before that, with joins: 3.57 s and 225 MiB
 * at 4 MiB, 3.61 s and 218 MiB at 2, 3.81 s and 215 MiB at 1.)
 */
export const SPAN = 1 << 20

/**
 * Reply buffers given back for reuse: a consumer done with a batch gives its
 * buffer back (ChunkBatch.release), and every request takes one to a reader
 * (a new one when none is spare), which copies its reply into it. Readers
 * keep none and make none: the buffers are those in flight, those whose
 * chunks are being stored, and the spare ones, so a process makes as many
 * as it ever had in use at once, and keeps them (snapshot.ts reads at most
 * one file of several spans at a time, with the span being joined, the one
 * ahead and up to two being stored, and one file of one span beside it: 6
 * buffers of 1.5 MiB; a first snapshot of the bench's workspace made 7).
 *
 * Why: a buffer that a reader made, or that was given back when enough were
 * spare, died on the main thread, whose collector frees such memory only in
 * a full collection, which V8 runs for it once ~64 MiB has piled up. With two
 * kept, a first snapshot of the bench's workspace made 13 of 129 anew, and
 * peaked with several of them dead.
 */
const spare = new SpareBuffers(6)

/** The bytes of files a small-file batch should ask for at most: its reply then fits a kept buffer. */
export const SMALL_BATCH_BYTES = 1 << 20

/**
 * A small-file batch's reply buffer: large enough for SMALL_BATCH_BYTES of
 * files and a byte past each, and kept for the next batch, as span buffers
 * are (SMALL_SPARE of them: the batches in flight, and one more). A larger
 * batch gets a buffer of its own.
 */
const SMALL_REPLY = SMALL_BATCH_BYTES + 4096
const SMALL_SPARE = 3
const smallSpare = new SpareBuffers(SMALL_SPARE, (b) => b.byteLength >= SMALL_REPLY)

/** Files being read at once whose chain a reader keeps (a stream given up midway leaves its entry until it is among the oldest). */
const STREAMS_KEPT = 64

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads")
const fs = require("node:fs")
const { createHash } = require("node:crypto")
// the WebAssembly cut loop, reading into its memory; the JavaScript one where there is no WebAssembly
const wasm = ${WASM_CUTTER_SOURCE}
const jsCut = ${CUT_SOURCE}
function sortedHas(a, x) {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const m = (lo + hi) >>> 1
    if (a[m] < x) lo = m + 1
    else hi = m
  }
  return lo < a.length && a[lo] === x
}
// the reply's buffer: the one the request brought (taken once; chunkFile always brings one), else a new one
function replyBuffer(job, size, want) {
  const given = job.give
  job.give = undefined
  if (given && given.byteLength >= size) return new Uint8Array(given, 0, size)
  // a whole request's size, so that it can serve any later one; a small file's tail gets its own size
  return size > want / 2 ? new Uint8Array(new ArrayBuffer(want), 0, size) : new Uint8Array(size)
}
// reads until want bytes are in buf or the file ends (from its current position, or from offset from); returns how many
function readFull(fd, buf, want, from) {
  let n = 0
  for (;;) {
    const k = fs.readSync(fd, buf, n, want - n, from === undefined ? null : from + n)
    if (k === 0) return n
    n += k
    if (n === want) return n
  }
}
// cuts buf's first n bytes into chunks and hashes each, from 0 while a chunk starts before limit, and
// (unless whole: the bytes run to the file's end) while a cut can see maxSize bytes ahead
function cutAndHash(buf, n, r, limit, whole) {
  const lengths = []
  const ids = []
  let pos = 0
  while (pos < n && pos < limit && (whole || n - pos >= r.max)) {
    const len = wasm ? wasm.cut(pos, n, r) : jsCut(buf, pos, n, r)
    ids.push(createHash("sha256").update(buf.subarray(pos, pos + len)).digest("hex"))
    lengths.push(len)
    pos += len
  }
  return { lengths, ids, pos }
}
// a bigint fstat as the message carries it
function statOf(st) {
  return { size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), ino: String(st.ino), mode: Number(st.mode), isFile: st.isFile() }
}
// small files, whole: each read (one byte past its size, to notice growth), cut and hashed in the cutter's
// memory, then copied into the reply after the ones before it; a file that cannot be read is reported by code
function readSmall(job) {
  const r = job.r
  const total = job.files.reduce((t, f) => t + f.size + 1, 0)
  const out = job.give && job.give.byteLength >= total ? new Uint8Array(job.give, 0, total) : new Uint8Array(new ArrayBuffer(Math.max(total, job.keep)), 0, total)
  let at = 0
  const files = job.files.map((f) => {
    let fd
    try {
      fd = fs.openSync(f.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
      const want = f.size + 1
      const buf = wasm ? wasm.view(want) : new Uint8Array(want)
      const n = readFull(fd, buf, want)
      const st = fs.fstatSync(fd, { bigint: true })
      const { lengths, ids } = cutAndHash(buf, n, r, n, true)
      out.set(buf.subarray(0, n), at)
      at += n
      return { lengths, ids, stat: statOf(st) }
    } catch (err) {
      return { error: String((err && err.message) || err), code: err && err.code }
    } finally {
      if (fd !== undefined) fs.closeSync(fd)
    }
  })
  parentPort.postMessage({ id: job.id, buffer: out.buffer, files }, [out.buffer])
}
// per file being read (job.stream): the last request this reader cut from a true chunk start, and where its last chunk ended
const streams = new Map()
// where a request starts: its guess, unless this reader cut the request before it in the file's chain from a true
// start, whose end is then this one's true start (a stream given up midway leaves its entry: the oldest go)
function startOf(job) {
  if (job.stream === undefined) return { from: job.from, exact: false }
  const prev = job.exact ? undefined : streams.get(job.stream)
  streams.delete(job.stream)
  if (prev && prev.seq === job.seq - 1) return { from: prev.end, exact: true }
  return { from: job.from, exact: job.exact }
}
parentPort.on("message", (job) => {
  if (job.op === "small") return readSmall(job)
  let fd
  try {
    const { from, exact } = startOf(job)
    fd = fs.openSync(job.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
    const r = job.r
    const want = job.span + r.max
    const buf = wasm ? wasm.view(want) : replyBuffer(job, want, want)
    const n = readFull(fd, buf, want, from)
    const st = fs.fstatSync(fd, { bigint: true })
    const end = n < want
    const { lengths, ids, pos } = cutAndHash(buf, n, r, job.span, end)
    if (exact && !(end && pos >= n)) {
      streams.set(job.stream, { seq: job.seq, end: from + pos })
      if (streams.size > ${STREAMS_KEPT}) streams.delete(streams.keys().next().value)
    }
    const stat = statOf(st)
    // chunks the caller knows (their ids' first 32 bits are in job.known) leave without their bytes
    const elided = []
    if (job.known) for (let k = 0; k < lengths.length; k++) if (sortedHas(job.known, parseInt(ids[k].slice(0, 8), 16))) elided.push(k)
    let out
    let head = n
    if (elided.length > 0) {
      // the bytes before the first elided chunk as they are, then the other chunks' bytes one after another
      const skip = new Set(elided)
      let s = 0
      const parts = []
      for (let k = 0; k < lengths.length; s += lengths[k], k++) {
        if (k === elided[0]) head = s
        if (k >= elided[0] && !skip.has(k)) parts.push(buf.subarray(s, s + lengths[k]))
      }
      out = replyBuffer(job, parts.reduce((t, p) => t + p.length, head), want)
      out.set(buf.subarray(0, head))
      let at = head
      for (const p of parts) { out.set(p, at); at += p.length }
    } else {
      // the WebAssembly memory stays here: its bytes leave as a copy
      if (wasm) {
        out = replyBuffer(job, n, want)
        out.set(buf.subarray(0, n))
      } else out = buf
    }
    parentPort.postMessage({ id: job.id, buffer: out.buffer, from, read: n, head, elided, eof: end, lengths, ids, used: pos, done: end && pos >= n, stat }, [out.buffer])
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String((err && err.message) || err), code: err && err.code })
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
})
`

export interface FileStat {
  size: bigint
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  mode: number
  isFile: boolean
}

export interface ReaderCounts {
  /** spans asked of the reader threads */
  requests: number
  /** windows read on the calling thread to join a span whose reply left bytes out */
  windows: number
  /** chunks cut on the calling thread to join a span started at a guess to the true chain */
  cut: number
  /** requests that took a buffer given back (ChunkBatch.release) for their reply */
  reused: number
  /** requests for whose reply a buffer was made (none was spare) */
  made: number
}

export interface ChunkBatch {
  lengths: number[]
  ids: BlobId[]
  /** chunk k's bytes; undefined for a chunk whose id the caller said it knows (opts.known), sent without them */
  bytes: Array<Uint8Array | undefined>
  /** the file's fstat when this batch was read */
  stat: FileStat
  /**
   * Gives the buffer under `bytes` back for reuse: call it once, when no
   * view of the batch's bytes is used any more (its chunks are stored, or
   * copied). A consumer that never calls it leaves the buffer to the collector.
   */
  release(): void
}

interface Reply {
  /** the file's bytes from the request's start up to head, then the bytes of each chunk not elided after that */
  buffer: ArrayBuffer
  /** where in the file the reader started: the request's guess, or the true chunk start it knew */
  from: number
  /** bytes read from the file, from the request's start */
  read: number
  /** bytes of buffer that are the file's bytes as read (read, unless a chunk was elided) */
  head: number
  /** indexes of the chunks sent without their bytes, ascending */
  elided: number[]
  /** the read reached the end of the file */
  eof: boolean
  lengths: number[]
  ids: BlobId[]
  used: number
  done: boolean
  stat: { size: string; mtimeNs: string; ctimeNs: string; ino: string; mode: number; isFile: boolean }
}

let shared: WorkerPool | undefined

/**
 * Readers: one per core the main thread and the compressor leave, at least
 * one and at most two. On two cores one reader is enough: a first snapshot
 * keeps the main thread, the compressor and the reader busy, and a second
 * reader only competed with them for the cores. The bench's workspace, medians
 * of 4 alternating runs: 3.47 s and 184 MiB with one, 3.72 s and 194 MiB
 * with two; after its change (a 200 MiB file edited) 0.94-0.98 s against
 * 0.95-1.07; 100,000 small files 8.41-8.66 s against 8.49-9.08.
 */
export function readerCount(cores = os.availableParallelism()): number {
  return Math.max(1, Math.min(2, cores - 1))
}

function pool(): WorkerPool {
  shared ??= new WorkerPool(WORKER_SOURCE, readerCount(), SMALL_HEAP)
  return shared
}

interface Pending {
  /** where the request asked the reader to start (a guess unless it was a true chunk start) */
  from: number
  reply: Promise<Reply>
}

/** Numbers the files chunkFile reads, so that a reader knows which requests continue which. */
let nextStream = 0

/** Chunks that joining a span to the true chain may cut on this thread before it gives the span up. */
const RESYNC_LIMIT = 16

/** A join's first window, in maxSizes: room for two chunks and a cut's lookahead (a join usually needs one or two). */
const WINDOW_CHUNKS = 3

/**
 * Reads a file as batches of chunks, in order, with two spans in flight:
 * the span after the one being read is requested at once, from where it
 * would start if the current one ended exactly SPAN bytes on (a guess: it
 * ends at the first boundary at or after that). The guessed start is taken
 * as a chunk start, so that span's first boundaries may differ from a
 * whole-file pass; FastCDC restarts at every boundary, so from the first
 * boundary both share on they agree. Each reply is joined to the true chain
 * here: from the true position the chunker runs on the reply's bytes until it
 * meets one of the reply's boundaries (usually within a chunk or two), and
 * the reply's chunks from there on are used as they are. When the reply left
 * those bytes out (elided known chunks), they are read here, in a small
 * window from the true position, checked to come from the file the reply
 * read (same fstat). A reply that shares no boundary soon enough (data with
 * no content-defined cut points, where every chunk is maxSize long, keeps
 * its phase) is dropped and the span is requested again from the true
 * position. Errors (ENOENT, ELOOP: the path became a symlink) keep their
 * code.
 *
 * A reader that served the request before, from a true chunk start, knows
 * where it ended: it starts the next one there instead of at the guess
 * (requests are numbered per file), and the join has nothing to cut. With
 * one reader (two cores) that is every span: the bench's change re-reads a
 * 200 MiB file whose chunks are mostly known, and the joins had cut ~110 ms
 * of chunks on the main thread, most from windows read there. With two
 * readers the two spans in flight go to different readers, which join as
 * before (whether one reader per file would serve more cores better is not
 * measured: this project's machine has two).
 */
export async function* chunkFile(
  path: string,
  params: ChunkerParams,
  gear: Uint32Array,
  opts: {
    span?: number
    /** the size the scan saw: no second span is asked for a file it fits in */
    sizeHint?: number
    /**
     * Ids the caller already holds (a changed file's previous chunks): such
     * chunks come without their bytes, which saves copying them out of the
     * reader. A false match is possible (the reader compares 32 bits of an
     * id), so the caller checks each id it gets without bytes.
     */
    known?: Iterable<BlobId>
    /** counts what the reading took (for tests and benchmarks) */
    counts?: ReaderCounts
    /** false: every span from its guessed start, as when another reader served the one before (for tests) */
    chain?: boolean
  } = {},
): AsyncGenerator<ChunkBatch> {
  const span = opts.span ?? SPAN
  const r = resolve(params, gear)
  const known = opts.known && knownPrefixes(opts.known)
  const stream = opts.chain === false ? undefined : nextStream++
  let seq = 0
  // exact: `from` is a true chunk start (else a guess, which the reader replaces by the true start if it knows it)
  const request = (from: number, exact: boolean): Pending => {
    if (opts.counts) opts.counts.requests++
    const kept = spare.take(span + params.maxSize)
    if (opts.counts) opts.counts[kept ? "reused" : "made"]++
    const give = kept ?? new ArrayBuffer(span + params.maxSize)
    const reply = pool().run<Reply & Record<string, unknown>>({ path, from, exact, stream, seq: seq++, span, r, known, give }, [give])
    reply.catch(() => {}) // awaited below; a consumer that stops early must not leave it unhandled
    return { from, reply }
  }
  // a request whose reply goes unused (a guess that missed, or a span past the end): its buffer is spare once it comes
  const unused = (p: Pending | undefined) => void p?.reply.then((r) => spare.give(r.buffer), () => {})
  // one buffer for the windows a join reads (reused: what it cuts from one is copied out)
  let scratch: Uint8Array | undefined
  let pos = 0
  let current = request(0, true)
  let ahead = opts.sizeHint !== undefined && opts.sizeHint <= span ? undefined : request(span, false)
  for (;;) {
    const reply = await current.reply
    let batch = join(reply, pos, params, gear, replyWindow(reply), opts.counts)
    // the reply left out bytes the join cuts: read them here (from the same file, by its stat), in a window
    // that grows until the join cannot be short of bytes (RESYNC_LIMIT chunks and maxSize ahead)
    for (let size = WINDOW_CHUNKS * params.maxSize; batch === "short"; size *= 2) {
      if (opts.counts) opts.counts.windows++
      if (!scratch || scratch.length < size) scratch = new Uint8Array(size)
      batch = join(reply, pos, params, gear, readWindow(path, pos, scratch.subarray(0, size), reply.stat), opts.counts)
      if (size > RESYNC_LIMIT * params.maxSize) break
    }
    if (batch === undefined || batch === "short") {
      // nothing of this reply is kept: its buffer is spare
      spare.give(reply.buffer)
      unused(ahead)
      current = request(pos, true)
      ahead = request(pos + span, false)
      continue
    }
    const done = reply.done
    pos = batch.end
    if (done) unused(ahead)
    else {
      // the span ahead is of use if it starts at or before the true position, within its reach
      const usable = ahead && ahead.from <= pos && pos - ahead.from < span
      if (!usable) unused(ahead)
      current = usable ? ahead! : request(pos, true)
      // guessed from where the current span truly starts, if its reader knew it: pos (else its own guess)
      ahead = request(Math.max(current.from, pos) + span, false)
    }
    let released = false
    yield {
      lengths: batch.lengths,
      ids: batch.ids,
      bytes: batch.bytes,
      stat: fileStat(reply.stat),
      release: () => {
        if (released) return
        released = true
        spare.give(reply.buffer)
      },
    }
    if (done) return
  }
}

/** A small file as a reader read it whole, or why it could not. */
export type SmallRead =
  | {
      /** the file's bytes as read (at most one past the size asked for: more means it grew) */
      bytes: Uint8Array
      lengths: number[]
      ids: BlobId[]
      /** the file's fstat after the read */
      stat: FileStat
    }
  | { error: string; code?: string }

interface SmallReply {
  buffer: ArrayBuffer
  files: Array<{ lengths: number[]; ids: BlobId[]; stat: Reply["stat"] } | { error: string; code?: string }>
}

/** The files of a small-file batch, in the order asked, and the release of the buffer under their bytes. */
export interface SmallBatch {
  files: SmallRead[]
  /** Gives the buffer under the files' bytes back for a later batch: call it once no view of them is used (their chunks are stored). */
  release(): void
}

/**
 * Reads small files whole on a reader thread, each cut into chunks and
 * hashed there (as chunkLengths and hashBytes would on this thread), all
 * in one message: what the calling thread would spend per file on its
 * system calls and hashing moves to a reader. Reads one byte past each
 * size, so that a file that grew shows it; a file that cannot be read
 * comes back as its error (with its code: ENOENT, ELOOP if it became a
 * symlink, ...).
 */
export async function readSmallFiles(files: ReadonlyArray<{ path: string; size: number }>, params: ChunkerParams, gear: Uint32Array): Promise<SmallBatch> {
  // a kept buffer (or one to keep) when the files fit one, else one the reader makes for this batch alone
  const fits = files.reduce((t, f) => t + f.size + 1, 0) <= SMALL_REPLY
  const give = fits ? (smallSpare.take() ?? new ArrayBuffer(SMALL_REPLY)) : undefined
  const reply = await pool().run<SmallReply & Record<string, unknown>>({ op: "small", files, r: resolve(params, gear), give, keep: SMALL_REPLY }, give ? [give] : [])
  const all = new Uint8Array(reply.buffer)
  let at = 0
  let released = false
  return {
    files: reply.files.map((f) => {
      if ("error" in f) return f
      const size = f.lengths.reduce((t, n) => t + n, 0)
      const bytes = all.subarray(at, (at += size))
      return { bytes, lengths: f.lengths, ids: f.ids, stat: fileStat(f.stat) }
    }),
    release: () => {
      if (!released) smallSpare.give(reply.buffer)
      released = true
    },
  }
}

/** A reader's fstat as its message carries it, as a FileStat. */
function fileStat(s: Reply["stat"]): FileStat {
  return { size: BigInt(s.size), mtimeNs: BigInt(s.mtimeNs), ctimeNs: BigInt(s.ctimeNs), ino: BigInt(s.ino), mode: s.mode, isFile: s.isFile }
}

/** The first 32 bits of each id, sorted, in shared memory: every request of a file passes it without a copy. */
function knownPrefixes(ids: Iterable<BlobId>): Uint32Array {
  const prefixes = [...new Set([...ids].map((id) => parseInt(id.slice(0, 8), 16)))].sort((a, b) => a - b)
  const out = new Uint32Array(new SharedArrayBuffer(4 * prefixes.length))
  out.set(prefixes)
  return out
}

/** Each of a reply's chunks' bytes, or undefined for an elided one. */
function replyBytes(reply: Reply): Array<Uint8Array | undefined> {
  const buf = new Uint8Array(reply.buffer)
  const elided = new Set(reply.elided)
  const first = reply.elided[0] ?? reply.lengths.length
  const out: Array<Uint8Array | undefined> = []
  let natural = 0 // where chunk k starts in the file's bytes as read
  let packed = reply.head // where the next chunk past the first elided one starts in buf
  reply.lengths.forEach((len, k) => {
    if (k < first) out.push(buf.subarray(natural, natural + len))
    else if (elided.has(k)) out.push(undefined)
    else {
      out.push(buf.subarray(packed, packed + len))
      packed += len
    }
    natural += len
  })
  return out
}

/** Bytes of the file as read from absolute offset `at`; `eof`: they run to its end. */
interface Window {
  bytes: Uint8Array
  at: number
  eof: boolean
}

/** A reply's bytes that are the file's as read: all of them, unless chunks were elided. */
function replyWindow(reply: Reply): Window {
  return { bytes: new Uint8Array(reply.buffer, 0, reply.head), at: reply.from, eof: reply.eof && reply.head === reply.read }
}

/**
 * Reads the file from `at` into `bytes` (as much as it holds) on this
 * thread, for a join (synchronously: it is on the critical path, and the
 * thread pool may be queued with small files); undefined if the file is not
 * the one the reply read (by its fstat). The window is a view of `bytes`.
 */
function readWindow(path: string, at: number, bytes: Uint8Array, seen: Reply["stat"]): Window | undefined {
  const length = bytes.length
  let fd: number
  try {
    fd = fs.openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
  } catch {
    return undefined
  }
  try {
    let n = 0
    for (;;) {
      const k = fs.readSync(fd, bytes, n, length - n, at + n)
      if (k === 0) break
      n += k
      if (n === length) break
    }
    const st = fs.fstatSync(fd, { bigint: true })
    if (String(st.ino) !== seen.ino || String(st.size) !== seen.size || String(st.mtimeNs) !== seen.mtimeNs || String(st.ctimeNs) !== seen.ctimeNs) return undefined
    return { bytes: bytes.subarray(0, n), at, eof: n < length }
  } catch {
    return undefined
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * The chunks of a reply that continue the true chain at `pos`: the chunks
 * cut here from `pos`, out of `window`, until one ends on a boundary of the
 * reply, then the reply's own from there (all of them when the reply starts
 * at `pos`). Undefined if they share no boundary soon enough; "short" if the
 * window ran out first while the reply had left bytes out (a wider window
 * may do).
 */
function join(
  reply: Reply,
  pos: number,
  params: ChunkerParams,
  gear: Uint32Array,
  window: Window | undefined,
  counts: ReaderCounts | undefined,
): { lengths: number[]; ids: BlobId[]; bytes: Array<Uint8Array | undefined>; end: number } | "short" | undefined {
  const from = reply.from
  const end = from + reply.used
  if (pos < from || pos > end || window === undefined) return undefined
  // the reply's boundaries, absolute
  const at = new Map<number, number>()
  let b = from
  reply.lengths.forEach((len, k) => {
    at.set(b, k)
    b += len
  })
  at.set(end, reply.lengths.length)
  const lengths: number[] = []
  const ids: BlobId[] = []
  const bytes: Array<Uint8Array | undefined> = []
  const buf = window.bytes
  let p = pos
  while (!at.has(p)) {
    if (lengths.length >= RESYNC_LIMIT) return undefined
    const o = p - window.at
    // a cut needs maxSize bytes ahead, or the end of the file
    if (o < 0 || (!window.eof && buf.length - o < params.maxSize)) return reply.head < reply.read ? "short" : undefined
    const len = cutPoint(buf, o, buf.length, params, gear)
    const piece = buf.slice(o, o + len) // a copy: a window's buffer is reused
    if (counts) counts.cut++
    lengths.push(len)
    ids.push(hashBytes(piece))
    bytes.push(piece)
    p += len
    if (p > end) return undefined
  }
  const k = at.get(p)!
  lengths.push(...reply.lengths.slice(k))
  ids.push(...reply.ids.slice(k))
  bytes.push(...replyBytes(reply).slice(k))
  return { lengths, ids, bytes, end }
}
