// A small pool of worker threads that compress and decompress blobs.
//
// Why workers and not node:zlib's async calls: an async zlib call costs the
// main thread ~400 us of JavaScript (a stream object, its buffers, several
// callbacks) for a 64 KiB blob, more than the compression itself, so a
// snapshot was bound by the main thread while the thread pool idled. A worker
// compresses and decodes synchronously, through one reused zlib handle per
// codec (blobEncoder, blobDecoder: no stream object per blob), and the main
// thread only posts the bytes (transferred, not copied) and receives the
// result. The main thread keeps the work that must be ordered: chunking,
// hashing, dedup, packs.
//
// The pool machinery (spawning, ref'ing, crash handling) is worker-pool.ts.

import os from "node:os"
import type zlib from "node:zlib"
import { SpareBuffers } from "./spare-buffers.js"
import { GARBAGE_SOURCE, SMALL_HEAP, WorkerPool } from "./worker-pool.js"

/**
 * A blob is stored compressed only when that takes at most this share of
 * its bytes: saving less is not worth decoding later. The encoder gives the
 * input back for such a blob, and encode() (codec.ts) stores it as it is.
 */
export const COMPRESSED_AT_MOST = 0.98

/**
 * Compresses one blob; returns the input itself when compressing would not
 * save enough (COMPRESSED_AT_MOST). The output is a view of `into` when that
 * has room for COMPRESSED_AT_MOST of the input, else new memory.
 */
export type BlobEncode = (codec: number, input: Uint8Array, into?: Uint8Array) => Uint8Array

/** The output room blobEncoder needs for an input of `length` bytes: an output that does not fit saves too little. */
export function encodeRoom(length: number): number {
  return Math.floor(length * COMPRESSED_AT_MOST)
}

/**
 * A blob encoder for one thread: brotli (codec 2) at quality 1 with a window
 * (log2 bytes) as large as most chunks (a longer one finds no more matches in
 * a chunk-sized input), else raw deflate at level 1.
 *
 * Like blobDecoder, it drives one zlib handle per codec instead of node's
 * one-shot calls, whose stream object per call cost the compressing thread
 * more than compressing a small blob, and most of its garbage collection
 * (a first snapshot of the bench's workspace: ~0.4 s less CPU). A brotli
 * handle is initialized again for each blob (a reset would drop its
 * parameters); a deflate handle is reset. The output space is
 * COMPRESSED_AT_MOST of the input: a blob that does not fit saves too little
 * to be worth decoding later, and comes back as the input. Where node lacks the handle, the
 * one-shot calls. The workers run this very function (its source is
 * theirs); `z` is node:zlib.
 */
export function blobEncoder(z: typeof zlib): BlobEncode {
  const c = z.constants
  const brotliParams = (size: number): Record<number, number> => ({ [c.BROTLI_PARAM_QUALITY]: 1, [c.BROTLI_PARAM_LGWIN]: 18, [c.BROTLI_PARAM_SIZE_HINT]: size })
  // node's own layout of brotli's init parameters: a slot per BROTLI_PARAM_ number, unset ones all ones
  const slots = Math.max(...Object.entries(c).map(([k, v]) => (k.startsWith("BROTLI_PARAM_") ? v : 0))) + 1
  const initParams = new Uint32Array(slots).fill(0xffffffff)
  for (const [k, v] of Object.entries(brotliParams(0))) initParams[Number(k)] = v
  const handleFor = zlibHandles((codec) => {
    const h = zlibHandle(codec === 2 ? z.createBrotliCompress({ params: brotliParams(0) }) : z.createDeflateRaw({ level: 1 }), codec === 2 ? c.BROTLI_OPERATION_FINISH : c.Z_FINISH)
    return h !== null && codec === 2 && typeof h.handle.init !== "function" ? null : h
  })
  let scratch = new Uint8Array(0)
  const noCallback = () => {}
  return (codec, input, into) => {
    const h = handleFor(codec)
    if (h === null) {
      const made = codec === 2 ? z.brotliCompressSync(input, { params: brotliParams(input.length) }) : z.deflateRawSync(input, { level: 1 })
      if (made.length >= input.length * COMPRESSED_AT_MOST) return input
      if (!into || into.length < encodeRoom(input.length)) return made
      into.set(made)
      return into.subarray(0, made.length)
    }
    const room = encodeRoom(input.length)
    if (room === 0) return input
    const direct = into !== undefined && into.length >= room
    if (!direct && scratch.length < room) scratch = new Uint8Array(Math.max(room, 64 * 1024))
    const out = direct ? into : scratch
    if (codec === 2) {
      initParams[c.BROTLI_PARAM_SIZE_HINT] = input.length
      h.handle.init!(initParams, h.state, noCallback)
    }
    h.handle.writeSync(h.flush, input, 0, input.length, out, 0, room)
    if (h.stream.destroyed) throw new Error(h.stream.errored?.message || "the compressor failed")
    const left = h.state[0]!
    if (codec !== 2) h.handle.reset()
    // no room left: the output did not fit (or only just), so it saves too little
    if (left === 0) return input
    return direct ? out.subarray(0, room - left) : out.slice(0, room - left)
  }
}

/** The native handle under a zlib stream, as node's one-shot calls drive it. */
interface ZlibHandle {
  stream: zlib.BrotliCompress | zlib.BrotliDecompress | zlib.DeflateRaw | zlib.InflateRaw
  handle: {
    writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void
    reset(): void
    init?(params: Uint32Array, state: Uint32Array, callback: () => void): void
  }
  /** [output bytes left, input bytes left] after a write */
  state: Uint32Array
  flush: number
}

/**
 * The handle of a stream made by node's public factory, or null where node
 * lacks it (the private `_handle` and `_writeState` node's own one-shot
 * calls use: `writeSync(flush, in, inOff, inLen, out, outOff, outLen)`
 * leaves [outLeft, inLeft] in the write state). zlib reports an error
 * through the stream, which it then destroys; the stream's 'error' event is
 * handled here so that it never goes unhandled (callers check `destroyed`).
 */
export function zlibHandle(stream: ZlibHandle["stream"], flush: number): ZlibHandle | null {
  stream.on("error", () => {})
  const priv = stream as unknown as { _handle?: ZlibHandle["handle"]; _writeState?: unknown }
  const handle = priv._handle
  if (typeof handle?.writeSync !== "function" || typeof handle.reset !== "function" || !(priv._writeState instanceof Uint32Array)) return null
  return { stream, handle, state: priv._writeState, flush }
}

/** One handle per codec, made when first needed and made again after an error destroyed it; null: node has none (use the one-shot calls). */
export function zlibHandles(make: (codec: number) => ZlibHandle | null): (codec: number) => ZlibHandle | null {
  const made = new Map<number, ZlibHandle | null>()
  return (codec) => {
    let h = made.get(codec)
    if (h === undefined || (h !== null && h.stream.destroyed)) made.set(codec, (h = make(codec)))
    return h
  }
}

/**
 * zlib's options for decoding a blob of rawLength bytes with node's one-shot
 * calls (blobDecoder's fallback): the output buffer is made large enough for
 * all of it at once. With zlib's 16 KiB default a 64 KiB blob took four
 * output buffers, a fifth when the last one filled, and a sixth to
 * concatenate them. One byte more than rawLength, because an output buffer
 * that fills exactly makes zlib allocate another before it sees the end.
 * More than rawLength is an error (maxOutputLength), as before.
 */
export function decodeOptions(rawLength: number): { maxOutputLength: number; chunkSize: number } {
  return { maxOutputLength: Math.max(rawLength, 1), chunkSize: Math.max(rawLength + 1, 64) }
}

/** Decodes one stored blob to exactly rawLength bytes: into `into` (a view of it) when it is large enough, else into a new buffer. */
export type BlobDecode = (codec: number, input: Uint8Array, rawLength: number, into?: Uint8Array) => Uint8Array

/**
 * A blob decoder for one thread: one zlib handle per codec, reset between
 * blobs, writing straight into the caller's buffer.
 *
 * Why: node's one-shot calls (brotliDecompressSync, inflateRawSync) build a
 * stream object, a native handle and a decoder for every call: ~20 us and a
 * few KiB of garbage each, as much as decoding a small file itself; a
 * restore decodes one blob per small file, thousands of them. And they
 * always return new memory, where a restore's writer only needs a scratch
 * buffer until the bytes are written (new memory costs page faults, on this
 * project's VM its largest cost after the decoding). Node has no public call
 * that decodes into a given buffer, so this drives the handle under a stream
 * made by the public factory, as node's own one-shot calls do (zlibHandle).
 * Where node lacks it, it falls back to the one-shot calls.
 *
 * A blob must decode to exactly rawLength bytes: the output space is
 * rawLength, then one byte more is offered, which a longer stream fills; a
 * stream that ends short, is truncated or malformed throws (zlib reports
 * errors through the stream, which is then destroyed and replaced). Bytes
 * after the end of a stream are ignored, as the one-shot calls do. The
 * workers run this very function (its source is theirs); `z` is node:zlib.
 */
export function blobDecoder(z: typeof zlib): BlobDecode {
  const handleFor = zlibHandles((codec) => zlibHandle(codec === 2 ? z.createBrotliDecompress() : z.createInflateRaw(), codec === 2 ? z.constants.BROTLI_OPERATION_FINISH : z.constants.Z_FINISH))
  const oneMore = new Uint8Array(1)
  const failed = (h: ZlibHandle): Error => new Error(h.stream.errored?.message || "malformed compressed data")
  return (codec, input, rawLength, into) => {
    if (codec !== 1 && codec !== 2) throw new Error(`unknown codec ${codec}`)
    const h = handleFor(codec)
    if (h === null) {
      const opts = decodeOptions(rawLength)
      const out = codec === 2 ? z.brotliDecompressSync(input, opts) : z.inflateRawSync(input, opts)
      if (out.length !== rawLength) throw new Error(`decoded ${out.length} bytes, expected ${rawLength}`)
      return out
    }
    const out = into !== undefined && into.length >= rawLength ? into.subarray(0, rawLength) : Buffer.allocUnsafeSlow(rawLength)
    let used = 0
    if (rawLength > 0) {
      h.handle.writeSync(h.flush, input, 0, input.length, out, 0, rawLength)
      if (h.stream.destroyed) throw failed(h)
      const produced = rawLength - h.state[0]!
      if (produced !== rawLength) {
        h.handle.reset()
        throw new Error(`decoded ${produced} bytes, expected ${rawLength}`)
      }
      used = input.length - h.state[1]!
    }
    // all rawLength bytes are out; room for one more shows a longer stream (and lets deflate read its end code)
    h.handle.writeSync(h.flush, input, used, input.length - used, oneMore, 0, 1)
    if (h.stream.destroyed) throw failed(h)
    const longer = h.state[0] === 0
    h.handle.reset()
    if (longer) throw new Error(`decodes to more than the ${rawLength} bytes expected`)
    return out
  }
}

/** The source of blobEncoder and blobDecoder with what they call, for a worker's source (which has `require`). */
export const CODER_SOURCE = [`const COMPRESSED_AT_MOST = ${COMPRESSED_AT_MOST}`, ...[encodeRoom, decodeOptions, zlibHandle, zlibHandles, blobDecoder, blobEncoder].map(String)].join("\n")

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads")
const zlib = require("node:zlib")
${GARBAGE_SOURCE}
${CODER_SOURCE}
const decodeBlob = blobDecoder(zlib)
const compress = blobEncoder(zlib)
parentPort.on("message", (job) => {
  try {
    if (job.op === "encodeMany") {
      // a batch of small blobs: their outputs one after another in the buffer it brought for them (room
      // enough: an output is never longer than its input); both buffers go back, for later batches
      const input = new Uint8Array(job.buffer)
      const packed = new Uint8Array(job.out)
      const lengths = []
      let at = 0
      for (let i = 0; i < job.lengths.length; i++) {
        const o = compress(job.codec, input.subarray(job.offsets[i], job.offsets[i] + job.lengths[i]))
        packed.set(o, at)
        at += o.length
        lengths.push(o.length)
      }
      parentPort.postMessage({ id: job.id, lengths, input: job.buffer, out: job.out }, [job.buffer, job.out])
      return
    }
    if (job.op === "encode") {
      // the input leads its buffer; the output goes into the job's out buffer, which has room for any output
      // kept (or it is the input: not worth compressing, length -1); both buffers go back, for later blobs
      const input = new Uint8Array(job.buffer, 0, job.length)
      const out = compress(job.codec, input, new Uint8Array(job.out))
      if (out !== input && out.buffer !== job.out) throw new Error("the compressor's output missed its buffer")
      parentPort.postMessage({ id: job.id, length: out === input ? -1 : out.length, input: job.buffer, out: job.out }, [job.buffer, job.out])
      return
    }
    // a decode's input and output are garbage here once it is sent (an encode's buffers go back)
    handled(job.buffer.byteLength + job.rawLength)
    const input = new Uint8Array(job.buffer)
    const out = decodeBlob(job.codec, input, job.rawLength)
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)
    parentPort.postMessage({ id: job.id, buffer: copy }, [copy])
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) })
  }
})
`

/** A batch of small blobs is sent once it holds this many bytes, or at the end of the tick. */
const BATCH_BYTES = 256 * 1024
/** A batch's buffer: room for BATCH_BYTES and the blob that takes it past them (small blobs are at most 16 KiB, codec.ts's SMALL_BLOB); a larger batch gets its own. */
const BATCH_BUFFER = BATCH_BYTES + 64 * 1024

/**
 * A large blob's buffers (its input, then its output) are kept for reuse at
 * this size: the default largest chunk (store.ts's DEFAULT_CHUNKER). A
 * larger blob gets buffers of its own.
 */
const BLOB_BUFFER = 512 * 1024

/**
 * Bytes a worker wrote into a buffer of the pool's, lent to the caller:
 * `release` gives the buffer back for later blobs, once the caller has
 * copied the bytes (or no longer needs them). A caller that never calls it
 * leaves the buffer to the collector.
 */
export interface Lent {
  bytes: Uint8Array
  release(): void
}

interface Batch {
  parts: Uint8Array[]
  bytes: number
  waiters: Array<{ resolve: (out: Lent) => void; reject: (err: unknown) => void }>
}

export class CodecPool {
  private readonly pool: WorkerPool
  private readonly batches = new Map<number, Batch>()
  /**
   * Buffers the workers gave back, for inputs and outputs alike: batches' (a
   * new one each batch would be new memory for every 256 KiB of small blobs)
   * and large blobs' (store.ts encodes 8 at a time, each with two).
   *
   * Why keep them: an output a worker made anew arrived here as memory the
   * main thread's collector frees only in a full collection, which V8 runs
   * for such memory once ~64 MiB of it has piled up; a first snapshot of the
   * bench's workspace moved ~106 MB of outputs (2,500 messages), and peaked
   * with tens of MiB of them dead.
   */
  private readonly spareBatches = new SpareBuffers(8, (b) => b.byteLength === BATCH_BUFFER)
  private readonly spareBlobs = new SpareBuffers(20, (b) => b.byteLength === BLOB_BUFFER)
  /** batches of small blobs sent, and buffers made for encoding (every other one was given back) */
  readonly counts = { batches: 0, buffersMade: 0 }

  constructor(readonly size = Math.min(4, Math.max(1, os.availableParallelism() - 1))) {
    this.pool = new WorkerPool(WORKER_SOURCE, size, SMALL_HEAP)
  }

  /** Compresses a large blob in a worker; undefined when that would not save enough (COMPRESSED_AT_MOST). */
  async encode(codec: number, data: Uint8Array): Promise<Lent | undefined> {
    const input = this.blobBuffer(data.length)
    new Uint8Array(input, 0, data.length).set(data)
    const out = this.blobBuffer(encodeRoom(data.length))
    const reply = await this.pool.run<{ length: number; input: ArrayBuffer; out: ArrayBuffer }>({ op: "encode", codec, buffer: input, length: data.length, out }, [input, out])
    this.spareBlobs.give(reply.input)
    if (reply.length < 0) {
      this.spareBlobs.give(reply.out)
      return undefined
    }
    return lent(new Uint8Array(reply.out, 0, reply.length), () => this.spareBlobs.give(reply.out))
  }

  private blobBuffer(bytes: number): ArrayBuffer {
    return this.buffer(this.spareBlobs, BLOB_BUFFER, bytes)
  }

  /** A buffer for `bytes`: a spare one of the kept size when they fit it, else a new one (of that size at least, so that it can be kept). */
  private buffer(spares: SpareBuffers, kept: number, bytes: number): ArrayBuffer {
    const reused = bytes <= kept ? spares.take() : undefined
    if (reused) return reused
    this.counts.buffersMade++
    return new ArrayBuffer(Math.max(bytes, kept))
  }

  /**
   * Compresses a small blob in a worker, batched with the other small blobs
   * of this tick: one message carries them all, so the main thread spends a
   * few microseconds per blob instead of a round trip (or the compression
   * itself, which is what a small blob cost when it was compressed inline).
   */
  encodeSmall(codec: number, data: Uint8Array): Promise<Lent> {
    let batch = this.batches.get(codec)
    if (!batch) {
      batch = { parts: [], bytes: 0, waiters: [] }
      this.batches.set(codec, batch)
      setImmediate(() => this.sendBatch(codec))
    }
    batch.parts.push(data)
    batch.bytes += data.length
    const reply = new Promise<Lent>((resolve, reject) => batch!.waiters.push({ resolve, reject }))
    if (batch.bytes >= BATCH_BYTES) this.sendBatch(codec)
    return reply
  }

  private sendBatch(codec: number): void {
    const batch = this.batches.get(codec)
    if (!batch) return
    this.batches.delete(codec)
    this.counts.batches++
    const packed = new Uint8Array(this.batchBuffer(batch.bytes))
    const offsets: number[] = []
    const lengths: number[] = []
    let at = 0
    for (const part of batch.parts) {
      packed.set(part, at)
      offsets.push(at)
      lengths.push(part.length)
      at += part.length
    }
    // the outputs' buffer: as large as the inputs' (no output is longer than its input)
    const out = this.batchBuffer(batch.bytes)
    this.pool.run<{ lengths: number[]; input: ArrayBuffer; out: ArrayBuffer }>({ op: "encodeMany", codec, buffer: packed.buffer, offsets, lengths, out }, [packed.buffer, out]).then(
      (reply) => {
        this.spareBatches.give(reply.input)
        // the outputs' buffer goes back once every blob of the batch is released
        let unreleased = reply.lengths.length
        const releaseOne = () => {
          if (--unreleased === 0) this.spareBatches.give(reply.out)
        }
        let from = 0
        reply.lengths.forEach((len, i) => {
          batch.waiters[i]!.resolve(lent(new Uint8Array(reply.out, from, len), releaseOne))
          from += len
        })
      },
      (err: unknown) => {
        for (const w of batch.waiters) w.reject(err)
      },
    )
  }

  private batchBuffer(bytes: number): ArrayBuffer {
    return this.buffer(this.spareBatches, BATCH_BUFFER, bytes)
  }

  /** Starts every worker now rather than with the first jobs (see codec.ts, warmCompressor). */
  warm(): void {
    this.pool.warm()
  }

  /** Workers running (they start with the first job, or when warmed). */
  get started(): number {
    return this.pool.started
  }

  decode(codec: number, data: Uint8Array, rawLength: number): Promise<Uint8Array> {
    return this.run({ op: "decode", codec, rawLength }, data)
  }

  close(): Promise<void> {
    return this.pool.close()
  }

  private async run(job: { op: "decode"; codec: number; rawLength: number }, data: Uint8Array): Promise<Uint8Array> {
    // transfer a private copy: the caller's bytes may be a view into a larger buffer
    const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer
    const reply = await this.pool.run<{ buffer: ArrayBuffer }>({ ...job, buffer }, [buffer])
    return Buffer.from(reply.buffer)
  }
}

let shared: CodecPool | undefined

/** The process-wide pool. */
export function codecPool(): CodecPool {
  shared ??= new CodecPool()
  return shared
}

/** bytes lent with a release that gives them back once */
function lent(bytes: Uint8Array, giveBack: () => void): Lent {
  let released = false
  return {
    bytes,
    release: () => {
      if (released) return
      released = true
      giveBack()
    },
  }
}
