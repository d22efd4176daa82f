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
    spare.give(c) // over the limit
    expect(spare.take(32)).toBe(b)
    expect(spare.take(32)).toBeUndefined()
    expect(spare.take()).toBe(a)
    expect(spare.take()).toBeUndefined()
    spare.give(c)
    spare.clear()
    expect(spare.take()).toBeUndefined()
  })
})
