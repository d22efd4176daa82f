// Space accounting against brute force: each snapshot's blob set computed by
// flattening its trees, stored sizes from the index.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { diskUsage, repositoryStats, uniqueBytes } from "../../engine/accounting.js"
import { createSnapshot } from "../../engine/snapshot.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { flattenTree, resolvePath } from "../../engine/walk.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import type { BlobId } from "../../store/ids.js"
import { Store } from "../../store/store.js"
import { buildTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir } from "../helpers.js"

async function newStore(): Promise<Store> {
  return Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
}

async function stored(store: Store, id: BlobId): Promise<number> {
  const [loc] = await store.locateMany([id])
  if (!loc || loc === "pending") throw new Error(`${id} not indexed`)
  return loc.length
}

async function treeAt(store: Store, s: SnapshotRecord, p: string): Promise<BlobId> {
  const e = await resolvePath(store, s.tree, p)
  if (e.type !== "dir") throw new Error(`${p} is not a dir`)
  return e.tree
}

/** Every blob (trees and chunks) one snapshot references. */
async function blobSet(store: Store, s: SnapshotRecord): Promise<Set<BlobId>> {
  const out = new Set<BlobId>([s.tree])
  for (const { entry } of await flattenTree(store, s.tree)) {
    if (entry.type === "dir") out.add(entry.tree)
    else if (entry.type === "file") for (const c of entry.chunks ?? []) out.add(c)
  }
  return out
}

// Random data is stored raw (the codec skips incompressible blobs), and files
// below the chunker's minimum (16 KiB) are one chunk: stored == raw size.
const blob = (name: string, size: number) => seededBytes(name, size)

describe("uniqueBytes", () => {
  it("is the stored size of the files and trees only that snapshot has", async () => {
    const store = await newStore()
    const src = await tempDir()
    const common: DirSpec = {}
    for (let i = 0; i < 5; i++) common[`c${i}.bin`] = { file: blob(`common${i}`, 3000 + i) }
    await buildTree(src, { common: { dir: common }, "only-a.bin": { file: blob("a", 7001) }, sub: { dir: { "x.bin": { file: blob("xa", 5003) } } } })
    const a = (await createSnapshot(store, src)).snapshot
    await fsp.rm(path.join(src, "only-a.bin"))
    await fsp.writeFile(path.join(src, "only-b.bin"), blob("b", 6007))
    await fsp.writeFile(path.join(src, "sub", "x.bin"), blob("xb", 4001))
    const b = (await createSnapshot(store, src)).snapshot
    expect(await treeAt(store, a, "common")).toBe(await treeAt(store, b, "common"))

    const unique = await uniqueBytes(store, [a.id, b.id])
    const trees = async (s: SnapshotRecord) => (await stored(store, s.tree)) + (await stored(store, await treeAt(store, s, "sub")))
    expect(unique.get(a.id)).toBe(7001 + 5003 + (await trees(a)))
    expect(unique.get(b.id)).toBe(6007 + 4001 + (await trees(b)))
    // a third snapshot identical to b: now nothing is unique to b
    const c = (await createSnapshot(store, src)).snapshot
    expect(c.tree).toBe(b.tree)
    const again = await uniqueBytes(store, [a.id, b.id, c.id])
    expect([again.get(a.id), again.get(b.id), again.get(c.id)]).toEqual([unique.get(a.id), 0, 0])
    await store.close()
  })

  it("agrees with brute force over random snapshots of a shared pool of files", async () => {
    const pool = Array.from({ length: 10 }, (_, i) => blob(`pool${i}`, 500 + i * 997))
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.record({ file: fc.integer({ min: 0, max: 9 }), dir: fc.constantFrom("", "d1", "d1/d2", "e") }), { maxLength: 8 }), {
          minLength: 1,
          maxLength: 4,
        }),
        async (snaps) => {
          const store = await newStore()
          const records: SnapshotRecord[] = []
          for (const files of snaps) {
            const src = await tempDir()
            await fsp.mkdir(src, { recursive: true })
            for (const [i, f] of files.entries()) {
              await fsp.mkdir(path.join(src, f.dir), { recursive: true })
              await fsp.writeFile(path.join(src, f.dir, `f${i % 3}-${f.file}`), pool[f.file]!)
            }
            records.push((await createSnapshot(store, src)).snapshot)
            await fsp.rm(src, { recursive: true, force: true })
          }
          const sets = await Promise.all(records.map((r) => blobSet(store, r)))
          const refs = new Map<BlobId, number>()
          for (const set of sets) for (const id of set) refs.set(id, (refs.get(id) ?? 0) + 1)
          const unique = await uniqueBytes(store, records.map((r) => r.id))
          for (const [i, r] of records.entries()) {
            let want = 0
            for (const id of sets[i]!) if (refs.get(id) === 1) want += await stored(store, id)
            expect(unique.get(r.id)).toBe(want)
          }
          let referenced = 0
          for (const id of refs.keys()) referenced += await stored(store, id)
          const stats = await repositoryStats(store)
          expect(stats).toMatchObject({ snapshots: records.length, referencedBytes: referenced, logicalBytes: records.reduce((n, r) => n + r.sizeBytes, 0) })
          await store.close()
        },
      ),
      { numRuns: 12 },
    )
  })
})

describe("diskUsage", () => {
  it("gives logical, stored and unique bytes for the root and each directory down to maxDepth", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, {
      "top.bin": { file: blob("top", 1000) },
      shared: { dir: { "s.bin": { file: blob("s", 2000) }, deeper: { dir: { deepest: { dir: { "d.bin": { file: blob("d", 300) } } } } } } },
      mine: { dir: { "m.bin": { file: blob("m", 4000) }, "h.bin": { hardlink: "top.bin" } } },
    })
    const a = (await createSnapshot(store, src)).snapshot
    await fsp.rm(path.join(src, "mine"), { recursive: true })
    const b = (await createSnapshot(store, src)).snapshot
    const rows = await diskUsage(store, a)
    expect(rows.map((r) => r.path)).toEqual(["/", "/mine", "/shared", "/shared/deeper"])
    const byPath = new Map(rows.map((r) => [r.path, r]))
    const mineTree = await treeAt(store, a, "mine")
    expect(byPath.get("/")).toEqual({ path: "/", logicalBytes: a.sizeBytes, storedBytes: expect.any(Number), uniqueBytes: (await uniqueBytes(store, [a.id])).get(a.id) })
    expect(a.sizeBytes).toBe(1000 + 2000 + 300 + 4000) // the hardlink counts once
    // mine/h.bin sorts before top.bin, so it is the hardlink group's first member and
    // holds the content; that chunk is not unique, the second snapshot still has top.bin
    expect(byPath.get("/mine")).toEqual({
      path: "/mine",
      logicalBytes: 5000,
      storedBytes: 5000 + (await stored(store, mineTree)),
      uniqueBytes: 4000 + (await stored(store, mineTree)),
    })
    expect(byPath.get("/shared")).toMatchObject({ logicalBytes: 2300, uniqueBytes: 0 })
    const shared = await treeAt(store, a, "shared")
    const deeper = await treeAt(store, a, "shared/deeper")
    const deepest = await treeAt(store, a, "shared/deeper/deepest")
    expect(byPath.get("/shared")!.storedBytes).toBe(2000 + 300 + (await stored(store, shared)) + (await stored(store, deeper)) + (await stored(store, deepest)))
    expect((await diskUsage(store, b, { maxDepth: 0 })).map((r) => r.path)).toEqual(["/"])
    expect((await diskUsage(store, b, { maxDepth: 5 })).map((r) => r.path)).toEqual(["/", "/shared", "/shared/deeper", "/shared/deeper/deepest"])
    await store.close()
  })
})

describe("repositoryStats", () => {
  it("counts snapshots and packs, and duplicate snapshots give a dedup ratio above 1", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.bin": { file: blob("a", 40_000) }, "b.bin": { file: blob("b", 30_000) } })
    const empty = await repositoryStats(store)
    expect(empty).toMatchObject({ snapshots: 0, packs: 0, logicalBytes: 0, referencedBytes: 0, dedupRatio: 0 })
    const first = (await createSnapshot(store, src)).snapshot
    const one = await repositoryStats(store)
    expect(one.dedupRatio).toBeLessThan(1) // random data: nothing to gain, a little overhead
    expect(one.physicalBytes).toBeGreaterThan(one.referencedBytes)
    for (let i = 0; i < 3; i++) await createSnapshot(store, src)
    const stats = await repositoryStats(store)
    const packs = await store.backend.list("data/")
    expect(stats).toMatchObject({ snapshots: 4, packs: packs.length, logicalBytes: 4 * 70_000, referencedBytes: one.referencedBytes })
    expect(stats.physicalBytes).toBeGreaterThanOrEqual(packs.reduce((n, p) => n + p.size, 0))
    expect(stats.dedupRatio).toBeGreaterThan(3.5)
    expect(stats.dedupRatio).toBeCloseTo(stats.logicalBytes / stats.physicalBytes)
    expect((await uniqueBytes(store, [first.id])).get(first.id)).toBe(0)
    await store.close()
  })
})
