// A store told that many blobs will come starts its compressor threads at
// once (store/codec.ts, warmCompressor), unless it stores blobs raw. A file
// of its own: the compressor pool is per process (per test file here).
import { describe, expect, it } from "vitest"
import { codecPool } from "../../store/codec-pool.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { tempDir } from "../helpers.js"

const newStore = async (codec: "none" | "brotli") => Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { codec } })

describe("a store expecting many blobs", () => {
  it("starts its compressors at once, before any blob; not when it stores blobs raw", async () => {
    const raw = await newStore("none")
    raw.expectBlobs()
    expect(codecPool().started).toBe(0)
    await raw.close()
    const store = await newStore("brotli")
    expect(codecPool().started).toBe(0)
    store.expectBlobs()
    expect(codecPool().started).toBe(codecPool().size)
    // and blobs are stored as before: a small one, which would have been compressed inline, compressed in the pool
    const text = Buffer.from("a compressible line of text\n".repeat(100))
    const put = await store.putBlob(1, text)
    expect(put.storedLength).toBeLessThan(text.length)
    expect(codecPool().counts.batches).toBe(1)
    await store.flush()
    const [loc] = await store.locateMany([put.id])
    expect(loc).toBeDefined()
    expect(Buffer.from(await store.readBlob(put.id, loc as Exclude<typeof loc, "pending" | undefined>)).equals(text)).toBe(true)
    await store.close()
    await codecPool().close()
  })
})
