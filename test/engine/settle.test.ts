// Settling (statcache.ts, Settler): a directory unchanged since the stat
// cache was written, with everything below it, is not walked; the scan takes
// its counts from the cache, and a snapshot its tree. Whatever is settled,
// the scan's counts and the snapshot are those a walk of everything gives.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { scanTree, type ScanNode, type ScanOptions, type ScanResult } from "../../engine/scan.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { dirCacheKey, loadStatCache, type StatCacheView, type SubtreeCounts } from "../../engine/statcache.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { buildTree, type DirSpec } from "../fixtures.js"
import { pastTick, seededBytes, tempDir } from "../helpers.js"
import { dirSpec, mutate } from "./mutations.js"

async function newStore(): Promise<Store> {
  return Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
}

/** The workspace's cache as its last snapshot left it. */
const cacheOf = (store: Store, src: string) => loadStatCache(store.cacheDir, dirCacheKey(path.resolve(src)))

/** A scan that settles what the cache can, as a snapshot's does, with the settler's lstat calls counted by path. */
async function settledScan(src: string, cache: StatCacheView, opts: ScanOptions = {}): Promise<{ scan: ScanResult; looks: Map<string, number> }> {
  const looks = new Map<string, number>()
  const scan = await scanTree(src, {
    ...opts,
    listed: (rel, st, at) => cache.listing(rel, st, at),
    settle: (probe) =>
      cache.settler({
        ...probe,
        lstat: (full) => {
          looks.set(full, (looks.get(full) ?? 0) + 1)
          return probe.lstat(full)
        },
      }),
  })
  return { scan, looks }
}

/** What the scan counts below node (a walk of everything). */
function countsBelow(node: ScanNode): SubtreeCounts {
  const out = { files: 0, dirs: 0, symlinks: 0, bytes: 0 }
  for (const c of node.children ?? []) {
    if (c.type === "dir") {
      const sub = countsBelow(c)
      out.files += sub.files
      out.dirs += sub.dirs + 1
      out.symlinks += sub.symlinks
      out.bytes += sub.bytes
    } else if (c.type === "symlink") out.symlinks++
    else {
      out.files++
      if (c.linkTo === undefined) out.bytes += c.size
    }
  }
  return out
}

/**
 * Checks a scan that settled directories against one that walked everything:
 * each node not below a settled directory as the walk has it, each settled
 * directory's counts as the walk counts below it. Returns the settled ones' paths.
 */
function expectSame(settled: ScanNode, walked: ScanNode, out: string[] = []): string[] {
  const { children, settled: below, cacheAt, ...rest } = settled
  const { children: walkedChildren, settled: none, cacheAt: _, ...walkedRest } = walked
  expect(none).toBeUndefined()
  if (below !== undefined) {
    expect(children).toBeUndefined()
    expect(below).toEqual(countsBelow(walked))
    out.push(settled.rel)
    return out
  }
  expect(rest).toEqual(walkedRest)
  expect(children?.map((c) => c.name)).toEqual(walkedChildren?.map((c) => c.name))
  children?.forEach((c, i) => expectSame(c, walkedChildren![i]!, out))
  return out
}

function expectSameScan(settled: ScanResult, walked: ScanResult): string[] {
  const { root, ...totals } = settled
  const { root: walkedRoot, ...walkedTotals } = walked
  expect(totals).toEqual(walkedTotals)
  return expectSame(root, walkedRoot).sort()
}

const spec: DirSpec = {
  "top.txt": { file: "top" },
  link: { symlink: "top.txt" },
  empty: { dir: {} },
  a: { dir: { "one.bin": { file: seededBytes("one", 70_000) }, b: { dir: { c: { dir: { "deep.txt": { file: "deep" } } }, "b.txt": { file: "b" } } }, z: { dir: { "z.txt": { file: "z" } } } } },
  m: { dir: { n: { dir: { "n.txt": { file: "n" }, to: { symlink: "../n" } } } } },
}

/** A store, and a workspace of `spec` (with `more` done to it) snapshotted into it a tick after it was made. */
async function snapshotted(more?: (src: string) => Promise<unknown>) {
  const store = await newStore()
  const src = await tempDir()
  await buildTree(src, spec)
  await more?.(src)
  await pastTick()
  const first = await createSnapshot(store, src)
  return { store, src, first }
}

describe("settling unchanged directories", () => {
  it("an unchanged tree settles at its root: no node below it, the counts a walk gives, each entry looked at once", async () => {
    const { store, src } = await snapshotted()
    const { scan, looks } = await settledScan(src, await cacheOf(store, src))
    const walked = await scanTree(src)
    expect(expectSameScan(scan, walked)).toEqual([""])
    expect(scan.root.settled).toEqual({ files: 6, dirs: 7, symlinks: 2, bytes: 3 + 70_000 + 4 + 1 + 1 + 1 })
    // every entry below the root, once
    expect(looks.size).toBe(scan.files + scan.dirs + scan.symlinks)
    expect(Math.max(...looks.values())).toBe(1)
    await store.close()
  })

  it("a change leaves unsettled only the directories above it; no entry is looked at twice", async () => {
    const { store, src } = await snapshotted()
    await fsp.writeFile(path.join(src, "a/b/c/deep.txt"), "deeper")
    const { scan, looks } = await settledScan(src, await cacheOf(store, src))
    // the edited file's directory, and those above it, are walked; the rest is settled
    expect(expectSameScan(scan, await scanTree(src))).toEqual(["a/z", "empty", "m"])
    expect(Math.max(...looks.values())).toBe(1)
    await store.close()
  })

  it("a file with a second link is not settled, nor any directory above it: its group is the walk's", async () => {
    const { store, src } = await snapshotted((at) => fsp.link(path.join(at, "a/b/b.txt"), path.join(at, "m/n/linked.txt")))
    const { scan } = await settledScan(src, await cacheOf(store, src))
    const walked = await scanTree(src)
    expect(expectSameScan(scan, walked)).toEqual(["a/b/c", "a/z", "empty"])
    await store.close()
  })

  it("a directory the scan leaves out is not settled, nor any directory above it; it is reported as the walk reports it", async () => {
    const { store, src } = await snapshotted()
    const st = await fsp.lstat(path.join(src, "m/n"), { bigint: true })
    const skipDirs = { ids: new Set([`${st.dev}:${st.ino}`]), reason: "skipped here" }
    const { scan } = await settledScan(src, await cacheOf(store, src), { skipDirs })
    const walked = await scanTree(src, { skipDirs })
    expect(walked.warnings).toEqual([{ path: "m/n", reason: "skipped here" }])
    expect(expectSameScan(scan, walked)).toEqual(["a", "empty"])
    await store.close()
  })

  it("the next cache keeps a settled directory whole: after a change is snapshotted, an unchanged tree settles at its root again", async () => {
    const { store, src, first } = await snapshotted()
    await fsp.writeFile(path.join(src, "m/n/n.txt"), "changed")
    await pastTick()
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    const full = await createSnapshot(store, src, { full: true, cacheKey: "full-read-check" })
    expect(second.snapshot.tree).toBe(full.snapshot.tree)
    expect(second.snapshot.stats).toEqual({ ...full.snapshot.stats, addedBytes: second.snapshot.stats.addedBytes })
    expect(second).toMatchObject({ readBytes: "changed".length, reusedFiles: 5 })
    const { scan } = await settledScan(src, await cacheOf(store, src))
    expect(expectSameScan(scan, await scanTree(src))).toEqual([""])
    const third = await createSnapshot(store, src, { parent: second.snapshot })
    expect(third).toMatchObject({ readBytes: 0, reusedFiles: 6, reusedTrees: 8 })
    expect(third.snapshot.tree).toBe(second.snapshot.tree)
    expect(third.snapshot.stats).toEqual({ ...second.snapshot.stats, addedBytes: 0 })
    await store.close()
  })

  it("after any edits, a scan that settles gives what a walk of everything gives (random trees)", async () => {
    const store = await newStore()
    let settledSome = 0
    let walkedSome = 0
    await fc.assert(
      fc.asyncProperty(dirSpec, fc.array(fc.record({ op: fc.integer({ min: 0, max: 8 }), pick: fc.nat() }), { maxLength: 3 }), async (tree, ops) => {
        const src = await tempDir()
        await buildTree(src, { keep: { dir: { sub: { dir: tree } } }, edit: { dir: tree } })
        await pastTick()
        await createSnapshot(store, src)
        for (const [i, { op, pick }] of ops.entries()) await mutate(path.join(src, "edit"), op, pick, i)
        const settled = expectSameScan((await settledScan(src, await cacheOf(store, src))).scan, await scanTree(src))
        if (settled.length > 0) settledSome++
        if (!settled.includes("")) walkedSome++
        await fsp.rm(src, { recursive: true, force: true })
      }),
      { numRuns: 40 },
    )
    expect(settledSome).toBeGreaterThan(10)
    expect(walkedSome).toBeGreaterThan(10)
    await store.close()
  })
})
