// A snapshot of many small files has the chunk readers read them in batches
// (readSmallFiles); a file a batch could not read, or saw other than the scan
// did, is read again on the main thread. The result must be the same as
// reading every file on the main thread.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it, vi } from "vitest"
import * as reader from "../../engine/chunk-reader.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

vi.mock("../../engine/chunk-reader.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../engine/chunk-reader.js")>()
  return { ...actual, readSmallFiles: vi.fn(actual.readSmallFiles) }
})
const readSmall = vi.mocked(reader.readSmallFiles)
const actual = await vi.importActual<typeof import("../../engine/chunk-reader.js")>("../../engine/chunk-reader.js")

afterEach(() => {
  readSmall.mockReset()
  readSmall.mockImplementation(actual.readSmallFiles)
})

const setup = () => tempDir().then((cacheDir) => Store.init({ backend: new MemoryObjectStore(), cacheDir, config: { packSize: 256 * 1024 } }))

/** 400 small files of 0 to ~90 KiB in a few directories, some with the same content. */
async function smallTree(): Promise<string> {
  const src = await tempDir()
  const spec: DirSpec = {}
  for (let d = 0; d < 4; d++) {
    const dir: DirSpec = {}
    for (let i = 0; i < 100; i++) {
      const n = (i * 7919 + d * 131) % 92_000
      dir[`f${i}.txt`] = { file: i % 10 === 9 ? textBytes("same", 3000) : i % 3 ? textBytes(`t${d}.${i}`, n) : seededBytes(`r${d}.${i}`, n) }
    }
    spec[`d${d}`] = { dir }
  }
  await buildTree(src, spec)
  return src
}

describe("small files read in batches", () => {
  it("are stored as the main thread would store them, and restore to the same tree", async () => {
    const src = await smallTree()
    const store = await setup()
    const { snapshot, warnings } = await createSnapshot(store, src)
    expect(warnings).toEqual([])
    expect(readSmall).toHaveBeenCalled()
    expect(readSmall.mock.calls.flatMap(([files]) => files).length).toBe(400)
    // every batch read fails: each file goes to the main thread's reading (--full: the cache is not used)
    readSmall.mockImplementation(async (files) => ({ files: files.map(() => ({ error: "no", code: "EIO" })), release: () => {} }))
    const again = await createSnapshot(store, src, { full: true })
    expect(again.warnings).toEqual([])
    expect(again.readBytes).toBe(snapshot.stats.logicalBytes)
    expect(again.snapshot.tree).toBe(snapshot.tree)
    const dest = path.join(await tempDir(), "out")
    expect((await restoreSnapshot(store, snapshot, dest)).failed).toEqual([])
    expect(await describeTree(dest)).toEqual(await describeTree(src))
    await store.close()
  })

  it("a file that changed or vanished between the scan and its batch is read again, and reported as the main thread would", async () => {
    const src = await smallTree()
    const changed = path.join(src, "d1", "f5.txt")
    const vanished = path.join(src, "d2", "f6.txt")
    readSmall.mockImplementation(async (files, params, gear) => {
      if (files.some((f) => f.path === changed)) {
        await fsp.writeFile(changed, "rewritten, and shorter")
        await fsp.rm(vanished)
      }
      return actual.readSmallFiles(files, params, gear)
    })
    const store = await setup()
    const { snapshot, warnings } = await createSnapshot(store, src)
    expect(warnings).toEqual([{ path: "d2/f6.txt", reason: "vanished before it was read" }])
    const dest = path.join(await tempDir(), "out")
    expect((await restoreSnapshot(store, snapshot, dest)).failed).toEqual([])
    expect(await fsp.readFile(path.join(dest, "d1", "f5.txt"), "utf8")).toBe("rewritten, and shorter")
    // (d2's mtime changed with the deletion, after the scan had seen it)
    expect(await describeTree(dest, { mtimes: false })).toEqual(await describeTree(src, { mtimes: false }))
    await store.close()
  })

  it("property: for any tree of small files, the batches store what the main thread would (same root tree), and the restore is the tree", async () => {
    // sizes around the chunker's minimum and the batches' limits (a MiB, 128 files), empty files, duplicates
    const size = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 32_000, max: 33_600 }), fc.integer({ min: 60_000, max: 262_144 }))
    const file = fc.record({ size, kind: fc.constantFrom("text", "random", "dup") })
    await fc.assert(
      fc.asyncProperty(fc.array(file, { minLength: 256, maxLength: 300 }), fc.integer({ min: 1, max: 6 }), async (files, dirs) => {
        const src = await tempDir()
        const spec: DirSpec = {}
        files.forEach((f, i) => {
          const dir = `d${i % dirs}`
          const body = f.kind === "dup" ? textBytes("dup", f.size) : f.kind === "text" ? textBytes(`t${i}`, f.size) : seededBytes(`r${i}`, f.size)
          const sub = (spec[dir] ??= { dir: {} }) as { dir: DirSpec }
          sub.dir[`f${i}`] = { file: body }
        })
        await buildTree(src, spec)
        readSmall.mockImplementation(actual.readSmallFiles)
        const store = await setup()
        const calls = readSmall.mock.calls.length
        const { snapshot, warnings } = await createSnapshot(store, src)
        expect(warnings).toEqual([])
        expect(readSmall.mock.calls.length).toBeGreaterThan(calls)
        readSmall.mockImplementation(async (asked) => ({ files: asked.map(() => ({ error: "no", code: "EIO" })), release: () => {} }))
        const again = await createSnapshot(store, src, { full: true })
        expect(again.snapshot.tree).toBe(snapshot.tree)
        const dest = path.join(await tempDir(), "out")
        expect((await restoreSnapshot(store, snapshot, dest)).failed).toEqual([])
        expect(await describeTree(dest)).toEqual(await describeTree(src))
        await store.close()
      }),
      { numRuns: 4 },
    )
  })

  it("a few small files are read on the main thread, without a reader", async () => {
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "a" }, "b.txt": { file: textBytes("b", 70_000) } })
    const store = await setup()
    const { warnings } = await createSnapshot(store, src)
    expect(warnings).toEqual([])
    expect(readSmall).not.toHaveBeenCalled()
    await store.close()
  })
})
