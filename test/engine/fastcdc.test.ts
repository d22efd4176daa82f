import { createHash } from "node:crypto"
import { describe, it, expect } from "vitest"
import fc from "fast-check"
import { Chunker, checkParams, chunkLengths, cutPoint, gearTable, type ChunkerParams } from "../../engine/fastcdc.js"

const P64K: ChunkerParams = { minSize: 16384, avgSize: 65536, maxSize: 262144 }
const P8K: ChunkerParams = { minSize: 2048, avgSize: 8192, maxSize: 32768 }
const SMALL: ChunkerParams = { minSize: 256, avgSize: 1024, maxSize: 4096 }
const GEAR = gearTable(new TextEncoder().encode("cairn golden seed"))

/** Deterministic pseudo-random bytes: xorshift32, one output byte per step (the low byte). */
function prng(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

/** FastCDC NC level 2 written the obvious way, straight from the paper (the engine's loop is unrolled). */
function referenceCut(buf: Uint8Array, start: number, end: number, p: ChunkerParams, gear: Uint32Array): number {
  let n = end - start
  if (n <= p.minSize) return n
  n = Math.min(n, p.maxSize)
  const bits = Math.log2(p.avgSize)
  const maskS = (0xffffffff << (32 - (bits + 2))) >>> 0
  const maskL = (0xffffffff << (32 - (bits - 2))) >>> 0
  let h = 0
  for (let i = p.minSize; i < n; i++) {
    h = ((h << 1) + gear[buf[start + i]!]!) >>> 0
    const mask = i < p.avgSize ? maskS : maskL
    if (((h & mask) >>> 0) === 0) return i + 1
  }
  return n
}

function referenceLengths(buf: Uint8Array, p: ChunkerParams, gear: Uint32Array): number[] {
  const out: number[] = []
  for (let pos = 0; pos < buf.length; pos += out[out.length - 1]!) out.push(referenceCut(buf, pos, buf.length, p, gear))
  return out
}

/** Streams buf through a Chunker, split at the given (unsorted, possibly repeated) offsets. */
function streamChunks(buf: Uint8Array, p: ChunkerParams, splits: number[]): Uint8Array[] {
  const offsets = [...new Set(splits.map((s) => s % (buf.length + 1)))].sort((a, b) => a - b)
  const chunker = new Chunker(p, GEAR)
  const chunks: Uint8Array[] = []
  let prev = 0
  for (const off of [...offsets, buf.length]) {
    chunks.push(...chunker.push(buf.subarray(prev, off)))
    prev = off
  }
  chunks.push(...chunker.finish())
  return chunks
}

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks))
}

function hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex")
}

describe("gearTable", () => {
  it("is deterministic per seed and differs between seeds", () => {
    const a = gearTable(new TextEncoder().encode("seed-a"))
    expect(a).toHaveLength(256)
    expect(gearTable(new TextEncoder().encode("seed-a"))).toEqual(a)
    const b = gearTable(new TextEncoder().encode("seed-b"))
    expect(b).not.toEqual(a)
    expect(new Set(a).size).toBeGreaterThan(250)
  })

  it("is pinned: sha256 of seed || uint32be(k), 8 big-endian words per digest", () => {
    expect(Array.from(GEAR.subarray(0, 4))).toEqual(GOLDEN_GEAR_HEAD)
    expect(hex(new Uint8Array(GEAR.buffer))).toBe(GOLDEN_GEAR_SHA256)
    const d0 = createHash("sha256").update("cairn golden seed").update(new Uint8Array([0, 0, 0, 0])).digest()
    expect(GEAR[0]).toBe(d0.readUInt32BE(0))
    expect(GEAR[7]).toBe(d0.readUInt32BE(28))
  })
})

describe("checkParams", () => {
  it("accepts sane params", () => {
    for (const p of [P64K, P8K, SMALL, { minSize: 512 << 10, avgSize: 2 << 20, maxSize: 8 << 20 }]) expect(() => checkParams(p)).not.toThrow()
  })

  it.each([
    ["avg not a power of two", { minSize: 16384, avgSize: 65535, maxSize: 262144 }],
    ["min == avg", { minSize: 65536, avgSize: 65536, maxSize: 262144 }],
    ["min > avg", { minSize: 100000, avgSize: 65536, maxSize: 262144 }],
    ["max == avg", { minSize: 16384, avgSize: 65536, maxSize: 65536 }],
    ["max < avg", { minSize: 16384, avgSize: 65536, maxSize: 1000 }],
    ["min too small", { minSize: 0, avgSize: 1024, maxSize: 4096 }],
    ["negative min", { minSize: -1, avgSize: 1024, maxSize: 4096 }],
    ["avg too small", { minSize: 64, avgSize: 128, maxSize: 512 }],
    ["avg too large", { minSize: 1 << 20, avgSize: 1 << 28, maxSize: 1 << 30 }],
    ["max too large", { minSize: 16384, avgSize: 65536, maxSize: 2 ** 31 }],
    ["fractional", { minSize: 16384.5, avgSize: 65536, maxSize: 262144 }],
    ["NaN", { minSize: NaN, avgSize: 65536, maxSize: 262144 }],
  ])("rejects %s with a plain Error", (_name, p) => {
    expect(() => checkParams(p)).toThrow(/chunker params/)
    expect(() => new Chunker(p, GEAR)).toThrow(Error)
    expect(() => chunkLengths(new Uint8Array(10), p, GEAR)).toThrow(Error)
  })

  it("rejects a gear table of the wrong size", () => {
    expect(() => new Chunker(P8K, new Uint32Array(255))).toThrow(/gear table/)
  })
})

describe("cutPoint", () => {
  const buf = prng(7, 1 << 20)

  it("returns end-start when at most minSize bytes remain", () => {
    expect(cutPoint(buf, 100, 100, P8K, GEAR)).toBe(0)
    expect(cutPoint(buf, 100, 100 + 2048, P8K, GEAR)).toBe(2048)
    expect(cutPoint(buf, 100, 101, P8K, GEAR)).toBe(1)
  })

  it("never exceeds maxSize and only looks at the first maxSize bytes", () => {
    const zeros = new Uint8Array(1 << 20)
    const gear = GEAR.slice()
    gear[0] = 0x80000000 // on zeros h stays 0x80000000 (a fixed point of 2h + g): the top bit never clears, no cut
    expect(cutPoint(zeros, 0, zeros.length, P8K, gear)).toBe(P8K.maxSize)
    const n = cutPoint(buf, 5, buf.length, P8K, GEAR)
    const copy = buf.slice()
    copy.fill(0xaa, 5 + n) // bytes after the cut do not matter
    expect(cutPoint(copy, 5, copy.length, P8K, GEAR)).toBe(n)
    copy.set(buf.subarray(5 + n), 5 + n)
    copy.fill(0xaa, 5 + P8K.maxSize)
    expect(cutPoint(copy, 5, copy.length, P8K, GEAR)).toBe(n)
  })

  it("rejects out-of-range start/end", () => {
    expect(() => cutPoint(buf, -1, 10, P8K, GEAR)).toThrow()
    expect(() => cutPoint(buf, 10, 5, P8K, GEAR)).toThrow()
    expect(() => cutPoint(buf, 0, buf.length + 1, P8K, GEAR)).toThrow()
  })

  it("matches the straightforward reference at every parity of start and end", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 << 19 }), fc.integer({ min: 0, max: 1 << 19 }), (start, len) => {
        const end = Math.min(buf.length, start + len)
        for (const p of [SMALL, P8K, P64K]) {
          expect(cutPoint(buf, start, end, p, GEAR)).toBe(referenceCut(buf, start, end, p, GEAR))
        }
      }),
      { numRuns: 200 },
    )
  })
})

describe("golden chunk boundaries (a change here is a format change)", () => {
  it("64 KiB average, 8 MiB of xorshift32 data", () => {
    const lengths = chunkLengths(prng(0x2545f491, 8 << 20), P64K, GEAR)
    expect(lengths).toEqual(GOLDEN_64K)
  })

  it("8 KiB average, 1 MiB of xorshift32 data", () => {
    const lengths = chunkLengths(prng(0x9e3779b9, 1 << 20), P8K, GEAR)
    expect(lengths).toEqual(GOLDEN_8K)
  })

  it("chunkLengths agrees with the reference implementation", () => {
    const buf = prng(0x2545f491, 8 << 20)
    expect(chunkLengths(buf, P64K, GEAR)).toEqual(referenceLengths(buf, P64K, GEAR))
  })
})

describe("Chunker", () => {
  it("gives no chunk for empty input, one chunk for input shorter than minSize", () => {
    const c = new Chunker(P8K, GEAR)
    expect(c.push(new Uint8Array(0))).toEqual([])
    expect(c.finish()).toEqual([])
    const d = new Chunker(P8K, GEAR)
    expect(d.push(prng(1, 100))).toEqual([])
    expect(d.finish().map((x) => x.length)).toEqual([100])
  })

  it("throws when used after finish()", () => {
    const c = new Chunker(P8K, GEAR)
    c.finish()
    expect(() => c.push(new Uint8Array(1))).toThrow(/after finish/)
  })

  it("boundaries do not depend on how the input is sliced, and chunks concatenate to the input", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 0x7fffffff }),
        fc.integer({ min: 0, max: 200_000 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.constantFrom(SMALL, P8K),
        (seed, size, splits, p) => {
          const buf = prng(seed, size)
          const chunks = streamChunks(buf, p, splits)
          expect(chunks.map((c) => c.length)).toEqual(chunkLengths(buf, p, GEAR))
          expect(Buffer.compare(concat(chunks), buf)).toBe(0)
        },
      ),
      { numRuns: 150 },
    )
  })

  it("is slicing-invariant with 64 KiB average over several refills of its buffer", () => {
    const buf = prng(42, 6 << 20)
    const whole = chunkLengths(buf, P64K, GEAR)
    for (const splits of [[], [1, 2, 3, 262143, 262144, 262145], Array.from({ length: 300 }, (_, i) => i * 20011 + (i % 7))]) {
      const chunks = streamChunks(buf, P64K, splits)
      expect(chunks.map((c) => c.length)).toEqual(whole)
      expect(Buffer.compare(concat(chunks), buf)).toBe(0)
    }
  })

  it("returned chunks stay valid after further pushes and after the caller reuses its buffer", () => {
    const buf = prng(3, 3 << 20)
    const chunker = new Chunker(P8K, GEAR)
    const scratch = new Uint8Array(10_000)
    const got: Uint8Array[] = []
    for (let off = 0; off < buf.length; off += scratch.length) {
      const piece = buf.subarray(off, off + scratch.length)
      scratch.set(piece)
      got.push(...chunker.push(scratch.subarray(0, piece.length)))
      scratch.fill(0xee) // the caller reuses its read buffer
    }
    got.push(...chunker.finish())
    expect(got.map((c) => c.length)).toEqual(chunkLengths(buf, P8K, GEAR))
    expect(Buffer.compare(concat(got), buf)).toBe(0)
  })

  it("every chunk is within [min, max] except the last, which is in (0, max]", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 0x7fffffff }),
        fc.integer({ min: 1, max: 100_000 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        (seed, size, splits, lowEntropy) => {
          const buf = prng(seed, size)
          if (lowEntropy) for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! & 3 // few distinct bytes
          const lengths = streamChunks(buf, SMALL, splits).map((c) => c.length)
          lengths.slice(0, -1).forEach((n) => {
            expect(n).toBeGreaterThanOrEqual(SMALL.minSize)
            expect(n).toBeLessThanOrEqual(SMALL.maxSize)
          })
          const last = lengths[lengths.length - 1]!
          expect(last).toBeGreaterThan(0)
          expect(last).toBeLessThanOrEqual(SMALL.maxSize)
        },
      ),
      { numRuns: 200 },
    )
  })

  it("cuts at maxSize on data with no cut points (all zeros)", () => {
    const gear = GEAR.slice()
    gear[0] = 0x80000000 // see above: no cut point in a run of zeros
    const c = new Chunker(P8K, gear)
    const lengths = [...c.push(new Uint8Array(100_000)), ...c.finish()].map((x) => x.length)
    expect(lengths).toEqual([32768, 32768, 32768, 100_000 - 3 * 32768])
  })
})

describe("deduplication behaviour", () => {
  it("an insertion only changes the chunks around it", () => {
    // Re-synchronisation after an edit is usually immediate, but min-size skipping and the
    // offset-dependent masks of normalized chunking can chain a few misaligned chunks
    // (measured over 20k random edits at 8 KiB average: 80% change 1 chunk, 0.4% change 8).
    // So: a loose bound per edit, and a tight one on the mean.
    let totalFresh = 0
    let runs = 0
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 0x7fffffff }),
        fc.double({ min: 0.1, max: 0.9, noNaN: true }),
        fc.uint8Array({ minLength: 1, maxLength: 5000 }),
        (seed, where, inserted) => {
          const old = prng(seed, 1 << 20)
          const at = Math.floor(where * old.length)
          const neu = concat([old.subarray(0, at), inserted, old.subarray(at)])
          const a = streamChunks(old, P8K, []).map(hex)
          const b = streamChunks(neu, P8K, []).map(hex)
          const aLengths = chunkLengths(old, P8K, GEAR)
          // Every chunk that ends at or before the insertion is identical.
          let end = 0
          let before = 0
          while (end + aLengths[before]! <= at) end += aLengths[before++]!
          expect(b.slice(0, before)).toEqual(a.slice(0, before))
          // After it, all but a few chunks are shared with the old list, both ways.
          const bound = 10 + Math.ceil(inserted.length / P8K.minSize)
          const oldSet = new Set(a)
          const newSet = new Set(b)
          const fresh = b.slice(before).filter((h) => !oldSet.has(h)).length
          const lost = a.slice(before).filter((h) => !newSet.has(h)).length
          expect(fresh).toBeGreaterThanOrEqual(1)
          expect(fresh).toBeLessThanOrEqual(bound)
          expect(lost).toBeLessThanOrEqual(bound)
          totalFresh += fresh
          runs++
        },
      ),
      { numRuns: 40 },
    )
    expect(totalFresh / runs).toBeLessThan(3)
  })

  it("average chunk size on random data is near avgSize", () => {
    for (const p of [P8K, P64K]) {
      const buf = prng(99, 16 << 20)
      const lengths = chunkLengths(buf, p, GEAR)
      const mean = buf.length / lengths.length
      expect(mean).toBeGreaterThan(p.avgSize * 0.75)
      expect(mean).toBeLessThan(p.avgSize * 1.5)
    }
  })
})

// Pinned values; regenerate only for a deliberate format change.
const GOLDEN_GEAR_HEAD: number[] = [2376259479, 2013188072, 2644062321, 690532793]
const GOLDEN_GEAR_SHA256 = "b0bdb47482fb04d29a1aa188ac290adc6d3f8da635843367b1265a39eb6e5db9"
// 114 chunks, mean 71.9 KiB
const GOLDEN_64K: number[] = [
  94944, 70446, 19469, 73494, 74628, 68657, 72541, 30800, 89120, 124894, 125294, 80266, 73931, 73989,
  77051, 81395, 81095, 82136, 75240, 98389, 111871, 77297, 74339, 111736, 67535, 76566, 80705, 94607,
  52240, 66710, 69863, 72911, 99024, 26768, 73042, 74574, 43816, 101023, 74409, 75325, 75415, 74311,
  32784, 98198, 79300, 78671, 65932, 87180, 57677, 36838, 66685, 57505, 67055, 38930, 70081, 43986,
  66756, 35504, 84071, 94872, 56176, 83237, 68325, 88778, 56501, 68652, 62721, 99512, 32619, 69593,
  82026, 86275, 73317, 76726, 81284, 97365, 84360, 99963, 62114, 68414, 95130, 72157, 75409, 73413,
  68377, 87858, 65705, 102994, 83559, 72123, 67059, 20664, 122923, 73718, 65951, 74651, 67513, 71630,
  72312, 76726, 72880, 113814, 67851, 61329, 97900, 70728, 77256, 18960, 73687, 84016, 79379, 65537,
  74227, 19323,
]
// 111 chunks, mean 9.2 KiB
const GOLDEN_8K: number[] = [
  10954, 9102, 9058, 9648, 8428, 9164, 8427, 7413, 9609, 4726, 9889, 10190, 8249, 7072, 13200, 10328,
  8329, 13188, 9910, 9231, 10156, 11880, 8989, 10422, 13802, 12663, 9398, 9667, 8583, 9245, 8349,
  3220, 9462, 10887, 8486, 7174, 8928, 10128, 8384, 6748, 9920, 13222, 9768, 8710, 10048, 3346, 10777,
  16552, 8646, 6062, 8460, 12947, 11709, 9794, 14588, 7358, 8667, 8461, 11160, 8347, 10378, 8217,
  8522, 9412, 11231, 2174, 16364, 13902, 10224, 10702, 8229, 8824, 3620, 3446, 9281, 8957, 12453,
  8680, 8592, 4338, 7737, 13468, 8935, 12216, 12506, 9408, 9207, 11242, 9227, 11432, 3150, 13176,
  3753, 14906, 11172, 8888, 11850, 9412, 10473, 6115, 2710, 10160, 11300, 12091, 9658, 8477, 11437,
  8336, 8942, 13109, 5309,
]
