// The worker pool under the codec pool and restore's writers: jobs, errors, spawning.
import { execFileSync } from "node:child_process"
import path from "node:path"
import vm from "node:vm"
import { threadId } from "node:worker_threads"
import { describe, expect, it } from "vitest"
import { GARBAGE_SOURCE, WorkerPool } from "../../store/worker-pool.js"

/** Replies with its thread id after `ms`; fails on request. */
const SOURCE = `
const { parentPort, threadId } = require("node:worker_threads")
parentPort.on("message", (job) => {
  setTimeout(() => {
    if (job.fail) parentPort.postMessage({ id: job.id, error: "asked to fail", code: "EFAIL" })
    else parentPort.postMessage({ id: job.id, thread: threadId })
  }, job.ms ?? 0)
})
`

describe("WorkerPool", () => {
  it("spawns a worker only while every existing one is busy, up to its size", async () => {
    const pool = new WorkerPool(SOURCE, 2)
    const one = await pool.run<{ thread: number }>({})
    expect(pool.started).toBe(1)
    const again = await pool.run<{ thread: number }>({})
    expect(again.thread).toBe(one.thread) // idle worker reused
    const both = await Promise.all([0, 1, 2, 3].map(() => pool.run<{ thread: number }>({ ms: 30 })))
    expect(new Set(both.map((r) => r.thread)).size).toBe(2)
    expect(both.every((r) => r.thread !== threadId)).toBe(true)
    await pool.close()
  })

  it("an idle pool, even one warmed and never used, does not keep its process alive", async () => {
    // a restore refused after warming its writers (a non-empty destination) printed its error and never exited
    const pool = path.resolve(import.meta.dirname, "../../dist/store/worker-pool.js")
    const child = `
      import { WorkerPool } from ${JSON.stringify(pool)}
      const warmed = new WorkerPool("require('node:worker_threads').parentPort.on('message', () => {})", 2)
      warmed.warm()
      const used = new WorkerPool(${JSON.stringify(SOURCE)}, 1)
      await used.run({})
      console.log("done")
    `
    const started = Date.now()
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", child], { encoding: "utf8", timeout: 20_000 })
    expect(out.trim()).toBe("done")
    expect(Date.now() - started).toBeLessThan(15_000)
  })

  it("warm() starts every worker at once, and no more", async () => {
    const pool = new WorkerPool(SOURCE, 3)
    expect(pool.started).toBe(0)
    pool.warm()
    pool.warm()
    expect(pool.started).toBe(3)
    // jobs land on the three started workers
    const replies = await Promise.all([0, 1, 2, 3, 4, 5].map(() => pool.run<{ thread: number }>({ ms: 20 })))
    expect(new Set(replies.map((r) => r.thread)).size).toBe(3)
    await pool.close()
  })

  it("rejects a failed job with the worker's message and code", async () => {
    const pool = new WorkerPool(SOURCE, 1)
    await expect(pool.run({ fail: true })).rejects.toMatchObject({ message: "asked to fail", code: "EFAIL" })
    expect((await pool.run<{ thread: number }>({})).thread).toBeGreaterThan(0)
    await pool.close()
  })
  it("a worker that counts what it handles collects its dead buffers as it goes; one that does not holds them", async () => {
    // V8 collects for outside-the-heap memory only after ~64 MiB of it: a worker of a few MiB of heap never got there sooner
    const source = (collect: boolean) => `
const { parentPort } = require("node:worker_threads")
${GARBAGE_SOURCE}
parentPort.on("message", (job) => {
  ${collect ? "handled(job.buffer.byteLength)" : ""}
  parentPort.postMessage({ id: job.id })
})
`
    // bytes sent from here are counted here until the worker's isolate frees them
    const held = async (collect: boolean) => {
      const pool = new WorkerPool(source(collect), 1, { maxYoungGenerationSizeMb: 4 })
      const before = process.memoryUsage().arrayBuffers
      for (let i = 0; i < 192; i++) {
        const buffer = new ArrayBuffer(256 * 1024)
        await pool.run({ buffer }, [buffer])
      }
      const after = process.memoryUsage().arrayBuffers
      await pool.close()
      return (after - before) / (1 << 20)
    }
    // 48 MiB went through each
    expect(await held(true)).toBeLessThan(20)
    expect(await held(false)).toBeGreaterThan(30)
    // the flag that gave the workers their gc is unset again: contexts made later have none
    expect(vm.runInNewContext("typeof gc")).toBe("undefined")
  })
})
