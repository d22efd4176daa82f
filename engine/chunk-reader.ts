// Chunk readers: worker threads that read a large file, cut it into FastCDC
// chunks and hash them, so that the main thread only deduplicates and packs.
//
// Why: for a large file the main thread spent ~4 ms per MiB chunking (the
// gear loop in JavaScript) and hashing, while the compression worker waited:
// a first snapshot of a workspace with a few hundred MiB of binaries was
// bound by one core. A reader does that work on another thread and hands
// back the bytes (transferred, not copied) with the chunks' lengths and ids.
//
// Requests are stateless, so any worker of the pool can serve one: FastCDC's
// hash restarts at every chunk start, so cutting from a known boundary gives
// the boundaries a whole-file pass gives. A request reads SPAN bytes from a
// boundary plus up to maxSize of lookahead, cuts chunks while a full maxSize
// window (or the end of the file) is in the buffer, and returns where it
// stopped: the next request starts there. Each reply carries the file's
// fstat, so the caller notices a file replaced or rewritten between requests.

import os from "node:os"
import { WorkerPool } from "../store/worker-pool.js"
import type { BlobId } from "../store/ids.js"
import { CUT_SOURCE, resolve, type ChunkerParams } from "./fastcdc.js"

/** Bytes of chunk starts per request: a few dozen chunks per message. */
const SPAN = 4 << 20

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads")
const fs = require("node:fs")
const { createHash } = require("node:crypto")
const cut = ${CUT_SOURCE}
parentPort.on("message", (job) => {
  let fd
  try {
    fd = fs.openSync(job.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
    const r = job.r
    const want = job.span + r.max
    const buf = new Uint8Array(want)
    let n = 0
    for (;;) {
      const k = fs.readSync(fd, buf, n, want - n, job.from + n)
      if (k === 0) break
      n += k
      if (n === want) break
    }
    const st = fs.fstatSync(fd, { bigint: true })
    const end = n < want
    const lengths = []
    const ids = []
    let pos = 0
    while (pos < n && pos < job.span && (end || n - pos >= r.max)) {
      const len = cut(buf, pos, n, r)
      ids.push(createHash("sha256").update(buf.subarray(pos, pos + len)).digest("hex"))
      lengths.push(len)
      pos += len
    }
    const stat = { size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), ino: String(st.ino), mode: Number(st.mode), isFile: st.isFile() }
    parentPort.postMessage({ id: job.id, buffer: buf.buffer, lengths, ids, used: pos, done: end && pos >= n, stat }, [buf.buffer])
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

export interface ChunkBatch {
  /** the bytes read; chunk k is data[sum of lengths before k .. + lengths[k]) */
  data: Uint8Array
  lengths: number[]
  ids: BlobId[]
  /** the file's fstat when this batch was read */
  stat: FileStat
}

interface Reply {
  buffer: ArrayBuffer
  lengths: number[]
  ids: BlobId[]
  used: number
  done: boolean
  stat: { size: string; mtimeNs: string; ctimeNs: string; ino: string; mode: number; isFile: boolean }
}

let shared: WorkerPool | undefined

function pool(): WorkerPool {
  shared ??= new WorkerPool(WORKER_SOURCE, Math.min(2, Math.max(1, os.availableParallelism() - 1)), { maxYoungGenerationSizeMb: 4 })
  return shared
}

/**
 * Reads a file as batches of chunks, in order; each batch's request is sent
 * as soon as the previous one is back, so the reader works while the caller
 * stores the previous batch. Errors (ENOENT, ELOOP: the path became a
 * symlink) keep their code.
 */
export async function* chunkFile(path: string, params: ChunkerParams, gear: Uint32Array): AsyncGenerator<ChunkBatch> {
  const r = resolve(params, gear)
  const request = (from: number) => {
    const reply = pool().run<Reply & Record<string, unknown>>({ path, from, span: SPAN, r })
    reply.catch(() => {}) // awaited below; a consumer that stops early must not leave it unhandled
    return reply
  }
  let from = 0
  let next = request(from)
  for (;;) {
    const reply = await next
    from += reply.used
    if (!reply.done) next = request(from)
    const s = reply.stat
    yield {
      data: new Uint8Array(reply.buffer),
      lengths: reply.lengths,
      ids: reply.ids,
      stat: { size: BigInt(s.size), mtimeNs: BigInt(s.mtimeNs), ctimeNs: BigInt(s.ctimeNs), ino: BigInt(s.ino), mode: s.mode, isFile: s.isFile },
    }
    if (reply.done) return
  }
}
