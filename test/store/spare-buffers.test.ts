// Buffers kept for reuse (store/spare-buffers.ts).
import { describe, expect, it } from "vitest"
import { SpareBuffers } from "../../store/spare-buffers.js"

describe("SpareBuffers", () => {
  it("keeps at most `keep` buffers its rule accepts, each once, and hands out one large enough", () => {
    const spare = new SpareBuffers<ArrayBufferLike>(2, (b) => b instanceof ArrayBuffer && b.byteLength >= 16)
    const [a, b, c] = [new ArrayBuffer(16), new ArrayBuffer(64), new ArrayBuffer(32)]
    spare.give(new ArrayBuffer(8)) // not accepted
    spare.give(new SharedArrayBuffer(64)) // not accepted either
    spare.give(a)
    spare.give(a) // the same buffer twice would be handed out twice
    spare.give(b)
    spare.give(c) // over the limit: it takes the place of the smallest, a
    expect(spare.take(48)).toBe(b)
    expect(spare.take(48)).toBeUndefined()
    expect(spare.take()).toBe(c)
    expect(spare.take()).toBeUndefined()
    spare.give(c)
    spare.clear()
    expect(spare.take()).toBeUndefined()
  })

  it("full of buffers too small for the requests, makes room for a larger one given back; drops one no larger", () => {
    const spare = new SpareBuffers(3)
    const small = [new ArrayBuffer(10), new ArrayBuffer(12), new ArrayBuffer(10)]
    for (const b of small) spare.give(b)
    spare.give(new ArrayBuffer(10)) // full, and no larger than the smallest kept: dropped
    const big = new ArrayBuffer(100)
    expect(spare.take(100)).toBeUndefined()
    spare.give(big)
    expect(spare.take(100)).toBe(big)
    // the one it replaced was a smallest one; the other two stay
    const left = [spare.take(), spare.take(), spare.take()]
    expect(left).toContain(small[1])
    expect(left.filter((b) => b !== undefined)).toHaveLength(2)
  })
})
