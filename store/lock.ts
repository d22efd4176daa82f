// Repository locks, kept as objects under "locks/" so they work on every
// backend (a directory, a bucket shared by many hosts).
//
// Every operation that reads or writes blobs holds a shared lock; gc holds an
// exclusive one. A lock is "locks/<random>" holding JSON {exclusive, host,
// pid, what, time, refreshed}. To acquire: list the locks, drop stale ones,
// and if none conflicts write ours, then list again; if a conflicting lock
// appeared meanwhile (two racers), remove ours, back off randomly and retry.
// A holder refreshes its lock every REFRESH_MS. A lock is stale when its host
// is this host and its pid is dead, or when it was not refreshed for STALE_MS
// (a crashed process on another host). Waiting is bounded: after waitMs the
// acquirer fails with LockedError naming the holder.
//
// "This host" is decided by the pid space, not the host name: containers and
// cloned VMs often share a name, and judging another machine's lock by a
// local pid would break a live lock. On Linux a lock records its pid space
// (the kernel boot id and the pid namespace); only a lock from the same pid
// space is judged by its pid. Elsewhere the host name stands in.

import fs from "node:fs"
import os from "node:os"
import type { ObjectStore } from "./backend.js"
import { LockedError, NotFoundError } from "./errors.js"
import { randomId } from "./ids.js"

const REFRESH_MS = 60_000
/** A lock need not outlive a crash of its host: its holder is gone then too, and an unreadable lock is skipped (and removed once old). */
const VOLATILE = { volatile: true } as const
const STALE_MS = 5 * 60_000

/** A process as a lock (or a box name's claim) records its holder, so that another can tell whether it still runs. */
export interface ProcessRef {
  host: string
  pid: number
  /** boot id + pid namespace of the process (Linux); absent elsewhere and in older records */
  pidSpace?: string
}

export interface LockInfo extends ProcessRef {
  exclusive: boolean
  what: string
  time: string
  refreshed: string
}

export interface Lock {
  readonly key: string
  release(): Promise<void>
}

export interface LockOptions {
  exclusive: boolean
  what: string
  /** How long to wait for a conflicting lock to go away; default 60 s. */
  waitMs?: number
  /** Called once, with the holder, when the lock is not free and waiting begins. */
  onWait?: (holder: LockInfo) => void
}

export async function acquireLock(backend: ObjectStore, opts: LockOptions): Promise<Lock> {
  const waitMs = opts.waitMs ?? 60_000
  const deadline = Date.now() + waitMs
  const key = `locks/${randomId("lock")}`
  let pause = 20
  let waiting = false
  for (;;) {
    let holder = await findConflict(backend, opts.exclusive, key)
    if (!holder) {
      const now = new Date().toISOString()
      const info: LockInfo = { exclusive: opts.exclusive, ...thisProcess(), what: opts.what, time: now, refreshed: now }
      await backend.put(key, Buffer.from(JSON.stringify(info)), VOLATILE)
      holder = await findConflict(backend, opts.exclusive, key)
      if (!holder) return startRefresh(backend, key, info)
      await backend.delete(key)
    }
    if (Date.now() >= deadline) {
      throw new LockedError(
        `the repository at ${backend.location} is locked by process ${holder.pid} on ${holder.host} (${holder.what}, since ${holder.time}); wait for it to finish, or remove the stale lock if that process is gone`,
        { holder },
      )
    }
    if (!waiting) {
      waiting = true
      opts.onWait?.(holder)
    }
    await sleep(Math.min(pause + Math.random() * pause, Math.max(1, deadline - Date.now())))
    pause = Math.min(pause * 2, 500)
  }
}

async function findConflict(backend: ObjectStore, exclusive: boolean, ownKey: string): Promise<LockInfo | undefined> {
  const objects = await backend.list("locks/")
  for (const obj of objects) {
    if (obj.key === ownKey) continue
    let info: LockInfo
    try {
      info = JSON.parse(Buffer.from(await backend.get(obj.key)).toString("utf8")) as LockInfo
    } catch (err) {
      if (err instanceof NotFoundError) continue // released meanwhile
      if (err instanceof SyntaxError && Date.now() - obj.mtimeMs > STALE_MS) {
        await backend.delete(obj.key)
        continue
      }
      if (err instanceof SyntaxError) continue
      throw err
    }
    if (isStale(info)) {
      await backend.delete(obj.key)
      continue
    }
    if (exclusive || info.exclusive) return info
  }
  return undefined
}

function isStale(info: LockInfo): boolean {
  return processGone(info) || Date.now() - Date.parse(info.refreshed) > STALE_MS
}

/** This process, as a lock or a claim records it. */
export function thisProcess(): ProcessRef {
  const space = pidSpace()
  return { host: os.hostname(), pid: process.pid, ...(space ? { pidSpace: space } : {}) }
}

/** Whether the process p names can be checked from here (same pid space) and has exited. */
export function processGone(p: ProcessRef): boolean {
  return samePidSpace(p) && !pidAlive(p.pid)
}

/** Whether the lock's pid can be checked here: same boot and pid namespace (or, without those, same host name). */
export function samePidSpace(info: Pick<LockInfo, "host" | "pidSpace">): boolean {
  const mine = pidSpace()
  if (mine !== undefined && info.pidSpace !== undefined) return info.pidSpace === mine
  return mine === undefined && info.pidSpace === undefined && info.host === os.hostname()
}

let cachedSpace: string | undefined | null = null

/** "<boot id>/<pid namespace>" on Linux, else undefined. */
export function pidSpace(): string | undefined {
  if (cachedSpace !== null) return cachedSpace
  try {
    const boot = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    const ns = fs.readlinkSync("/proc/self/ns/pid")
    cachedSpace = `${boot}/${ns}`
  } catch {
    cachedSpace = undefined
  }
  return cachedSpace
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"
  }
}

function startRefresh(backend: ObjectStore, key: string, info: LockInfo): Lock {
  const timer = setInterval(() => {
    info.refreshed = new Date().toISOString()
    backend.put(key, Buffer.from(JSON.stringify(info)), VOLATILE).catch(() => {})
  }, REFRESH_MS)
  timer.unref()
  let released = false
  return {
    key,
    async release() {
      if (released) return
      released = true
      clearInterval(timer)
      await backend.delete(key)
    },
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
