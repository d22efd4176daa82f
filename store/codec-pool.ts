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
// Workers are ref'd only while jobs are in flight, so an idle pool never keeps
// a process alive. The worker source is inline (eval) so that it runs the
// same from compiled dist/ and from TypeScript under a test runner.

import os from "node:os"
import { Worker } from "node:worker_threads"

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

interface Job {
  slot: Slot
  resolve: (b: Uint8Array) => void
  reject: (e: Error) => void
}

interface Slot {
  worker: Worker
  inflight: number
}

export class CodecPool {
  private readonly slots: Slot[] = []
  private readonly jobs = new Map<number, Job>()
  private nextId = 0

  constructor(readonly size = Math.min(4, Math.max(1, os.availableParallelism() - 1))) {}

  encode(codec: number, data: Uint8Array): Promise<Uint8Array> {
    return this.run({ op: "encode", codec }, data)
  }

  decode(codec: number, data: Uint8Array, rawLength: number): Promise<Uint8Array> {
    return this.run({ op: "decode", codec, rawLength }, data)
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate()))
  }

  private run(job: Record<string, unknown>, data: Uint8Array): Promise<Uint8Array> {
    const slot = this.pick()
    const id = this.nextId++
    // transfer a private copy: the caller's bytes may be a view into a larger buffer
    const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
    return new Promise<Uint8Array>((resolve, reject) => {
      this.jobs.set(id, { slot, resolve, reject })
      if (slot.inflight++ === 0) slot.worker.ref()
      slot.worker.postMessage({ ...job, id, buffer }, [buffer as ArrayBuffer])
    })
  }

  private pick(): Slot {
    if (this.slots.length < this.size && this.slots.every((s) => s.inflight > 0)) this.slots.push(this.spawn())
    return this.slots.reduce((a, b) => (b.inflight < a.inflight ? b : a))
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true })
    const slot: Slot = { worker, inflight: 0 }
    worker.unref()
    worker.on("message", (msg: { id: number; buffer?: ArrayBuffer; error?: string }) => {
      const job = this.jobs.get(msg.id)
      if (!job) return
      this.jobs.delete(msg.id)
      if (--slot.inflight === 0) worker.unref()
      if (msg.error !== undefined) job.reject(new Error(msg.error))
      else job.resolve(Buffer.from(msg.buffer!))
    })
    worker.on("error", (err) => {
      // a crashed worker fails its jobs; the pool replaces it on next use
      const i = this.slots.indexOf(slot)
      if (i >= 0) this.slots.splice(i, 1)
      for (const [id, job] of this.jobs) {
        if (job.slot !== slot) continue
        this.jobs.delete(id)
        job.reject(err)
      }
    })
    return slot
  }
}

let shared: CodecPool | undefined

/** The process-wide pool. */
export function codecPool(): CodecPool {
  shared ??= new CodecPool()
  return shared
}
