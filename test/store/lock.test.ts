import { spawnSync } from "node:child_process"
import os from "node:os"
import { describe, expect, it } from "vitest"
import type { PutOptions } from "../../store/backend.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { LockedError } from "../../store/errors.js"
import { acquireLock, pidSpace, type LockInfo } from "../../store/lock.js"

/** A pid that belonged to a process which has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" })
  return Number(r.stdout)
}

function lockInfo(over: Partial<LockInfo>): LockInfo {
  const now = new Date().toISOString()
  return { exclusive: true, host: os.hostname(), pid: process.pid, what: "test", time: now, refreshed: now, ...over }
}

async function plant(backend: MemoryObjectStore, name: string, info: LockInfo): Promise<void> {
  await backend.put(`locks/${name}`, Buffer.from(JSON.stringify(info)))
}

describe("repository locks", () => {
  it("shared locks coexist; an exclusive one waits for them and fails naming the holder", async () => {
    const backend = new MemoryObjectStore()
    const a = await acquireLock(backend, { exclusive: false, what: "snapshot" })
    const b = await acquireLock(backend, { exclusive: false, what: "restore" })
    const err = await acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 }).catch((e) => e)
    expect(err).toBeInstanceOf(LockedError)
    expect(err.message).toMatch(/locked by process \d+ on .* \((snapshot|restore)/)
    await a.release()
    await b.release()
    await a.release() // idempotent
    const gc = await acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 })
    await expect(acquireLock(backend, { exclusive: false, what: "snapshot", waitMs: 50 })).rejects.toBeInstanceOf(LockedError)
    await gc.release()
    expect(await backend.list("locks/")).toEqual([])
  })

  it("a waiting acquirer gets the lock once the holder releases it, and is told once that it waits, by whom", async () => {
    const backend = new MemoryObjectStore()
    const free: LockInfo[] = []
    const first = await acquireLock(backend, { exclusive: true, what: "gc", onWait: (h) => free.push(h) })
    expect(free).toEqual([]) // a free lock is taken without waiting
    setTimeout(() => void first.release(), 100)
    const told: LockInfo[] = []
    const next = await acquireLock(backend, { exclusive: false, what: "snapshot", waitMs: 5_000, onWait: (h) => told.push(h) })
    expect(told).toEqual([expect.objectContaining({ what: "gc", exclusive: true, pid: process.pid })])
    await next.release()
  })

  it("a lock of a dead process in this pid space is stale and removed", async () => {
    const backend = new MemoryObjectStore()
    await plant(backend, "lock_dead", lockInfo({ pid: deadPid(), pidSpace: pidSpace() }))
    const lock = await acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 })
    expect((await backend.list("locks/")).map((o) => o.key)).toEqual([lock.key])
    await lock.release()
  })

  it.runIf(pidSpace() !== undefined)("a lock from another pid space with the same host name is not judged by its pid", async () => {
    // containers and cloned machines share host names: a dead pid here says nothing about the holder there
    const backend = new MemoryObjectStore()
    await plant(backend, "lock_other", lockInfo({ pid: deadPid(), pidSpace: "another-boot/pid:[1]" }))
    await expect(acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 })).rejects.toBeInstanceOf(LockedError)
    expect((await backend.list("locks/")).map((o) => o.key)).toEqual(["locks/lock_other"])
  })

  it("a lock is written volatile (it need not outlive a crash of its host); one a crash left empty is no obstacle", async () => {
    const puts: Array<[string, PutOptions | undefined]> = []
    const backend = new (class extends MemoryObjectStore {
      override put(key: string, data: Uint8Array, opts?: PutOptions) {
        puts.push([key, opts])
        return super.put(key, data, opts)
      }
    })()
    await backend.put("locks/lock_torn", new Uint8Array(0))
    puts.length = 0
    const lock = await acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 })
    expect(puts).toEqual([[lock.key, { volatile: true }]])
    await lock.release()
    expect((await backend.list("locks/")).map((o) => o.key)).toEqual(["locks/lock_torn"])
  })

  it("a lock not refreshed for five minutes is stale wherever it came from", async () => {
    const backend = new MemoryObjectStore()
    const old = new Date(Date.now() - 6 * 60_000).toISOString()
    await plant(backend, "lock_old", lockInfo({ host: "elsewhere", pidSpace: "x/y", time: old, refreshed: old }))
    const lock = await acquireLock(backend, { exclusive: true, what: "gc", waitMs: 50 })
    await lock.release()
    expect(await backend.list("locks/")).toEqual([])
  })
})
