// Chunk readers cut files in worker threads, request by request: the result
// must be exactly what one pass of the chunker over the whole file gives.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { chunkFile, readerCount, readSmallFiles, type ReaderCounts } from "../../engine/chunk-reader.js"
import { chunkLengths, gearTable } from "../../engine/fastcdc.js"
import { hashBytes, type BlobId } from "../../store/ids.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

const GEAR = gearTable(new TextEncoder().encode("chunk reader seed"))
const PARAMS = { minSize: 2048, avgSize: 8192, maxSize: 32768 }

/** Counts for chunkFile to fill. */
const noCounts = (): ReaderCounts => ({ requests: 0, windows: 0, cut: 0, reused: 0, made: 0 })

/** Every chunk of a file; `release`: copies each batch's bytes and gives its buffer back for reuse. */
async function readAll(file: string, params = PARAMS, opts: Parameters<typeof chunkFile>[3] = {}, release = false) {
  const lengths: number[] = []
  const ids: BlobId[] = []
  const bytes: Array<Uint8Array | undefined> = []
  for await (const batch of chunkFile(file, params, GEAR, opts)) {
    batch.lengths.forEach((len, k) => {
      lengths.push(len)
      ids.push(batch.ids[k]!)
      const b = batch.bytes[k]
      bytes.push(release && b ? Buffer.from(b) : b)
    })
    if (release) batch.release()
  }
  const whole = bytes.every((b) => b !== undefined)
  return { lengths, ids, bytes, data: whole ? Buffer.concat(bytes as Uint8Array[]) : undefined }
}

describe("readerCount", () => {
  it("leaves a core to the main thread and one to the compressor: one reader up to two cores, two from three", () => {
    expect([1, 2, 3, 4, 16].map((cores) => readerCount(cores))).toEqual([1, 1, 2, 2, 2])
  })
})

describe("chunkFile", () => {
  it("gives the boundaries and ids of one pass over the whole file, across request boundaries and guessed span starts", async () => {
    const dir = await tempDir()
    // constant runs have no content-defined cut points: a span started at a guess never meets the true chain there
    const part = fc.record({ kind: fc.constantFrom("text", "random", "zeros"), size: fc.integer({ min: 0, max: 3_000_000 }) })
    const bytesOf = (p: { kind: string; size: number }, i: number) =>
      p.kind === "text" ? textBytes(`t${i}`, p.size) : p.kind === "random" ? seededBytes(`r${i}`, p.size) : Buffer.alloc(p.size, i)
    await fc.assert(
      fc.asyncProperty(fc.array(part, { maxLength: 5 }), fc.constantFrom(undefined, 100_000, 333_333), fc.boolean(), fc.boolean(), fc.boolean(), async (parts, span, hint, release, chain) => {
        const data = Buffer.concat(parts.map(bytesOf))
        const file = path.join(dir, "f.bin")
        await fsp.writeFile(file, data)
        // a size hint that is too small (the file grew after the scan) must not matter either
        const got = await readAll(file, PARAMS, { ...(span ? { span } : {}), ...(hint ? { sizeHint: Math.floor(data.length / 3) } : {}), chain }, release)
        const want = data.length === 0 ? [] : chunkLengths(data, PARAMS, GEAR)
        expect(got.lengths).toEqual(want)
        let at = 0
        expect(got.ids).toEqual(want.map((len) => hashBytes(data.subarray(at, (at += len)))))
        expect(got.data?.equals(data)).toBe(true)
      }),
      { numRuns: 20 },
    )
  })

  it("sends the chunks the caller knows without their bytes, and every other chunk's bytes exactly", async () => {
    const dir = await tempDir()
    const file = path.join(dir, "f.bin")
    let elidedSome = 0
    let plainRequests = 0
    const counts = noCounts()
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2_500_000 }),
        fc.constantFrom(undefined, 100_000, 100_000, 333_333),
        fc.double({ min: 0.5, max: 1, noNaN: true }),
        fc.array(fc.string({ minLength: 64, maxLength: 64, unit: fc.constantFrom(..."0123456789abcdef") }), { maxLength: 5 }),
        fc.nat(),
        async (size, span, share, strangers, edit) => {
          const before = seededBytes(`f${size}`, size)
          // the file as the caller last saw it, then edited in the middle
          const old = await (async () => {
            await fsp.writeFile(file, before)
            return readAll(file, PARAMS, span ? { span } : {})
          })()
          const data = Buffer.from(before)
          if (size > 0) data.fill(7, edit % size, Math.min(size, (edit % size) + 5000))
          await fsp.writeFile(file, data)
          const known = [...old.ids.filter((_, k) => (k * 0.618) % 1 < share), ...strangers] as BlobId[]
          const plain = noCounts()
          await readAll(file, PARAMS, { ...(span ? { span } : {}), counts: plain, chain: false })
          // reply buffers given back are reused, also for replies that leave chunks out; each span from its
          // guessed start, so that joins cut chunks whose bytes the reply left out
          const got = await readAll(file, PARAMS, { ...(span ? { span } : {}), known, counts, chain: false }, edit % 2 === 0)
          plainRequests += plain.requests
          const want = data.length === 0 ? [] : chunkLengths(data, PARAMS, GEAR)
          expect(got.lengths).toEqual(want)
          let at = 0
          expect(got.ids).toEqual(want.map((len) => hashBytes(data.subarray(at, (at += len)))))
          at = 0
          got.lengths.forEach((len, k) => {
            const b = got.bytes[k]
            if (b === undefined) {
              expect(known).toContain(got.ids[k])
              elidedSome++
            } else expect(Buffer.from(b).equals(data.subarray(at, at + len))).toBe(true)
            at += len
          })
        },
      ),
      { numRuns: 30 },
    )
    expect(elidedSome).toBeGreaterThan(100) // the property exercised elision, not only whole replies
    // spans whose replies left out the bytes a join cuts were joined from a window read here, not asked for again
    expect(counts.windows).toBeGreaterThan(5)
    expect(counts.requests).toBe(plainRequests)
  })

  it("a reader starts a span where the one before truly ended: with one reader, nothing to cut when joining, known chunks or not", async () => {
    // one reader up to two cores (this project's machine); with two, the spans in flight go to different readers
    const one = readerCount() === 1
    const dir = await tempDir()
    const file = path.join(dir, "f.bin")
    const data = Buffer.concat([textBytes("chain", 3_000_000), seededBytes("chain", 3_000_000)])
    await fsp.writeFile(file, data)
    const span = 500_000 // the next test's: spare buffers of another size would take up its room
    const whole = await readAll(file, PARAMS, { span })
    data.fill(1, 1_000_000, 1_010_000)
    await fsp.writeFile(file, data)
    const want = chunkLengths(data, PARAMS, GEAR)
    for (const known of [undefined, whole.ids]) {
      const chained = noCounts()
      const guessed = noCounts()
      const got = await readAll(file, PARAMS, { span, counts: chained, ...(known ? { known } : {}) })
      const other = await readAll(file, PARAMS, { span, counts: guessed, chain: false, ...(known ? { known } : {}) })
      expect(got.lengths).toEqual(want)
      expect(got.ids).toEqual(other.ids)
      if (one) {
        expect(chained.cut).toBe(0)
        expect(chained.windows).toBe(0)
        // one request per span and the one past the end (a guess that meets no boundary of the chain asks again)
        expect(chained.requests).toBe(Math.ceil(data.length / span) + 1)
        expect(guessed.requests).toBeGreaterThanOrEqual(chained.requests)
      }
      // guessed starts needed joins (a check that the counts count)
      expect(guessed.cut).toBeGreaterThan(chained.requests / 2)
      if (known) expect(guessed.windows).toBeGreaterThan(0)
    }
  })

  it("a batch's buffer given back carries a later reply, which is exact; one never given back is not reused", async () => {
    const dir = await tempDir()
    const file = path.join(dir, "f.bin")
    const data = Buffer.concat([textBytes("reuse", 3_000_000), seededBytes("reuse", 3_000_000)])
    await fsp.writeFile(file, data)
    await readAll(file, PARAMS, { span: 500_000 }) // takes up the buffers earlier tests gave back
    const kept = noCounts()
    const plain = await readAll(file, PARAMS, { span: 500_000, counts: kept })
    const given = noCounts()
    const reused = await readAll(file, PARAMS, { span: 500_000, counts: given }, true)
    // a batch never given back is not reused: only a reply no batch holds is (the previous read's request past the file's end)
    expect(kept.reused).toBeLessThanOrEqual(1)
    expect(kept.made + kept.reused).toBe(kept.requests)
    expect(given.reused).toBeGreaterThan(given.requests / 2)
    // buffers are made for the replies in use at once (the span being joined, the one ahead), not one per request
    expect(given.requests).toBeGreaterThan(10)
    expect(given.made).toBeLessThanOrEqual(3)
    expect(given.made + given.reused).toBe(given.requests)
    expect(reused.ids).toEqual(plain.ids)
    expect(reused.data?.equals(data)).toBe(true)
  })

  it("reports the file's stat with every batch and keeps error codes", async () => {
    const dir = await tempDir()
    const file = path.join(dir, "big.bin")
    await fsp.writeFile(file, seededBytes("big", 9_000_000))
    const st = await fsp.stat(file, { bigint: true })
    for await (const batch of chunkFile(file, PARAMS, GEAR)) {
      expect(batch.stat).toMatchObject({ size: st.size, ino: st.ino, mtimeNs: st.mtimeNs, isFile: true })
    }
    await expect(readAll(path.join(dir, "missing"))).rejects.toMatchObject({ code: "ENOENT" })
    await fsp.symlink(file, path.join(dir, "link"))
    await expect(readAll(path.join(dir, "link"))).rejects.toMatchObject({ code: "ELOOP" }) // never follows a symlink
  })
})

describe("readSmallFiles", () => {
  it("gives each file's bytes, boundaries and ids as one pass of the chunker over it, and each failure's code", async () => {
    const dir = await tempDir()
    const sizes = [0, 1, PARAMS.minSize - 1, PARAMS.minSize + 1, 3 * PARAMS.maxSize + 17, 100_000]
    const datas = sizes.map((n, i) => (i % 2 ? textBytes(`s${i}`, n) : seededBytes(`s${i}`, n)))
    const files = await Promise.all(
      datas.map(async (data, i) => {
        const file = path.join(dir, `f${i}`)
        await fsp.writeFile(file, data)
        return { path: file, size: data.length }
      }),
    )
    await fsp.symlink(files[1]!.path, path.join(dir, "link"))
    // a file that grew after it was seen: one byte past the size asked for shows it
    const grown = { path: files[5]!.path, size: 50_000 }
    const batch = await readSmallFiles([...files, { path: path.join(dir, "gone"), size: 5 }, { path: path.join(dir, "link"), size: 1 }, grown], PARAMS, GEAR)
    const reads = batch.files
    expect(reads).toHaveLength(files.length + 3)
    datas.forEach((data, i) => {
      const r = reads[i]!
      if ("error" in r) throw new Error(`f${i}: ${r.error}`)
      expect(Buffer.from(r.bytes).equals(data)).toBe(true)
      const lengths = data.length === 0 ? [] : chunkLengths(data, PARAMS, GEAR)
      expect(r.lengths).toEqual(lengths)
      let at = 0
      expect(r.ids).toEqual(lengths.map((n) => hashBytes(data.subarray(at, (at += n)))))
      expect(r.stat.size).toBe(BigInt(data.length))
      expect(r.stat.isFile).toBe(true)
    })
    expect(reads[files.length]).toMatchObject({ code: "ENOENT" })
    expect(reads[files.length + 1]).toMatchObject({ code: "ELOOP" })
    const g = reads[files.length + 2]!
    if ("error" in g) throw new Error(g.error)
    expect(g.bytes.length).toBe(50_001)
    expect(Buffer.from(g.bytes).equals(datas[5]!.subarray(0, 50_001))).toBe(true)
    expect(g.stat.size).toBe(100_000n)
  })
})

describe("readSmallFiles buffers", () => {
  it("a batch's buffer given back carries the next batch, whose bytes are exact; one not given back stays the caller's", async () => {
    const dir = await tempDir()
    const one = path.join(dir, "one")
    const two = path.join(dir, "two")
    await fsp.writeFile(one, textBytes("one", 40_000))
    await fsp.writeFile(two, seededBytes("two", 30_000))
    const first = await readSmallFiles([{ path: one, size: 40_000 }], PARAMS, GEAR)
    const kept = first.files[0]!
    if ("error" in kept) throw new Error(kept.error)
    const second = await readSmallFiles([{ path: two, size: 30_000 }], PARAMS, GEAR)
    // not given back: the first batch's bytes are still there
    expect(Buffer.from(kept.bytes).equals(textBytes("one", 40_000))).toBe(true)
    first.release()
    const third = await readSmallFiles([{ path: one, size: 40_000 }], PARAMS, GEAR)
    second.release()
    // given back: the buffer went to the reader with the third batch, and its old views are gone
    expect(kept.bytes.byteLength).toBe(0)
    const got = third.files[0]!
    if ("error" in got) throw new Error(got.error)
    expect(Buffer.from(got.bytes).equals(textBytes("one", 40_000))).toBe(true)
  })
})
