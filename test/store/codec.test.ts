// Blob codecs (store/codec.ts), the encoder and decoder every thread uses
// (blobEncoder, blobDecoder: one reused zlib handle per codec; the decoder
// writes into the caller's buffer) and the decoder's fallback options
// (decodeOptions: one output buffer, large enough for the whole blob).
import zlib from "node:zlib"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { CODEC_BROTLI, CODEC_DEFLATE, CODEC_NONE, decode, encode } from "../../store/codec.js"
import { blobDecoder, blobEncoder, CodecPool, codecPool, decodeOptions, encodeRoom } from "../../store/codec-pool.js"
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

const COMPRESS = {
  [CODEC_BROTLI]: (b: Uint8Array) => zlib.brotliCompressSync(b),
  [CODEC_DEFLATE]: (b: Uint8Array) => zlib.deflateRawSync(b, { level: 1 }),
} as const

/** node:zlib as a Node without the private handle would look: its streams have no `_handle`, so the coders use the one-shot calls. */
const streamWithoutHandle = () => ({ on() {}, destroyed: false })
const zlibWithoutHandles = {
  ...zlib,
  createBrotliDecompress: streamWithoutHandle,
  createInflateRaw: streamWithoutHandle,
  createBrotliCompress: streamWithoutHandle,
  createDeflateRaw: streamWithoutHandle,
} as unknown as typeof zlib

describe("encode", () => {
  it("compresses a small blob that looks random but repeats itself; a large one is sampled and stored raw", async () => {
    // order-0 entropy near 8 bits a byte, yet brotli finds the second half in the first
    const twice = (n: number) => Buffer.concat([seededBytes(`half-${n}`, n / 2), seededBytes(`half-${n}`, n / 2)])
    const small = await encode(twice(8192), CODEC_BROTLI)
    expect(small.codec).toBe(CODEC_BROTLI)
    expect(small.bytes.length).toBeLessThan(5000)
    const large = await encode(twice(128 * 1024), CODEC_BROTLI)
    expect(large.codec).toBe(CODEC_NONE)
    // a small blob that does not compress comes back as it is
    const random = seededBytes("small-random", 8192)
    const stored = await encode(random, CODEC_BROTLI)
    expect(stored.codec).toBe(CODEC_NONE)
    expect(Buffer.from(stored.bytes).equals(random)).toBe(true)
  })

  it("reuses the buffers of small-blob batches: the inputs' when the worker gives them back, the outputs' once every blob of a batch is released", async () => {
    const pool = new CodecPool(1)
    try {
      for (let tick = 0; tick < 12; tick++) {
        const blobs = Array.from({ length: 8 }, (_, i) => compressible(`batch-${tick}-${i}`, 12_000))
        const outs = await Promise.all(blobs.map((b) => pool.encodeSmall(CODEC_BROTLI, b)))
        outs.forEach((o, i) => expect(zlib.brotliDecompressSync(o.bytes).equals(blobs[i]!)).toBe(true))
        outs.forEach((o) => o.release())
      }
      expect(pool.counts.batches).toBe(12)
      expect(pool.counts.buffersMade).toBe(2) // one for the inputs, one for the outputs
      // a batch whose blobs are not all released keeps its outputs' buffer: the next batch needs another
      const held = await Promise.all([1, 2].map((i) => pool.encodeSmall(CODEC_BROTLI, compressible(`held-${i}`, 12_000))))
      held[0]!.release()
      await pool.encodeSmall(CODEC_BROTLI, compressible("after", 12_000))
      expect(pool.counts.buffersMade).toBe(3)
    } finally {
      await pool.close()
    }
  })

  it("compresses a large blob into a buffer it lends the caller, and reuses it and the input's once released", async () => {
    const pool = new CodecPool(1)
    try {
      for (let i = 0; i < 10; i++) {
        const blob = compressible(`large-${i}`, 300_000 + i * 1000)
        const out = await pool.encode(CODEC_BROTLI, blob)
        expect(out).toBeDefined()
        expect(zlib.brotliDecompressSync(out!.bytes).equals(blob)).toBe(true)
        out!.release()
        out!.release() // twice is once
      }
      // incompressible: nothing lent, both buffers back at once
      expect(await pool.encode(CODEC_BROTLI, seededBytes("large-random", 300_000))).toBeUndefined()
      expect(pool.counts.buffersMade).toBe(2)
      // not released: the next blob gets a new output buffer; a blob larger than the kept size gets its own buffers
      const kept = await pool.encode(CODEC_DEFLATE, compressible("kept", 200_000))
      const next = await pool.encode(CODEC_DEFLATE, compressible("next", 200_000))
      expect(zlib.inflateRawSync(kept!.bytes).equals(compressible("kept", 200_000))).toBe(true)
      expect(zlib.inflateRawSync(next!.bytes).equals(compressible("next", 200_000))).toBe(true)
      expect(pool.counts.buffersMade).toBe(3)
      const huge = compressible("huge", 2_000_000)
      const big = await pool.encode(CODEC_BROTLI, huge)
      expect(zlib.brotliDecompressSync(big!.bytes).equals(huge)).toBe(true)
      expect(pool.counts.buffersMade).toBe(5)
    } finally {
      await pool.close()
    }
  })
})

describe("blobEncoder", () => {
  const c = zlib.constants
  /** node's one-shot calls with the repository's settings: what every encoder must give, byte for byte */
  const oneShot = (codec: number, b: Uint8Array) =>
    codec === CODEC_BROTLI
      ? zlib.brotliCompressSync(b, { params: { [c.BROTLI_PARAM_QUALITY]: 1, [c.BROTLI_PARAM_LGWIN]: 18, [c.BROTLI_PARAM_SIZE_HINT]: b.length } })
      : zlib.deflateRawSync(b, { level: 1 })

  it("gives node's one-shot output (quality 1, not brotli's default 11) blob after blob, and the input back when compressing would not save 2%", () => {
    for (const z of [zlib, zlibWithoutHandles]) {
      const encode = blobEncoder(z)
      const decode = blobDecoder(zlib)
      const given = new Uint8Array(150_000)
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 200_000 }), fc.boolean(), fc.constantFrom(CODEC_BROTLI, CODEC_DEFLATE), fc.string(), fc.boolean(), (length, random, codec, seed, useInto) => {
          const raw = random ? seededBytes(seed, length) : compressible(seed, length)
          const into = useInto ? given : undefined
          const out = encode(codec, raw, into)
          const expected = oneShot(codec, raw)
          if (expected.length < Math.floor(raw.length * 0.98)) {
            expect(Buffer.from(out).equals(expected)).toBe(true)
            expect(Buffer.from(decode(codec, out, length)).equals(raw)).toBe(true)
            // a view of the given buffer when it has room for encodeRoom(length) bytes, else memory of its own
            expect(out.buffer === given.buffer).toBe(useInto && given.length >= encodeRoom(length))
          } else expect(out).toBe(raw)
        }),
        { numRuns: 60 },
      )
    }
  })
})

describe("blobDecoder", () => {
  it("decodes any blob exactly, into the caller's buffer when it is large enough, with both codecs, reusing one handle", () => {
    const decode = blobDecoder(zlib)
    const into = new Uint8Array(150_000)
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200_000 }), fc.boolean(), fc.constantFrom(CODEC_BROTLI, CODEC_DEFLATE), fc.string(), (length, random, codec, seed) => {
        const raw = random ? seededBytes(seed, length) : compressible(seed, length)
        const out = decode(codec, COMPRESS[codec](raw), length, into)
        expect(Buffer.from(out.buffer, out.byteOffset, out.length).equals(raw)).toBe(true)
        // a view of the caller's buffer when it fits, else a buffer of exactly the blob's size
        expect(out.buffer === into.buffer).toBe(length <= into.length)
        if (length > into.length) expect(out.buffer.byteLength).toBe(length)
      }),
      { numRuns: 60 },
    )
  })

  it("refuses a blob that decodes longer, shorter, truncated or malformed, and decodes the next one right", () => {
    for (const z of [zlib, zlibWithoutHandles]) {
      const decode = blobDecoder(z)
      for (const codec of [CODEC_BROTLI, CODEC_DEFLATE] as const) {
        const raw = compressible(`bad-${codec}`, 70_000)
        const stored = COMPRESS[codec](raw)
        const damaged = Buffer.from(stored)
        damaged.fill(0xff, 10, 40)
        const bad: Array<[Uint8Array, number]> = [
          [stored, raw.length - 1],
          [stored, raw.length + 1],
          [stored.subarray(0, stored.length - 3), raw.length],
          [damaged, raw.length],
          [new Uint8Array(0), raw.length],
        ]
        for (const [input, length] of bad) {
          expect(() => decode(codec, input, length)).toThrow()
          // the handle a failure left behind (reset, or destroyed and replaced) decodes the next blob
          expect(Buffer.from(decode(codec, stored, raw.length)).equals(raw)).toBe(true)
        }
        // an empty blob, and bytes after the end of a stream (ignored, as node's one-shot calls do)
        expect(decode(codec, COMPRESS[codec](new Uint8Array(0)), 0).length).toBe(0)
        expect(Buffer.from(decode(codec, Buffer.concat([stored, Buffer.from("tail")]), raw.length)).equals(raw)).toBe(true)
      }
      expect(() => decode(7, new Uint8Array(8), 8)).toThrow(/unknown codec 7/)
    }
  })
})
