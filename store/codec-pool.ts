// A small pool of worker threads that compress and decompress blobs.
//
// Why workers and not node:zlib's async calls: an async zlib call costs the
// main thread ~400 us of JavaScript (a stream object, its buffers, several
// callbacks) for a 64 KiB blob, more than the compression itself, so a
// snapshot was bound by the main thread while the thread pool idled. A worker
// runs the synchronous zlib call (~5 us of overhead) and the main thread only
// posts the bytes (transferred, not copied) and receives the result. The main
// thread keeps the work that must be ordered: chunking, hashing, dedup, packs.
//
// The pool machinery (spawning, ref'ing, crash handling) is worker-pool.ts.

import os from "node:os"
import type zlib from "node:zlib"
import { GARBAGE_SOURCE, WorkerPool } from "./worker-pool.js"

/**
 * Compresses one blob: brotli (codec 2) at quality 1 with a window (log2
 * bytes) as large as most chunks (a longer one finds no more matches in a
 * chunk-sized input), else raw deflate at level 1. The workers run this very
 * function (its source is theirs); `z` is node:zlib.
 */
export function compressBlob(z: typeof zlib, codec: number, input: Uint8Array): Buffer {
  if (codec !== 2) return z.deflateRawSync(input, { level: 1 })
  const c = z.constants
  return z.brotliCompressSync(input, { params: { [c.BROTLI_PARAM_QUALITY]: 1, [c.BROTLI_PARAM_LGWIN]: 18, [c.BROTLI_PARAM_SIZE_HINT]: input.length } })
}

/**
 * zlib's options for decoding a blob of rawLength bytes: the output buffer
 * is made large enough for all of it at once. With zlib's 16 KiB default a
 * 64 KiB blob took four output buffers, a fifth when the last one filled,
 * and a sixth to concatenate them: ~150 KiB allocated (and, where new
 * memory is slow, its pages faulted in) and 64 KiB copied, for one 64 KiB
 * result. One byte more than rawLength, because an output buffer that fills
 * exactly makes zlib allocate another before it sees the end. More than
 * rawLength is an error (maxOutputLength), as before.
 */
export function decodeOptions(rawLength: number): { maxOutputLength: number; chunkSize: number } {
  return { maxOutputLength: Math.max(rawLength, 1), chunkSize: Math.max(rawLength + 1, 64) }
}

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads")
const zlib = require("node:zlib")
${GARBAGE_SOURCE}
${decodeOptions.toString()}
${compressBlob.toString()}
const compress = (codec, input) => compressBlob(zlib, codec, input)
parentPort.on("message", (job) => {
  handled(job.buffer.byteLength)
  try {
    if (job.op === "encodeMany") {
      // one reply for a batch of small blobs, packed into one buffer: [len u32, bytes]...
      const input = new Uint8Array(job.buffer)
      const outs = job.lengths.map((len, i) => compress(job.codec, input.subarray(job.offsets[i], job.offsets[i] + len)))
      const total = outs.reduce((n, o) => n + o.length, 0)
      const packed = new Uint8Array(total)
      const lengths = []
      let at = 0
      for (const o of outs) {
        packed.set(o, at)
        at += o.length
        lengths.push(o.length)
      }
      parentPort.postMessage({ id: job.id, buffer: packed.buffer, lengths }, [packed.buffer])
      return
    }
    const input = new Uint8Array(job.buffer)
    let out
    if (job.op === "encode") {
      out = compress(job.codec, input)
    } else {
      const opts = decodeOptions(job.rawLength)
      out = job.codec === 2 ? zlib.brotliDecompressSync(input, opts) : zlib.inflateRawSync(input, opts)
    }
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)
    parentPort.postMessage({ id: job.id, buffer: copy }, [copy])
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) })
  }
})
`

/** A batch of small blobs is sent once it holds this many bytes, or at the end of the tick. */
const BATCH_BYTES = 256 * 1024

interface Batch {
  parts: Uint8Array[]
  bytes: number
  waiters: Array<{ resolve: (out: Uint8Array) => void; reject: (err: unknown) => void }>
}

export class CodecPool {
  private readonly pool: WorkerPool
  private readonly batches = new Map<number, Batch>()

  constructor(readonly size = Math.min(4, Math.max(1, os.availableParallelism() - 1))) {
    // a small young generation: the workers allocate little besides the buffers they hand back
    this.pool = new WorkerPool(WORKER_SOURCE, size, { maxYoungGenerationSizeMb: 4 })
  }

  encode(codec: number, data: Uint8Array): Promise<Uint8Array> {
    return this.run({ op: "encode", codec }, data)
  }

  /**
   * Compresses a small blob in a worker, batched with the other small blobs
   * of this tick: one message carries them all, so the main thread spends a
   * few microseconds per blob instead of a round trip (or the compression
   * itself, which is what a small blob cost when it was compressed inline).
   */
  encodeSmall(codec: number, data: Uint8Array): Promise<Uint8Array> {
    let batch = this.batches.get(codec)
    if (!batch) {
      batch = { parts: [], bytes: 0, waiters: [] }
      this.batches.set(codec, batch)
      setImmediate(() => this.sendBatch(codec))
    }
    batch.parts.push(data)
    batch.bytes += data.length
    const reply = new Promise<Uint8Array>((resolve, reject) => batch!.waiters.push({ resolve, reject }))
    if (batch.bytes >= BATCH_BYTES) this.sendBatch(codec)
    return reply
  }

  private sendBatch(codec: number): void {
    const batch = this.batches.get(codec)
    if (!batch) return
    this.batches.delete(codec)
    const packed = new Uint8Array(batch.bytes)
    const offsets: number[] = []
    const lengths: number[] = []
    let at = 0
    for (const part of batch.parts) {
      packed.set(part, at)
      offsets.push(at)
      lengths.push(part.length)
      at += part.length
    }
    this.pool.run<{ buffer: ArrayBuffer; lengths: number[] }>({ op: "encodeMany", codec, buffer: packed.buffer, offsets, lengths }, [packed.buffer]).then(
      (reply) => {
        const all = Buffer.from(reply.buffer)
        let from = 0
        reply.lengths.forEach((len, i) => {
          batch.waiters[i]!.resolve(all.subarray(from, from + len))
          from += len
        })
      },
      (err: unknown) => {
        for (const w of batch.waiters) w.reject(err)
      },
    )
  }

  /** Workers running (they start with the first job). */
  get started(): number {
    return this.pool.started
  }

  decode(codec: number, data: Uint8Array, rawLength: number): Promise<Uint8Array> {
    return this.run({ op: "decode", codec, rawLength }, data)
  }

  close(): Promise<void> {
    return this.pool.close()
  }

  private async run(job: Record<string, unknown>, data: Uint8Array): Promise<Uint8Array> {
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
