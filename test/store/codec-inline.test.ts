// A process's first few MiB are compressed inline (store/codec.ts,
// INLINE_BUDGET); after that the worker pool starts and takes every blob.
// A file of its own: the budget is per process (per test file here).
import { describe, expect, it } from "vitest"
import { CODEC_BROTLI, CODEC_DEFLATE, decode, encode } from "../../store/codec.js"
import { codecPool } from "../../store/codec-pool.js"
import { seededBytes } from "../helpers.js"

/** A compressible blob: text-like, different per seed. */
const blob = (seed: string, length: number) => Buffer.from(seededBytes(seed, length).toString("base64").slice(0, length), "latin1")

describe("inline compression budget", () => {
  it("compresses the first MiB without starting the pool, then starts it once the budget is spent, with the same results", async () => {
    const raws: Buffer[] = []
    const stored: Array<Awaited<ReturnType<typeof encode>>> = []
    const put = async (seed: string, length: number, codec: typeof CODEC_BROTLI | typeof CODEC_DEFLATE) => {
      const raw = blob(seed, length)
      raws.push(raw)
      stored.push(await encode(raw, codec))
    }
    for (let i = 0; i < 16; i++) await put(`early-${i}`, 64 * 1024, i % 2 ? CODEC_BROTLI : CODEC_DEFLATE)
    expect(codecPool().started).toBe(0) // 1 MiB compressed, no worker
    for (let i = 0; i < 64; i++) await put(`late-${i}`, 64 * 1024, i % 2 ? CODEC_BROTLI : CODEC_DEFLATE)
    expect(codecPool().started).toBeGreaterThan(0) // 5 MiB in all: past the budget
    for (const [i, s] of stored.entries()) {
      expect(s.codec).not.toBe(0) // compressed, inline or not
      expect(Buffer.from(await decode(s.codec, s.bytes, raws[i]!.length, true)).equals(raws[i]!)).toBe(true)
    }
    // inline and pool compress alike: the same blob gives the same bytes either way
    const again = await encode(raws[0]!, CODEC_DEFLATE)
    expect(Buffer.from(again.bytes).equals(Buffer.from(stored[0]!.bytes))).toBe(true)
    await codecPool().close()
  })
})
