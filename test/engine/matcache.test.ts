import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { gearTable } from "../../engine/fastcdc.js"
import { MaterializationCache, type ExpectedContent } from "../../engine/matcache.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { hashBytes } from "../../store/ids.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

async function setup() {
  const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir() })
  const src = await tempDir()
  await buildTree(src, {
    "big.bin": { file: seededBytes("big", 700_000), mode: 0o755 },
    "text.txt": { file: textBytes("t", 400_000) },
    "small.txt": { file: "small" },
  })
  const { snapshot } = await createSnapshot(store, src)
  return { store, src, snapshot }
}

describe("materialization cache", () => {
  it("a later restore copies large files from the cache; copies are independent", async () => {
    const { store, src, snapshot } = await setup()
    const root = await tempDir()
    const first = await restoreSnapshot(store, snapshot, path.join(root, "a"))
    expect(first.fromCache).toBe(0)
    const second = await restoreSnapshot(store, snapshot, path.join(root, "b"))
    expect(second.fromCache).toBe(2)
    expect(await describeTree(path.join(root, "b"))).toEqual(await describeTree(src))
    await fsp.appendFile(path.join(root, "b", "big.bin"), "tampered")
    const third = await restoreSnapshot(store, snapshot, path.join(root, "c"))
    expect(third.fromCache).toBe(2)
    expect(await describeTree(path.join(root, "c"))).toEqual(await describeTree(src))
    expect(await describeTree(path.join(root, "a"))).toEqual(await describeTree(src))
    await store.close()
  })

  it("can be turned off", async () => {
    const { store, snapshot } = await setup()
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "a"))
    expect((await restoreSnapshot(store, snapshot, path.join(root, "b"), { cache: false })).fromCache).toBe(0)
    await store.close()
  })

  it("hardlink mode links read-only files that share the cache's inode", async () => {
    const { store, src, snapshot } = await setup()
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "a"), { link: true })
    const b = await restoreSnapshot(store, snapshot, path.join(root, "b"), { link: true })
    expect(b.fromCache).toBe(2)
    const [sa, sb] = await Promise.all([fsp.stat(path.join(root, "a", "big.bin")), fsp.stat(path.join(root, "b", "big.bin"))])
    expect(sa.ino).toBe(sb.ino)
    expect(sb.mode & 0o777).toBe(0o555)
    expect(await fsp.readFile(path.join(root, "b", "text.txt"))).toEqual(await fsp.readFile(path.join(src, "text.txt")))
    await store.close()
  })

  it("trims the least recently used entries beyond its limit", async () => {
    const dir = await tempDir()
    const cache = new MaterializationCache(dir, 1000)
    const files = await tempDir()
    for (const [i, name] of ["old", "mid", "new"].entries()) {
      const f = path.join(files, name)
      await fsp.writeFile(f, Buffer.alloc(600, i))
      await cache.add(name.padEnd(64, "0"), f, false)
      await new Promise((r) => setTimeout(r, 20))
    }
    const out = path.join(files, "out")
    expect(cache.place("old".padEnd(64, "0"), out, false, small(0))).toBe(true) // "old" is now the most recent
    const { bytes } = await cache.trim()
    expect(bytes).toBeLessThanOrEqual(1000)
    expect(cache.place("mid".padEnd(64, "0"), path.join(files, "m2"), false, small(1))).toBe(false)
    expect(cache.place("old".padEnd(64, "0"), path.join(files, "o2"), false, small(0))).toBe(true)
  })

  it("refuses and deletes an entry whose content does not match the chunk list", async () => {
    const dir = await tempDir()
    const cache = new MaterializationCache(dir)
    const files = await tempDir()
    const f = path.join(files, "f")
    await fsp.writeFile(f, Buffer.alloc(600, 0))
    const key = "k".padEnd(64, "0")
    await cache.add(key, f, false)
    // wrong size, then wrong content of the right size: both refused, dest removed
    expect(cache.place(key, path.join(files, "a"), false, { ...small(0), size: 601 })).toBe(false)
    expect(fs.existsSync(path.join(files, "a"))).toBe(false)
    await cache.add(key, f, false)
    expect(cache.place(key, path.join(files, "b"), false, small(1))).toBe(false)
    expect(fs.existsSync(path.join(files, "b"))).toBe(false)
    // the damaged entry is gone: even the right expectation now misses
    expect(cache.place(key, path.join(files, "c"), false, small(0))).toBe(false)
    await cache.add(key, f, false)
    expect(cache.place(key, path.join(files, "d"), false, small(0))).toBe(true)
    expect(await fsp.readFile(path.join(files, "d"))).toEqual(Buffer.alloc(600, 0))
  })
})

const PARAMS = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024 }
const GEAR = gearTable(Buffer.alloc(16, 7))

/** What a 600-byte file of one repeated byte must hold: one chunk, below the minimum size. */
function small(fill: number): ExpectedContent {
  return { size: 600, chunks: [hashBytes(Buffer.alloc(600, fill))], params: PARAMS, gear: GEAR }
}
