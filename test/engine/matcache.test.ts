import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it, vi } from "vitest"
import { contentMatches, MaterializationCache, type ExpectedContent } from "../../engine/matcache.js"
import { restoreSnapshot, restoreSnapshotMany, type RestoreResult } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { hashBytes } from "../../store/ids.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

async function setup(extra: DirSpec = {}) {
  const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
  const src = await tempDir()
  await buildTree(src, {
    "big.bin": { file: seededBytes("big", 700_000), mode: 0o755 },
    "text.txt": { file: textBytes("t", 400_000) },
    "small.txt": { file: "small" },
    ...extra,
  })
  const { snapshot } = await createSnapshot(store, src)
  return { store, src, snapshot }
}

/** Restores run with writer threads and inline. */
const WRITERS = [
  ["writer threads", true],
  ["inline", false],
] as const

describe("materialization cache", () => {
  it.each(WRITERS)("a later restore copies large files from the cache; copies are independent (%s)", async (_label, writers) => {
    const { store, src, snapshot } = await setup()
    const root = await tempDir()
    const first = await restoreSnapshot(store, snapshot, path.join(root, "a"), { writers })
    expect(first.fromCache).toBe(0)
    const second = await restoreSnapshot(store, snapshot, path.join(root, "b"), { writers })
    expect(second.fromCache).toBe(2)
    expect(await describeTree(path.join(root, "b"))).toEqual(await describeTree(src))
    await fsp.appendFile(path.join(root, "b", "big.bin"), "tampered")
    const third = await restoreSnapshot(store, snapshot, path.join(root, "c"), { writers })
    expect(third.fromCache).toBe(2)
    expect(await describeTree(path.join(root, "c"))).toEqual(await describeTree(src))
    expect(await describeTree(path.join(root, "a"))).toEqual(await describeTree(src))
    await store.close()
  })

  it.each(WRITERS)("a damaged entry is dropped and its file rebuilt from packs, with no temp file left (%s)", async (_label, writers) => {
    const { store, src, snapshot } = await setup()
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "a"), { writers })
    const entries = path.join(store.cacheDir, "files")
    const damaged: string[] = []
    for (const sub of await fsp.readdir(entries)) {
      for (const name of await fsp.readdir(path.join(entries, sub))) {
        const file = path.join(entries, sub, name)
        if ((await fsp.stat(file)).size !== 700_000) continue
        const fd = await fsp.open(file, "r+")
        await fd.write(Buffer.from("x"), 0, 1, 350_000)
        await fd.close()
        damaged.push(file)
      }
    }
    expect(damaged).toHaveLength(1)
    const b = await restoreSnapshot(store, snapshot, path.join(root, "b"), { writers })
    expect(b.fromCache).toBe(1)
    expect(await describeTree(path.join(root, "b"))).toEqual(await describeTree(src))
    expect((await fsp.readdir(path.join(root, "b"))).sort()).toEqual(["big.bin", "small.txt", "text.txt"])
    // rebuilt from packs, then cached again: the next restore copies both
    expect((await restoreSnapshot(store, snapshot, path.join(root, "c"), { writers })).fromCache).toBe(2)
    await store.close()
  })

  it.each(WRITERS)("a fan-out rebuilds large files from packs once for every destination, each its own copy (%s)", async (_label, writers) => {
    // in a fan-out a large file's chunks are decoded once and written into each destination
    // by both writers: copying a cache entry N times would queue in one writer
    const { store, src, snapshot } = await setup({ "twin.bin": { file: seededBytes("big", 700_000), mode: 0o600 } })
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "first"), { writers })
    const dests = ["a", "b", "c"].map((n) => path.join(root, n))
    const outcomes = await restoreSnapshotMany(store, snapshot, dests.map((dest) => ({ dest })), { writers })
    const want = await describeTree(src)
    for (const [i, o] of outcomes.entries()) {
      expect(o.status).toBe("fulfilled")
      expect((o as PromiseFulfilledResult<RestoreResult>).value).toMatchObject({ fromCache: 0, sharedWith: 2 })
      expect(await describeTree(dests[i]!)).toEqual(want)
    }
    const inodes = new Set<number>()
    for (const d of [path.join(root, "first"), ...dests]) for (const f of ["big.bin", "twin.bin", "text.txt"]) inodes.add((await fsp.stat(path.join(d, f))).ino)
    expect(inodes.size).toBe(12)
    await fsp.appendFile(path.join(dests[0]!, "big.bin"), "tampered")
    for (const d of dests.slice(1)) expect(await describeTree(d)).toEqual(want)
    await store.close()
  })

  it("equal files in one restore read their cache entry once: the others are copies of the checked copy", async () => {
    const { store, src, snapshot } = await setup({ "twin.bin": { file: seededBytes("big", 700_000), mode: 0o600 } })
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "first"), { writers: false })
    const entries = path.join(store.cacheDir, "files")
    const copy = vi.spyOn(fs, "copyFileSync")
    try {
      const r = await restoreSnapshot(store, snapshot, path.join(root, "again"), { writers: false })
      expect(r.fromCache).toBe(3)
      const sources = copy.mock.calls.map(([from]) => String(from))
      // two entries (big.bin and its twin share one), each copied out once; twin.bin copied from big.bin's checked copy
      expect(sources.filter((f) => f.startsWith(entries))).toHaveLength(2)
      expect(sources).toHaveLength(3)
    } finally {
      copy.mockRestore()
    }
    expect(await describeTree(path.join(root, "again"))).toEqual(await describeTree(src))
    await store.close()
  })

  it("a fan-out in hardlink mode links every destination's large files to the cache entry", async () => {
    const { store, src, snapshot } = await setup()
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "first"), { link: true })
    const dests = ["a", "b"].map((n) => path.join(root, n))
    const outcomes = await restoreSnapshotMany(store, snapshot, dests.map((dest) => ({ dest })), { link: true })
    for (const o of outcomes) expect((o as PromiseFulfilledResult<RestoreResult>).value.fromCache).toBe(2)
    const inodes = await Promise.all([path.join(root, "first"), ...dests].map(async (d) => (await fsp.stat(path.join(d, "big.bin"))).ino))
    expect(new Set(inodes).size).toBe(1)
    for (const d of dests) expect(await fsp.readFile(path.join(d, "text.txt"))).toEqual(await fsp.readFile(path.join(src, "text.txt")))
    await store.close()
  })

  it("a restore stopped by its signal leaves nothing writing behind it, and no temp file", async () => {
    const many: DirSpec = {}
    for (let i = 0; i < 200; i++) many[`f${i}`] = { file: seededBytes(`f${i}`, 3000) }
    const { store, snapshot } = await setup({ many: { dir: many } })
    const root = await tempDir()
    await restoreSnapshot(store, snapshot, path.join(root, "warm"))
    for (const [name, cache] of [["cold", false], ["warm-again", true]] as const) {
      const dest = path.join(root, name)
      const ctl = new AbortController()
      const err = await restoreSnapshot(store, snapshot, dest, {
        cache,
        signal: ctl.signal,
        onProgress: (p) => {
          if (p.filesDone >= 1) ctl.abort()
        },
      }).catch((e: unknown) => e)
      expect((err as { code?: string }).code).toBe("ABORTED")
      const listing = async () => (await fsp.readdir(dest, { recursive: true })).sort().join("\n")
      const before = await listing()
      expect(before).not.toContain(".cairn-") // no temp file of a file left unfinished
      await new Promise((r) => setTimeout(r, 300))
      expect(await listing()).toBe(before)
    }
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

describe("contentMatches", () => {
  it("checks every chunk's byte range, so a damaged or shifted range is refused", async () => {
    const dir = await tempDir()
    const f = path.join(dir, "f")
    const parts = [seededBytes("a", 70_000), seededBytes("b", 5), seededBytes("c", 300_000)]
    await fsp.writeFile(f, Buffer.concat(parts))
    const expect3: ExpectedContent = { size: 370_005, chunks: parts.map(hashBytes), lengths: parts.map((p) => p.length) }
    expect(contentMatches(f, expect3)).toBe(true)
    // same total, other boundaries
    expect(contentMatches(f, { ...expect3, lengths: [70_001, 4, 300_000] })).toBe(false)
    // one chunk too few, or lengths that do not add up to the size
    expect(contentMatches(f, { ...expect3, chunks: expect3.chunks.slice(0, 2), lengths: expect3.lengths.slice(0, 2) })).toBe(false)
    expect(contentMatches(f, { ...expect3, lengths: [70_000, 5, 299_999] })).toBe(false)
    // one byte changed in the middle of the last chunk
    const fd = fs.openSync(f, "r+")
    fs.writeSync(fd, Buffer.from([parts[2]![150_000]! ^ 1]), 0, 1, 70_005 + 150_000)
    fs.closeSync(fd)
    expect(contentMatches(f, expect3)).toBe(false)
  })
})

/** What a 600-byte file of one repeated byte must hold: one chunk. */
function small(fill: number): ExpectedContent {
  return { size: 600, chunks: [hashBytes(Buffer.alloc(600, fill))], lengths: [600] }
}
