// Small concurrency primitives: a counting semaphore and a bounded parallel map.

/**
 * A counting semaphore. Waiters are served in order from a queue that
 * dequeues in O(1): callers queue tens of thousands of waiters (one per file
 * of a tree), and Array.shift on such a queue copies it every time.
 */
export class Semaphore {
  private waiters: Array<(() => void) | undefined> = []
  private head = 0
  private free: number

  constructor(readonly size: number) {
    this.free = size
  }

  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--
    else await new Promise<void>((resolve) => this.waiters.push(resolve))
    return this.releaser()
  }

  /** A slot if one is free now (its release function), else undefined; never waits. */
  tryAcquire(): (() => void) | undefined {
    if (this.free === 0) return undefined
    this.free--
    return this.releaser()
  }

  private releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.dequeue()
      if (next) next()
      else this.free++
    }
  }

  private dequeue(): (() => void) | undefined {
    if (this.head === this.waiters.length) return undefined
    const next = this.waiters[this.head]
    this.waiters[this.head++] = undefined
    if (this.head === this.waiters.length) {
      this.waiters = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.waiters.length) {
      this.waiters = this.waiters.slice(this.head)
      this.head = 0
    }
    return next
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire()
    try {
      return await fn()
    } finally {
      release()
    }
  }
}

/** Runs fn over items with at most `limit` in flight; rejects with the first error after all settle. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  let failed: { err: unknown } | undefined
  const worker = async () => {
    while (next < items.length && !failed) {
      const i = next++
      try {
        out[i] = await fn(items[i]!, i)
      } catch (err) {
        failed ??= { err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failed) throw failed.err
  return out
}
