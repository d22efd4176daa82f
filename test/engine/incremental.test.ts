// Incremental snapshots (engine/statcache.ts): whatever the cache lets a
// snapshot skip, the result must be exactly what a full re-read gives.
import { createHash } from "node:crypto"
import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it, vi } from "vitest"
import { diffTrees } from "../../engine/diff.js"
import { collectGarbage } from "../../engine/gc.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot, type SnapshotOptions } from "../../engine/snapshot.js"
import { chunkLengths, gearTable } from "../../engine/fastcdc.js"
import { dirCacheKey, tooRecent } from "../../engine/statcache.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { pastTick, seededBytes, tempDir } from "../helpers.js"
import { dirSpec, mutate } from "./mutations.js"

async function newStore(): Promise<Store> {
  return Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
}

/** A snapshot that reads everything and keeps its cache apart from the workspace's own. */
const fullRead = (store: Store, dir: string, opts: SnapshotOptions = {}) => createSnapshot(store, dir, { ...opts, full: true, cacheKey: "full-read-check" })

async function countDirs(root: string): Promise<number> {
  let n = 1
  for (const e of await fsp.readdir(root, { withFileTypes: true })) if (e.isDirectory()) n += await countDirs(path.join(root, e.name))
  return n
}

describe("incremental snapshots", () => {
  it("after any sequence of edits, give the tree and sizes a full re-read gives", async () => {
    const store = await newStore()
    let reusedSome = 0
    // directories whose names came from the cache instead of a readdir (only those edited more than a tick before a snapshot can)
    let listedFromCache = 0
    const readdir = vi.spyOn(fs, "readdirSync")
    await fc.assert(
      fc.asyncProperty(
        dirSpec,
        fc.array(fc.array(fc.record({ op: fc.integer({ min: 0, max: 8 }), pick: fc.nat() }), { maxLength: 3 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        async (spec, rounds, aged) => {
          const src = await tempDir()
          await buildTree(src, spec)
          if (aged) await pastTick()
          let parent = (await createSnapshot(store, src)).snapshot
          for (const [r, ops] of rounds.entries()) {
            for (const [i, { op, pick }] of ops.entries()) await mutate(src, op, pick, r * 10 + i)
            if (aged) await pastTick()
            readdir.mockClear()
            const inc = await createSnapshot(store, src, { parent })
            listedFromCache += (await countDirs(src)) - readdir.mock.calls.length
            const full = await fullRead(store, src)
            expect(inc.warnings).toEqual([])
            expect(inc.snapshot.tree).toBe(full.snapshot.tree)
            expect(full.snapshot.stats.addedBytes).toBe(0)
            expect(inc.snapshot.stats).toEqual({ ...full.snapshot.stats, addedBytes: inc.snapshot.stats.addedBytes })
            if (inc.reusedTrees > 0) reusedSome++
            parent = inc.snapshot
          }
          await fsp.rm(src, { recursive: true, force: true })
        },
      ),
      { numRuns: 40 },
    )
    expect(reusedSome).toBeGreaterThan(10) // the property exercised tree reuse, not only full rebuilds
    readdir.mockRestore()
    expect(listedFromCache).toBeGreaterThan(20) // and listings from the cache
    await store.close()
  })

  it("a directory unchanged since the last snapshot is not read again (its names are the cache's); one with a name made, removed or renamed is", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { a: { dir: { "1.txt": { file: "1" }, "2.txt": { file: "2" } } }, b: { dir: { c: { dir: { "3.txt": { file: "3" } } } } }, "top.txt": { file: "t" } })
    const readdir = vi.spyOn(fs, "readdirSync")
    try {
      await pastTick() // a directory changed within a tick of a snapshot's start is read again by the next
      let parent = (await createSnapshot(store, src)).snapshot
      expect(readdir.mock.calls.length).toBe(4)
      const listedNow = async (edit: () => Promise<void>, expected: string[]) => {
        await edit()
        await pastTick()
        readdir.mockClear()
        const inc = await createSnapshot(store, src, { parent })
        expect(readdir.mock.calls.map(([p]) => path.relative(src, String(p))).sort()).toEqual(expected)
        expect(inc.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
        parent = inc.snapshot
      }
      await listedNow(async () => {}, [])
      await listedNow(() => fsp.writeFile(path.join(src, "b/c/new.txt"), "new"), ["b/c"])
      await listedNow(() => fsp.rm(path.join(src, "a/1.txt")), ["a"])
      await listedNow(() => fsp.rename(path.join(src, "a/2.txt"), path.join(src, "a/3.txt")), ["a"])
      await listedNow(() => fsp.rename(path.join(src, "b/c/3.txt"), path.join(src, "a/4.txt")), ["a", "b/c"])
      await listedNow(() => fsp.mkdir(path.join(src, "b/d")), ["b", "b/d"])
      // an edit that leaves the names alone: nothing is listed, the file is read
      await listedNow(() => fsp.writeFile(path.join(src, "top.txt"), "T"), [])
      // --full reads every directory
      readdir.mockClear()
      await createSnapshot(store, src, { full: true, cacheKey: "other" })
      expect(readdir.mock.calls.length).toBe(5)
    } finally {
      readdir.mockRestore()
    }
    await store.close()
  })

  it("an unchanged tree costs no read, no new tree and no index lookup", async () => {
    const store = await newStore()
    const src = await tempDir()
    const spec: DirSpec = {}
    for (let d = 0; d < 20; d++) spec[`d${d}`] = { dir: { "f.txt": { file: `file ${d}` }, sub: { dir: { "g.bin": { file: seededBytes(`g${d}`, 40_000) } } } } }
    await buildTree(src, spec)
    await pastTick()
    const first = await createSnapshot(store, src)
    let lookups = 0
    const locateMany = store.locateMany.bind(store)
    store.locateMany = async (ids) => {
      lookups += ids.length
      return locateMany(ids)
    }
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    expect(second).toMatchObject({ readBytes: 0, reusedFiles: 40, reusedTrees: 41 })
    expect(lookups).toBe(0)
    expect(second.snapshot.tree).toBe(first.snapshot.tree)
    expect(second.snapshot.stats).toEqual({ ...first.snapshot.stats, addedBytes: 0 })
    // one edit deep down rebuilds that directory and its ancestors only
    await fsp.writeFile(path.join(src, "d7", "sub", "g.bin"), "edited")
    const third = await createSnapshot(store, src, { parent: second.snapshot })
    expect(third).toMatchObject({ readBytes: 6, reusedFiles: 39, reusedTrees: 41 - 3 })
    expect(third.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    await store.close()
  })

  it("large files read while the scan goes on give what a full read gives; unchanged ones are not read", async () => {
    const store = await newStore()
    const src = await tempDir()
    const spec: DirSpec = { "a-big.bin": { file: seededBytes("big", 700_000) }, "hard.bin": { file: seededBytes("hard", 300_000) }, "hard-2.bin": { hardlink: "hard.bin" } }
    for (let d = 0; d < 40; d++) spec[`d${d}`] = { dir: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}.txt`, { file: `file ${d}/${i}` }])) }
    spec["z-big.bin"] = { file: seededBytes("z", 400_000) }
    await buildTree(src, spec)
    await pastTick()
    const first = await createSnapshot(store, src)
    let small = 0
    for (let d = 0; d < 40; d++) for (let i = 0; i < 30; i++) small += `file ${d}/${i}`.length
    expect(first.readBytes).toBe(700_000 + 300_000 + 400_000 + small) // every byte once, the hardlinked file too
    expect(first.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    const unchanged = await createSnapshot(store, src, { parent: first.snapshot })
    expect(unchanged.readBytes).toBe(0)
    const big = await fsp.open(path.join(src, "a-big.bin"), "r+")
    await big.write(Buffer.from("an edit in the middle"), 0, 21, 350_000)
    await big.close()
    const changed = await createSnapshot(store, src, { parent: unchanged.snapshot })
    expect(changed.readBytes).toBe(700_000)
    expect(changed.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    await store.close()
  })

  it("tells the store many blobs will come once the scan has found 16 MiB of large files the cache does not know, not for edits of known ones", async () => {
    const store = await newStore()
    const expecting = vi.spyOn(store, "expectBlobs")
    const src = await tempDir()
    await buildTree(src, { "a.bin": { file: seededBytes("a", 6 << 20) }, "b.bin": { file: seededBytes("b", 6 << 20) }, "small.txt": { file: "small" } })
    await pastTick()
    const first = await createSnapshot(store, src)
    expect(expecting).not.toHaveBeenCalled() // 12 MiB
    await fsp.writeFile(path.join(src, "c.bin"), seededBytes("c", 5 << 20))
    await pastTick()
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    expect(expecting).not.toHaveBeenCalled() // 5 MiB new
    // a first snapshot of the same files (another workspace's cache): 17 MiB new to the cache
    const third = await createSnapshot(store, src, { cacheKey: "elsewhere" })
    expect(expecting).toHaveBeenCalledTimes(1)
    expect(third.snapshot.tree).toBe(second.snapshot.tree)
    // edits of known files, 17 MiB of them: not new
    for (const f of ["a.bin", "b.bin", "c.bin"]) {
      const h = await fsp.open(path.join(src, f), "r+")
      await h.write(Buffer.from("an edit"), 0, 7, 1000)
      await h.close()
    }
    await createSnapshot(store, src, { parent: second.snapshot })
    expect(expecting).toHaveBeenCalledTimes(1)
    await store.close()
  })

  it("a file changed within a timestamp tick of a snapshot is not cached: the next snapshot reads it again", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "old.txt": { file: "settled long ago" }, "fresh.txt": { file: "just written" } })
    // a clock tick is a few ms: a file whose mtime lies after the snapshot's start stands for one changed within it
    const ahead = new Date(Date.now() + 60_000)
    await fsp.utimes(path.join(src, "fresh.txt"), ahead, ahead)
    await pastTick()
    const first = await createSnapshot(store, src)
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    expect(second).toMatchObject({ readBytes: "just written".length, reusedFiles: 1 })
    expect(second.snapshot.tree).toBe(first.snapshot.tree)
    await store.close()
  })

  it("tooRecent: a tick of 20 ms before the start, 2 s for times in whole seconds; a restore's files by mtime alone", () => {
    const since = 1_800_000_000_000_000_000n
    const ms = 1_000_000n
    expect(tooRecent({ mtimeNs: since - 21n * ms, ctimeNs: since - 21n * ms }, since)).toBe(false)
    expect(tooRecent({ mtimeNs: since - 21n * ms, ctimeNs: since - 19n * ms }, since)).toBe(true)
    expect(tooRecent({ mtimeNs: since - 19n * ms, ctimeNs: since - 60_000n * ms }, since)).toBe(true)
    expect(tooRecent({ mtimeNs: since + 5n * ms, ctimeNs: since - 60_000n * ms }, since)).toBe(true)
    // whole seconds: a file system that keeps no more
    expect(tooRecent({ mtimeNs: since - 1_000n * ms, ctimeNs: since - 1_000n * ms }, since)).toBe(true)
    expect(tooRecent({ mtimeNs: since - 3_000n * ms, ctimeNs: since - 3_000n * ms }, since)).toBe(false)
    expect(tooRecent({ mtimeNs: since - 21n * ms }, since)).toBe(false)
    expect(tooRecent({ mtimeNs: since - 19n * ms }, since)).toBe(true)
  })

  it("a large file's unchanged chunks are not looked up while the cache can vouch for them", async () => {
    const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 256 * 1024, chunker: { minSize: 8192, avgSize: 32768, maxSize: 131072 } } })
    const src = await tempDir()
    const data = seededBytes("held", 3_000_000)
    await buildTree(src, { "big.bin": { file: data }, "small.txt": { file: "small" } })
    await pastTick()
    const first = await createSnapshot(store, src)
    const c = store.config.chunker
    const chunks = chunkLengths(data, c, gearTable(Buffer.from(c.seed, "hex"))).length
    expect(chunks).toBeGreaterThan(20)
    const looked: string[] = []
    const locateMany = store.locateMany.bind(store)
    store.locateMany = async (ids) => {
      looked.push(...ids)
      return locateMany(ids)
    }
    const edit = async (at: number) => {
      const big = await fsp.open(path.join(src, "big.bin"), "r+")
      await big.write(Buffer.from(`an edit at ${at}`), 0, 14, at)
      await big.close()
    }
    await edit(1_500_000)
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    expect(second.readBytes).toBe(3_000_000)
    // only what is new is looked up: the chunk or two around the edit, and the root tree
    expect(looked.length).toBeLessThanOrEqual(4)
    const full = await fullRead(store, src)
    expect(second.snapshot.tree).toBe(full.snapshot.tree)
    expect(second.snapshot.stats).toEqual({ ...full.snapshot.stats, addedBytes: second.snapshot.stats.addedBytes })
    // after the index is rebuilt (as by a gc) the cache cannot vouch: each chunk is looked up, and the result is the same
    await store.rebuildIndex()
    looked.length = 0
    await edit(500_000)
    const third = await createSnapshot(store, src, { parent: second.snapshot })
    expect(looked.length).toBeGreaterThan(chunks)
    const again = await fullRead(store, src)
    expect(third.snapshot.tree).toBe(again.snapshot.tree)
    expect(third.snapshot.stats).toEqual({ ...again.snapshot.stats, addedBytes: third.snapshot.stats.addedBytes })
    await store.close()
  })

  it("a snapshot aborted while large files are read early settles every read before it rejects", async () => {
    const store = await newStore()
    const src = await tempDir()
    // large files first, then enough small ones that the scan is still walking when they are being read
    const spec: DirSpec = {}
    for (let d = 0; d < 4; d++) spec[`a${d}`] = { dir: { "big.bin": { file: seededBytes(`b${d}`, 1_000_000) } } }
    for (let d = 0; d < 60; d++) spec[`d${d}`] = { dir: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}.txt`, { file: `${d}/${i}` }])) }
    await buildTree(src, spec)
    // both chunk reader threads are started (in another repository, so that this one stores everything anew):
    // a read's first batch then comes back while the scan still walks, and progress reports its bytes
    const other = await newStore()
    await createSnapshot(other, src)
    await other.close()
    for (const after of [1, 3]) {
      const ctl = new AbortController()
      let seen = 0
      const onProgress = (p: { filesDone: number; bytesDone: number; filesTotal: number; bytesTotal: number }) => {
        // files done during the scan: their bytes count, the totals are not known yet (0), never the other way round
        expect(p.filesDone > 0 ? p.bytesDone : 1).toBeGreaterThan(0)
        if (p.bytesTotal > 0) expect(p.bytesDone).toBeLessThanOrEqual(p.bytesTotal)
        if (p.bytesDone > 0 && ++seen === after) ctl.abort()
      }
      await expect(createSnapshot(store, src, { signal: ctl.signal, onProgress, full: true, cacheKey: `abort-${after}` })).rejects.toMatchObject({ code: "ABORTED" })
      // nothing of it is still running: no pack appears later, the lock is free, no snapshot is listed
      const packs = (await store.backend.list("data/")).length
      await new Promise((r) => setTimeout(r, 200))
      expect((await store.backend.list("data/")).length).toBe(packs)
      await store.withLock(true, "check", async () => {})
      expect((await store.listRecords("snapshots")).records).toEqual([])
    }
    const done = await createSnapshot(store, src)
    expect(done.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    await store.close()
  })

  it("an unchanged tree takes its stored total from the cache only while the cache's index files exist", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.bin": { file: seededBytes("a", 100_000) }, d: { dir: { "b.txt": { file: "b" }, "c.txt": { file: "b" } } } })
    await pastTick()
    const first = await createSnapshot(store, src)
    // the cache says the total is 1: a snapshot that trusts it says so too
    const file = path.join(store.cacheDir, "statcache", `${dirCacheKey(path.resolve(src))}.bin`)
    const saved = await fsp.readFile(file)
    const bytes = saved.subarray(0, saved.length - 32).toString("latin1") // the last 32 bytes are its sha256
    const stored = `"stored":${first.snapshot.stats.storedBytes}`
    expect(bytes).toContain(stored)
    const forged = Buffer.from(bytes.replace(stored, `"stored":${"1".padStart(stored.length - 9)}`), "latin1")
    await fsp.writeFile(file, Buffer.concat([forged, createHash("sha256").update(forged).digest()]))
    const trusted = await createSnapshot(store, src, { parent: first.snapshot })
    expect(trusted).toMatchObject({ readBytes: 0, reusedTrees: 2 })
    expect(trusted.snapshot.stats.storedBytes).toBe(1)
    // new index files (as after a gc): the cache can no longer vouch, the total is counted
    const other = await tempDir()
    await buildTree(other, { "x.txt": { file: "other" } })
    await createSnapshot(store, other) // another pack: the rebuilt index file lists both, under a new name
    await store.rebuildIndex()
    const counted = await createSnapshot(store, src, { parent: trusted.snapshot })
    expect(counted).toMatchObject({ readBytes: 0, reusedTrees: 2 })
    expect(counted.snapshot.stats).toEqual({ ...first.snapshot.stats, addedBytes: 0 })
    await store.close()
  })

  it("an unchanged tree needs no local index: the snapshot neither opens LevelDB nor takes its lock", async () => {
    const backend = new MemoryObjectStore()
    const cacheDir = await tempDir()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "alpha" }, d: { dir: { "b.bin": { file: seededBytes("b", 100_000) } } } })
    await pastTick()
    const first = await Store.init({ backend, cacheDir })
    const a = await createSnapshot(first, src)
    await first.close()
    const store = await Store.open({ backend, cacheDir })
    const b = await createSnapshot(store, src, { parent: a.snapshot })
    expect(b).toMatchObject({ readBytes: 0, reusedTrees: 2 })
    expect(b.snapshot.stats).toEqual({ ...a.snapshot.stats, addedBytes: 0 })
    const other = await Store.open({ backend, cacheDir })
    expect((await other.openIndex()).kind).toBe("level") // not "memory": nobody holds the lock
    await other.close()
    await store.close()
  })

  it("after a gc, looks the cache's blobs up again and re-reads files whose chunks are gone", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.bin": { file: seededBytes("a", 100_000) }, keep: { dir: { "b.txt": { file: "kept" } } } })
    const first = await createSnapshot(store, src)
    await store.deleteRecord("snapshots", first.snapshot.id)
    await collectGarbage(store, {})
    const again = await createSnapshot(store, src)
    expect(again.readBytes).toBe(100_000 + 4) // nothing was left to reuse
    expect(again.reusedFiles).toBe(0)
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(store, again.snapshot, dest)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
    await store.close()
  })

  it("a large file edited in the middle gives what a full re-read gives, also when a gc took its old chunks", async () => {
    const store = await newStore()
    const src = await tempDir()
    const big = path.join(src, "big.bin")
    const data = seededBytes("big", 3_000_000)
    await buildTree(src, { "big.bin": { file: data } })
    const edit = async (at: number) => {
      data.fill(at % 251, at, at + 4000)
      await fsp.writeFile(big, data)
    }
    // its chunk reader sends the chunks the cache lists (all held) without their bytes
    const first = await createSnapshot(store, src)
    await edit(1_500_000)
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    const full = await fullRead(store, src)
    expect(second.snapshot.tree).toBe(full.snapshot.tree)
    expect(second.snapshot.stats).toEqual({ ...full.snapshot.stats, addedBytes: second.snapshot.stats.addedBytes })
    expect(second.snapshot.stats.addedBytes).toBeLessThan(1_000_000) // one edit: a few chunks
    // now the chunks the cache lists are gone: the reader's first pass fails over to reading every byte
    for (const id of [first.snapshot.id, second.snapshot.id, full.snapshot.id]) await store.deleteRecord("snapshots", id)
    await collectGarbage(store, {})
    await edit(700_000)
    const third = await createSnapshot(store, src)
    expect(third.warnings).toEqual([])
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(store, third.snapshot, dest)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
    expect(third.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    await store.close()
  })

  it("builds trees anew when the exclude patterns change", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { app: { dir: { "main.js": { file: "main" }, "debug.log": { file: "log" } } }, "README.md": { file: "readme" } })
    const a = await createSnapshot(store, src, { exclude: ["*.log"] })
    const b = await createSnapshot(store, src, { parent: a.snapshot })
    expect(b.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    expect(b.snapshot.stats.files).toBe(3)
    await fsp.writeFile(path.join(src, ".cairnignore"), "app/\n")
    await fsp.utimes(src, new Date(0), new Date(0)) // the root's ctime still changes; the patterns must decide
    const c = await createSnapshot(store, src, { parent: b.snapshot })
    expect(c.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    expect(c.snapshot.stats.files).toBe(2) // README.md and .cairnignore
    await store.close()
  })

  it("a restored box's first snapshot reuses every file and tree of the snapshot it came from", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, {
      "a.txt": { file: "hello", mode: 0o640, mtimeNs: 1_700_000_000_123_456_789n },
      sub: { dir: { deep: { dir: { "x.bin": { file: seededBytes("x", 300_000) } } }, empty: { dir: {} } } },
      link: { symlink: "a.txt" },
      "hard-1": { file: "shared" },
      other: { dir: { "hard-2": { hardlink: "hard-1" } } },
    })
    await pastTick()
    const original = await createSnapshot(store, src)
    const box = path.join(await tempDir(), "box")
    await restoreSnapshot(store, original.snapshot, box, { statCacheKey: "box-1" })
    const again = await createSnapshot(store, box, { cacheKey: "box-1" })
    expect(again).toMatchObject({ readBytes: 0, reusedFiles: 3, reusedTrees: await countDirs(box) })
    expect(again.snapshot.tree).toBe(original.snapshot.tree)
    expect(again.snapshot.stats).toEqual({ ...original.snapshot.stats, addedBytes: 0 })
    // and the box's own directory is as the workspace's was (mtimes to the microsecond, as restores keep them)
    const micros = (r: typeof original.snapshot.root) => ({ ...r, mtime: String(BigInt(r!.mtime) / 1000n) })
    expect(micros(again.snapshot.root)).toEqual(micros(original.snapshot.root))
    // read-only links (x.bin) differ from the tree in mode: the directories above them are built anew
    const linked = path.join(await tempDir(), "linked")
    await restoreSnapshot(store, original.snapshot, linked, { statCacheKey: "box-2", link: true })
    const fromLinked = await createSnapshot(store, linked, { cacheKey: "box-2" })
    expect(fromLinked).toMatchObject({ readBytes: 0, reusedTrees: 2 }) // sub/empty and other
    const diff = await diffTrees(store, original.snapshot.tree, fromLinked.snapshot.tree)
    expect(diff.changes.map((c) => `${c.change} ${c.path} ${c.what?.join(",")}`)).toEqual(["modified sub/deep/x.bin mode"])
    await store.close()
  })

  it("a snapshot whose record cannot be written fails and lists nothing; the cache it wrote beside the record serves the next one", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "alpha" }, d: { dir: { "b.bin": { file: seededBytes("b", 300_000) }, "c.txt": { file: "gamma" } } } })
    await pastTick()
    const createRecord = store.createRecord.bind(store)
    store.createRecord = async () => {
      throw new Error("disk full")
    }
    await expect(createSnapshot(store, src)).rejects.toThrow("disk full")
    store.createRecord = createRecord
    expect((await store.listRecords("snapshots")).records).toEqual([])
    // the cache it wrote vouches for blobs the failed snapshot made durable: nothing is read, and the tree is the full read's
    const next = await createSnapshot(store, src)
    expect(next).toMatchObject({ readBytes: 0, reusedFiles: 3 })
    expect(next.snapshot.tree).toBe((await fullRead(store, src)).snapshot.tree)
    const dest = await tempDir()
    await restoreSnapshot(store, next.snapshot, path.join(dest, "r"))
    expect(await describeTree(path.join(dest, "r"))).toEqual(await describeTree(src))
    await store.close()
  })

  it("a damaged or foreign cache file only costs a full read", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "alpha" }, d: { dir: { "b.txt": { file: "beta" } } } })
    const a = await createSnapshot(store, src)
    const file = path.join(store.cacheDir, "statcache", `${dirCacheKey(path.resolve(src))}.bin`)
    const good = await fsp.readFile(file)
    for (const junk of ["{not json", "[]", good.subarray(0, good.length - 3), Buffer.concat([good.subarray(0, 16), Buffer.alloc(good.length - 16, 0xff)])]) {
      await fsp.writeFile(file, junk)
      const b = await createSnapshot(store, src, { parent: a.snapshot })
      expect(b.readBytes).toBe(9)
      expect(b.snapshot.tree).toBe(a.snapshot.tree)
    }
    await store.close()
  })
})
