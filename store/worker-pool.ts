// A small pool of worker threads running one inline (eval'd) script: the
// machinery under the codec pool and restore's file writers.
//
// A job is a message with an id; the worker answers { id, ...result } or
// { id, error, code? } (code: a Node error code such as ENOENT, kept on the
// Error). Jobs go to the least busy worker; a new worker is spawned only
// while every existing one is busy and the pool is below its size (or all
// at once, with warm()).
// Workers are ref'd only while they have jobs in flight, so an idle pool
// never keeps a process alive. A worker that crashes fails its jobs and is
// replaced on next use. The source is inline so that it runs the same from
// compiled dist/ and from TypeScript under a test runner.

import { createRequire } from "node:module"
import type { ResourceLimits, Worker } from "node:worker_threads"

/** node:worker_threads, loaded when the first worker starts (a command that starts none does not pay for it). */
const workerThreads = (): typeof import("node:worker_threads") => createRequire(import.meta.url)("node:worker_threads")

/**
 * A worker inherits the process's flags, and under `node --input-type=module
 * -e ...` its source would be read as a module, without require: then it
 * gets none (the sources use only Node's built-in modules, and V8's flags,
 * such as --jitless, hold for the whole process anyway). Otherwise it keeps
 * them (--cpu-prof profiles the workers too); a list given here would be
 * checked, and refused if it held a process-wide flag.
 */
const WORKER_EXEC_ARGV = process.execArgv.some((a) => a.startsWith("--input-type")) ? [] : undefined

/**
 * The resource limits of a worker whose data are ArrayBuffers (the chunk
 * readers, the codec pool, the scan helper): what it allocates on its own
 * heap is a few small objects per message, so a young generation of 1 MiB
 * (V8's default on a large machine is 16 per semi-space) serves it as well
 * and holds ~3 MiB less of each worker's memory (a first snapshot of the
 * bench's workspace, with three such workers, peaked ~9 MiB lower in the
 * same time).
 */
export const SMALL_HEAP: ResourceLimits = { maxYoungGenerationSizeMb: 1 }

/** Bytes a worker handles between the collections it runs itself (GARBAGE_SOURCE). */
const COLLECT_BYTES = 8 << 20

/**
 * For a worker's source: `handled(bytes)` counts the bytes a job brought or
 * made, and after every COLLECT_BYTES of them runs a young-generation
 * collection.
 *
 * Why: a worker's garbage is almost all ArrayBuffers (the bytes it was sent,
 * zlib's outputs), whose memory lives outside V8's heap, and V8 collects for
 * such memory only once ~64 MiB of it has piled up since the last
 * collection; a worker allocates too little on its own heap to collect
 * sooner. Each worker thus held tens of MiB of dead buffers. They live for
 * one job, so they are still young when they die, and a scavenge frees them:
 * full collections did too, but cost the compressor ~250 ms of a first
 * snapshot of the bench's workspace (~50 of them, ~5 ms each), scavenges a
 * fraction of that (the snapshot: ~0.3 s less CPU in all).
 * `gc` is taken from a fresh context made while --expose-gc is set (a flag
 * that only changes contexts made later; it is unset again at once).
 */
export const GARBAGE_SOURCE = `
const collectGarbage = (() => {
  const v8 = require("node:v8")
  try {
    v8.setFlagsFromString("--expose-gc")
    return require("node:vm").runInNewContext("gc")
  } catch {
    return undefined
  } finally {
    // contexts made later (a library user's vm contexts) get no gc global
    v8.setFlagsFromString("--no-expose-gc")
  }
})()
let garbageBytes = 0
function handled(bytes) {
  garbageBytes += bytes
  if (garbageBytes < ${COLLECT_BYTES} || !collectGarbage) return
  garbageBytes = 0
  collectGarbage({ type: "minor" })
}
`

interface Slot {
  worker: Worker
  inflight: number
}

interface Pending {
  slot: Slot
  resolve: (reply: Record<string, unknown>) => void
  reject: (err: Error) => void
}

export class WorkerPool {
  private readonly slots: Slot[] = []
  private readonly pending = new Map<number, Pending>()
  private nextId = 0

  constructor(
    private readonly source: string,
    readonly size: number,
    private readonly limits?: ResourceLimits,
  ) {}

  /** Posts a job (transferring `transfer`); resolves with the worker's reply, rejects with its error. */
  run<R extends Record<string, unknown>>(job: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<R> {
    const slot = this.pick()
    const id = this.nextId++
    return new Promise<R>((resolve, reject) => {
      this.pending.set(id, { slot, resolve: resolve as (r: Record<string, unknown>) => void, reject })
      if (slot.inflight++ === 0) slot.worker.ref()
      slot.worker.postMessage({ ...job, id }, transfer)
    })
  }

  /** Workers started (and not crashed). */
  get started(): number {
    return this.slots.length
  }

  /** Starts every worker now (they stay unref'd until given a job), so that their start-up overlaps with the caller's work. */
  warm(): void {
    while (this.slots.length < this.size) this.slots.push(this.spawn())
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate()))
  }

  private pick(): Slot {
    if (this.slots.length < this.size && this.slots.every((s) => s.inflight > 0)) this.slots.push(this.spawn())
    return this.slots.reduce((a, b) => (b.inflight < a.inflight ? b : a))
  }

  private spawn(): Slot {
    const worker = new (workerThreads().Worker)(this.source, { eval: true, ...(WORKER_EXEC_ARGV ? { execArgv: WORKER_EXEC_ARGV } : {}), ...(this.limits ? { resourceLimits: this.limits } : {}) })
    const slot: Slot = { worker, inflight: 0 }
    worker.on("message", (msg: { id: number; error?: string } & Record<string, unknown>) => {
      const p = this.pending.get(msg.id)
      if (!p) return
      this.pending.delete(msg.id)
      if (--slot.inflight === 0) worker.unref()
      if (msg.error !== undefined) p.reject(Object.assign(new Error(msg.error), typeof msg.code === "string" ? { code: msg.code } : {}))
      else p.resolve(msg)
    })
    worker.on("error", (err) => {
      const i = this.slots.indexOf(slot)
      if (i >= 0) this.slots.splice(i, 1)
      for (const [id, p] of this.pending) {
        if (p.slot !== slot) continue
        this.pending.delete(id)
        p.reject(err)
      }
    })
    // after the listeners: adding a "message" listener refs the worker's port again
    worker.unref()
    return slot
  }
}
