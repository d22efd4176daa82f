import { describe, expect, it } from "vitest"
import { Semaphore, mapLimit } from "../../store/concurrency.js"

describe("Semaphore", () => {
  it("serves thousands of waiters in order, never more than its size at once", async () => {
    const sem = new Semaphore(3)
    const started: number[] = []
    let running = 0
    let peak = 0
    const jobs = Array.from({ length: 5000 }, (_, i) =>
      sem.run(async () => {
        started.push(i)
        peak = Math.max(peak, ++running)
        await new Promise<void>((resolve) => setImmediate(resolve))
        running--
      }),
    )
    await Promise.all(jobs)
    expect(peak).toBe(3)
    expect(started).toEqual(Array.from({ length: 5000 }, (_, i) => i))
    // drained: the next acquirers get slots at once, in order, across the queue's compaction
    const order: number[] = []
    await Promise.all([0, 1, 2, 3, 4].map((i) => sem.run(async () => void order.push(i))))
    expect(order).toEqual([0, 1, 2, 3, 4])
  })

  it("a release called twice frees one slot", async () => {
    const sem = new Semaphore(1)
    const release = await sem.acquire()
    release()
    release()
    const a = await sem.acquire()
    let second = false
    const b = sem.acquire().then((r) => ((second = true), r))
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(second).toBe(false)
    a()
    ;(await b)()
  })

  it("tryAcquire takes a free slot at once and never waits; its release serves a waiter first", async () => {
    const sem = new Semaphore(2)
    const one = sem.tryAcquire()
    const two = sem.tryAcquire()
    expect(one).toBeTypeOf("function")
    expect(two).toBeTypeOf("function")
    expect(sem.tryAcquire()).toBeUndefined()
    let waited = false
    const three = sem.acquire().then((r) => ((waited = true), r))
    one!()
    ;(await three)()
    expect(waited).toBe(true)
    // three's release freed a slot (no one was waiting); two still holds the other
    const four = sem.tryAcquire()
    expect(four).toBeTypeOf("function")
    expect(sem.tryAcquire()).toBeUndefined()
    two!()
    four!()
  })
})

describe("mapLimit", () => {
  it("keeps order and the limit, and rejects with the first error after all settle", async () => {
    let running = 0
    let peak = 0
    const out = await mapLimit([1, 2, 3, 4, 5, 6], 2, async (n) => {
      peak = Math.max(peak, ++running)
      await new Promise<void>((resolve) => setImmediate(resolve))
      running--
      return n * 10
    })
    expect(out).toEqual([10, 20, 30, 40, 50, 60])
    expect(peak).toBe(2)
    await expect(mapLimit([1, 2, 3], 3, async (n) => (n === 2 ? Promise.reject(new Error("two")) : n))).rejects.toThrow("two")
  })
})
