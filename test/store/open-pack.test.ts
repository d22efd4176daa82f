import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { hashBytes } from "../../store/ids.js"
import type { ObjectWriter } from "../../store/backend.js"
import { OpenPack, PackBuffers, StreamedPack } from "../../store/open-pack.js"
import { BLOB_DATA, packKey, parsePack } from "../../store/pack.js"
import { runWithNatives, seededBytes } from "../helpers.js"

const blob = (seed: string, size: number) => {
  const bytes = seededBytes(seed, size)
  return { meta: { id: hashBytes(bytes), kind: BLOB_DATA, codec: 0, rawLength: size }, bytes }
}

describe("OpenPack", () => {
  it("seals into a pack that parses back to its entries and bytes", () => {
    const pack = new OpenPack(new PackBuffers(64 * 1024))
    const blobs = [blob("a", 10_000), blob("b", 1), blob("c", 50_000)]
    for (const b of blobs) pack.append(b.meta, b.bytes)
    const sealed = pack.seal()
    const entries = parsePack(sealed, "test")
    expect(entries.map((e) => e.id)).toEqual(blobs.map((b) => b.meta.id))
    entries.forEach((e, i) => expect(Buffer.from(sealed.subarray(e.offset, e.offset + e.length)).equals(blobs[i]!.bytes)).toBe(true))
  })

  it("grows for a blob larger than its buffer; views taken before stay valid", () => {
    const pack = new OpenPack(new PackBuffers(4096))
    const small = blob("small", 3000)
    const view = pack.append(small.meta, small.bytes).bytes
    const huge = blob("huge", 3 << 20) // more than packSize + slack
    const added = pack.append(huge.meta, huge.bytes)
    expect(Buffer.from(view).equals(small.bytes)).toBe(true)
    expect(Buffer.from(added.bytes).equals(huge.bytes)).toBe(true)
    expect(added.entry.offset).toBe(3000)
    expect(parsePack(pack.seal(), "test")).toHaveLength(2)
  })

  it("reuses a released buffer for the next pack, and keeps only buffers of the usual size", () => {
    const buffers = new PackBuffers(4096)
    const first = new OpenPack(buffers)
    const a = blob("a", 1000)
    const view = first.append(a.meta, a.bytes).bytes
    first.release()
    const second = new OpenPack(buffers)
    const b = blob("b", 1000)
    second.append(b.meta, b.bytes)
    // the same memory: a view of a released pack must not be used, which is why the store copies pending bytes it hands out
    expect(Buffer.from(view).equals(b.bytes)).toBe(true)
    const grown = new OpenPack(buffers)
    const big = blob("big", 3 << 20)
    grown.append(big.meta, big.bytes)
    grown.release()
    second.release()
    expect(buffers.take(1).length).toBe(4096 + (1 << 20))
    expect(buffers.take(1).length).toBe(4096 + (1 << 20)) // a fresh one: the grown buffer was not kept
  })

  it("lets its free buffers go when trimmed (a store that flushed holds no pack memory)", () => {
    const buffers = new PackBuffers(4096)
    const first = buffers.take(1)
    buffers.give(first)
    expect(buffers.take(1)).toBe(first)
    buffers.give(first)
    buffers.trim()
    expect(buffers.take(1)).not.toBe(first)
  })

  it("gives every entry the same hidden class (a first snapshot of 100,000 files keeps ~100,000 of them)", () => {
    // entries spread from their argument each had a shape of their own: ~350 bytes more apiece and work
    // for every collection (a first snapshot of 100,000 small files peaked ~95 MiB higher)
    const same = runWithNatives(`
      const { PackBuffers } = await build("store/open-pack.js")
      const pack = new PackBuffers(1 << 20).open()
      const entries = []
      for (let i = 0; i < 1000; i++) {
        const meta = { id: String(i).padStart(64, "0"), kind: 1, codec: i % 3, rawLength: 10 + i }
        entries.push(pack.append(meta, new Uint8Array(10)).entry)
      }
      console.log(entries.filter((e) => %HaveSameMap(e, entries[0])).length)`)
    expect(Number(same)).toBe(1000)
  })
})

/** An ObjectWriter in memory, which can be told to fail its nth write. */
function memoryWriter(failAt = -1) {
  const state = { bytes: Buffer.alloc(0), writes: 0, committed: undefined as string | undefined, closed: false }
  const writer: ObjectWriter = {
    async write(bytes) {
      await new Promise((r) => setImmediate(r))
      if (state.writes++ === failAt) throw new Error("disk full")
      state.bytes = Buffer.concat([state.bytes, bytes])
    },
    async read(offset, length) {
      return Buffer.from(state.bytes.subarray(offset, offset + length))
    },
    async commit(key) {
      state.committed = key
    },
    async close() {
      state.closed = true
    },
  }
  return { state, writer }
}

describe("StreamedPack", () => {
  it("writes, as it fills, the very pack an OpenPack holds whole, under the same id, and reads every blob back at any point", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 1_500_000 }), { minLength: 1, maxLength: 8 }), async (sizes) => {
        const blobs = sizes.map((n, i) => blob(`s${i}-${n}`, n))
        const { state, writer } = memoryWriter()
        const streamed = new StreamedPack(new PackBuffers(1 << 20), async () => writer)
        const whole = new OpenPack(new PackBuffers(1 << 20))
        for (const b of blobs) {
          const { entry } = streamed.append(b.meta, b.bytes)
          whole.append(b.meta, b.bytes)
          // read back at once: from the stage, across a stage handed over, or from the writer
          expect(Buffer.from(await streamed.read(entry)).equals(b.bytes)).toBe(true)
        }
        let put: { key: string; bytes: Buffer } | undefined
        const wholeId = await whole.write(async (key, bytes) => void (put = { key, bytes: Buffer.from(bytes) }))
        const id = await streamed.write(async () => expect.unreachable())
        expect(id).toBe(wholeId)
        expect(state.committed).toBe(packKey(id))
        expect(state.bytes.equals(put!.bytes)).toBe(true)
        // still readable after the commit, until released
        for (const [i, e] of streamed.entries.entries()) expect(Buffer.from(await streamed.read(e)).equals(blobs[i]!.bytes)).toBe(true)
        streamed.release()
        await new Promise((r) => setImmediate(r))
        expect(state.closed).toBe(true)
      }),
      { numRuns: 20 },
    )
  })

  it("a failed write fails the pack's write, and its release closes the writer (which drops the uncommitted file)", async () => {
    const { state, writer } = memoryWriter(1)
    const pack = new StreamedPack(new PackBuffers(1 << 20), async () => writer)
    for (let i = 0; i < 4; i++) pack.append(blob(`f${i}`, 700_000).meta, blob(`f${i}`, 700_000).bytes)
    await expect(pack.write(async () => {})).rejects.toThrow("disk full")
    expect(state.committed).toBeUndefined()
    pack.release()
    await new Promise((r) => setImmediate(r))
    expect(state.closed).toBe(true)
  })

  it("holds a few 1 MiB stages, not the pack: stages come back once written", async () => {
    const buffers = new PackBuffers(8 << 20)
    const { writer } = memoryWriter()
    const pack = new StreamedPack(buffers, async () => writer)
    const stages = new Set<Buffer>()
    const take = buffers.stage.bind(buffers)
    buffers.stage = () => {
      const s = take()
      stages.add(s)
      return s
    }
    for (let i = 0; i < 16; i++) {
      const b = blob(`m${i}`, 500_000)
      pack.append(b.meta, b.bytes)
      await new Promise((r) => setImmediate(r))
    }
    await pack.write(async () => {})
    expect(stages.size).toBeLessThanOrEqual(3)
    pack.release()
  })
})
