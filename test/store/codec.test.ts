// Blob codecs (store/codec.ts) and the decode options every decoder uses
// (decodeOptions: one output buffer, large enough for the whole blob).
import zlib from "node:zlib"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { CODEC_BROTLI, CODEC_DEFLATE, CODEC_NONE, decode, encode } from "../../store/codec.js"
import { codecPool, decodeOptions } from "../../store/codec-pool.js"
import { seededBytes } from "../helpers.js"

/** Bytes that compress: a repeated seeded pattern, cut to length. */
const compressible = (seed: string, length: number) => {
  const unit = seededBytes(seed, 97)
  const out = Buffer.alloc(length)
  for (let at = 0; at < length; at += unit.length) unit.copy(out, at)
  return out
}

describe("decodeOptions", () => {
  it("decodes any blob exactly, into one buffer of its own size (plus one byte), with both codecs", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200_000 }), fc.boolean(), fc.string(), (length, random, seed) => {
        const raw = random ? seededBytes(seed, length) : compressible(seed, length)
        for (const [compress, decompress] of [
          [zlib.brotliCompressSync, zlib.brotliDecompressSync],
          [(b: Buffer) => zlib.deflateRawSync(b, { level: 1 }), zlib.inflateRawSync],
        ] as const) {
          const out = decompress(compress(raw), decodeOptions(raw.length))
          expect(out.equals(raw)).toBe(true)
          // no chain of 16 KiB buffers concatenated at the end: the result lies in the single output buffer
          // (below 4 KiB node cuts that buffer out of its shared pool)
          if (length + 1 >= 4096) expect(out.buffer.byteLength).toBe(length + 1)
        }
      }),
      { numRuns: 40 },
    )
  })

  it("still refuses a blob that decodes to more than its recorded length", () => {
    const raw = compressible("long", 100_000)
    expect(() => zlib.brotliDecompressSync(zlib.brotliCompressSync(raw), decodeOptions(raw.length - 1))).toThrow(/Cannot create a Buffer larger|larger than/)
    expect(() => zlib.inflateRawSync(zlib.deflateRawSync(raw), decodeOptions(raw.length - 1))).toThrow(/Cannot create a Buffer larger|larger than/)
  })

  it("the library's decode gives the bytes back, inline and in the pool, for both codecs", async () => {
    for (const codec of [CODEC_BROTLI, CODEC_DEFLATE] as const) {
      for (const length of [0, 1, 5000, 70_000, 600_000]) {
        const raw = compressible(`c${codec}-${length}`, length)
        const stored = await encode(raw, codec)
        if (length >= 5000) expect(stored.codec).toBe(codec) // compressed, not stored as it is
        else if (stored.codec === CODEC_NONE) continue
        for (const inline of [true, false]) {
          const out = await decode(stored.codec, stored.bytes, length, inline)
          expect(Buffer.from(out).equals(raw)).toBe(true)
        }
      }
    }
    await codecPool().close()
  })
})
