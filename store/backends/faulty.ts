// Fault-injecting wrapper around another ObjectStore, for tests (as kopia's
// blobtesting/faulty.go). Deterministic: a seeded PRNG decides, call by call,
// whether an operation fails and how, so a failing seed reproduces as long as
// the calls arrive in the same order.
//
// Faults only ever produce outcomes a real backend can: the wrapped store
// keeps its invariants (atomic put, atomic create-only putIfAbsent), so
// - "eio", "enospc", "503" throw before the operation reaches the store;
// - "torn" on a write is a crash mid-operation: it throws either before the
//   write (old state) or after it completed (new state), never leaving a
//   truncated object; on a read it throws (a short read is detected, not
//   returned);
// - "reset" is a lost connection: the request may or may not have been
//   carried out before the error, for reads and writes alike;
// - "delay" waits a little and then carries the operation out normally.
// Every injected failure is an IoError with errno-like data; `faults` counts
// them by kind.

import type { ByteRange, ObjectInfo, ObjectStore, PutOptions } from "../backend.js"
import { IoError } from "../errors.js"

export type FaultKind = "eio" | "enospc" | "torn" | "delay" | "reset" | "503"

export const FAULT_KINDS: readonly FaultKind[] = ["eio", "enospc", "torn", "delay", "reset", "503"]

type Op = keyof ObjectStore

export interface FaultyOptions {
  seed: number
  /** Probability (0..1) that an eligible call gets a fault. */
  failRate: number
  /** Which faults to choose from; all of them by default. */
  kinds?: FaultKind[]
  /** Which operations may fail; all of them by default. */
  ops?: Op[]
  /** Upper bound of a "delay" fault, ms (default 20). */
  maxDelayMs?: number
}

const WRITES = new Set<Op>(["put", "putIfAbsent", "delete"])

/** mulberry32: a tiny 32-bit PRNG, plenty for choosing faults. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class FaultyObjectStore implements ObjectStore {
  /** Injected faults so far, by kind. */
  readonly faults: Record<string, number> = {}
  private readonly random: () => number
  private readonly kinds: FaultKind[]
  private readonly ops: Set<Op> | undefined
  private readonly maxDelayMs: number

  constructor(
    readonly inner: ObjectStore,
    private readonly options: FaultyOptions,
  ) {
    if (!(options.failRate >= 0 && options.failRate <= 1)) throw new RangeError("failRate must be in 0..1")
    this.random = prng(options.seed)
    this.kinds = options.kinds && options.kinds.length > 0 ? [...options.kinds] : [...FAULT_KINDS]
    this.ops = options.ops && new Set(options.ops)
    this.maxDelayMs = options.maxDelayMs ?? 20
  }

  get location(): string {
    return this.inner.location
  }

  /** Total injected faults of every kind. */
  get totalFaults(): number {
    return Object.values(this.faults).reduce((a, b) => a + b, 0)
  }

  put(key: string, data: Uint8Array, opts?: PutOptions): Promise<void> {
    return this.run("put", key, () => this.inner.put(key, data, opts))
  }

  putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    return this.run("putIfAbsent", key, () => this.inner.putIfAbsent(key, data))
  }

  get(key: string, range?: ByteRange): Promise<Uint8Array> {
    return this.run("get", key, () => this.inner.get(key, range))
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.run("stat", key, () => this.inner.stat(key))
  }

  list(prefix: string): Promise<ObjectInfo[]> {
    return this.run("list", prefix, () => this.inner.list(prefix))
  }

  delete(key: string): Promise<void> {
    return this.run("delete", key, () => this.inner.delete(key))
  }

  close(): Promise<void> {
    return this.run("close", "", () => this.inner.close())
  }

  private choose(op: Op): FaultKind | undefined {
    if (this.ops && !this.ops.has(op)) return undefined
    if (this.options.failRate === 0 || this.random() >= this.options.failRate) return undefined
    return this.kinds[Math.floor(this.random() * this.kinds.length)]
  }

  private async run<T>(op: Op, key: string, call: () => Promise<T>): Promise<T> {
    const kind = this.choose(op)
    if (kind === undefined) return call()
    this.faults[kind] = (this.faults[kind] ?? 0) + 1
    switch (kind) {
      case "delay":
        await sleep(Math.floor(this.random() * (this.maxDelayMs + 1)))
        return call()
      case "eio":
      case "503":
        throw this.fault(op, key, kind, false)
      case "enospc":
        throw this.fault(op, key, WRITES.has(op) ? "enospc" : "eio", false)
      case "torn":
      case "reset": {
        const carriedOut = (kind === "reset" || WRITES.has(op)) && this.random() < 0.5
        if (carriedOut) await call().catch(() => {})
        throw this.fault(op, key, kind, carriedOut)
      }
    }
  }

  private fault(op: Op, key: string, kind: FaultKind, carriedOut: boolean): IoError {
    const errno = { eio: "EIO", enospc: "ENOSPC", torn: "EIO", reset: "ECONNRESET", "503": undefined, delay: undefined }[
      kind
    ]
    const what = kind === "503" ? "HTTP 503 Service Unavailable" : errno
    return new IoError(`injected fault: ${op} ${key} failed (${what})`, {
      key,
      op,
      fault: kind,
      errno,
      ...(kind === "503" ? { status: 503 } : {}),
      // for tests only: whether the operation reached the store before failing
      carriedOut,
    })
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
