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
import { WorkerPool } from "./worker-pool.js"

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads")
const zlib = require("node:zlib")
const BROTLI = { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1, [zlib.constants.BROTLI_PARAM_LGWIN]: 18 } }
parentPort.on("message", (job) => {
  try {
    const input = new Uint8Array(job.buffer)
    let out
    if (job.op === "encode") {
      out = job.codec === 2
        ? zlib.brotliCompressSync(input, { params: { ...BROTLI.params, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: input.length } })
        : zlib.deflateRawSync(input, { level: 1 })
    } else {
      const opts = { maxOutputLength: Math.max(job.rawLength, 1) }
      out = job.codec === 2 ? zlib.brotliDecompressSync(input, opts) : zlib.inflateRawSync(input, opts)
    }
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)
    parentPort.postMessage({ id: job.id, buffer: copy }, [copy])
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String(err && err.message || err) })
  }
})
`

export class CodecPool {
  private readonly pool: WorkerPool

  constructor(readonly size = Math.min(4, Math.max(1, os.availableParallelism() - 1))) {
    this.pool = new WorkerPool(WORKER_SOURCE, size)
  }

  encode(codec: number, data: Uint8Array): Promise<Uint8Array> {
    return this.run({ op: "encode", codec }, data)
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
