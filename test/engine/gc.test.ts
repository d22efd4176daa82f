// gc never drops a live blob: a model test over random histories, dry runs,
// locking against concurrent snapshots, and a crash at every backend call.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { collectGarbage } from "../../engine/gc.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { verifyRepository } from "../../engine/verify.js"
import type { ObjectStore } from "../../store/backend.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { IntegrityError, IoError } from "../../store/errors.js"
import type { BlobId } from "../../store/ids.js"
import { decodeIndexFile } from "../../store/index-file.js"
import { BLOB_TREE, ENTRY_BYTES, TRAILER_BYTES } from "../../store/pack.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { countingPackReads, seededBytes, tempDir } from "../helpers.js"

const PACK = 16 * 1024

async function open(backend: ObjectStore, init = false, lockWaitMs?: number) {
  const opts = { backend, cacheDir: await tempDir(), lockWaitMs }
  return init ? Store.init({ ...opts, config: { packSize: PACK } }) : Store.open(opts)
}

function treeFor(version: number, files: number[]): DirSpec {
  const spec: DirSpec = { "version.txt": { file: `v${version}` } }
  for (const f of files) spec[`f${f}.bin`] = { file: seededBytes(`content-${f}`, 3000 + f * 700) }
  return spec
}

async function restoresAs(store: Store, snap: SnapshotRecord, want: Record<string, string>) {
  const dest = path.join(await tempDir(), "r")
  await restoreSnapshot(store, snap, dest, { cache: false })
  expect(await describeTree(dest, { mtimes: false })).toEqual(want)
}

/** Physical size of packs and what live blobs plus pack overhead account for. */
async function sizes(store: Store, backend: ObjectStore) {
  const packs = await backend.list("data/")
  const physical = packs.reduce((n, p) => n + p.size, 0)
  const indexFiles = await backend.list("index/")
  let live = 0
  const listed = new Set<string>()
  for (const f of indexFiles) {
    for (const { pack, entries } of decodeIndexFile(await backend.get(f.key), f.key)) {
      listed.add(pack)
      for (const e of entries) live += e.length + ENTRY_BYTES
    }
  }
  return { physical, accounted: live + listed.size * TRAILER_BYTES, packs: packs.length, listed: listed.size }
}

/** Every blob id the repository's index files list now. */
async function indexedIds(backend: ObjectStore): Promise<BlobId[]> {
  const ids: BlobId[] = []
  for (const f of await backend.list("index/")) {
    for (const { entries } of decodeIndexFile(await backend.get(f.key), f.key)) for (const e of entries) ids.push(e.id)
  }
  return ids
}

/** The local cache answers for `ids` exactly what the index files say (gc updates it in place). */
async function expectCacheMatchesIndexFiles(store: Store, backend: ObjectStore, ids: readonly BlobId[]) {
  const want = new Map<BlobId, string>()
  for (const f of await backend.list("index/")) {
    for (const { pack, entries } of decodeIndexFile(await backend.get(f.key), f.key)) {
      for (const e of entries) want.set(e.id, `${pack}@${e.offset}+${e.length}`)
    }
  }
  const all = [...new Set([...ids, ...want.keys()])]
  const got = (await store.locateMany(all)).map((l) => (l === undefined || l === "pending" ? l : `${l.pack}@${l.offset}+${l.length}`))
  expect(got).toEqual(all.map((id) => want.get(id)))
  expect([...(await store.loadedIndexFiles())].sort()).toEqual((await backend.list("index/")).map((o) => o.key.slice("index/".length)))
}

describe("gc", () => {
  it("model test: after any sequence of snapshot/delete/gc, every remaining snapshot restores", async () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("snap" as const), files: fc.subarray([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], { minLength: 1 }) }),
      fc.record({ kind: fc.constant("delete" as const), which: fc.nat() }),
      fc.record({ kind: fc.constant("gc" as const), threshold: fc.constantFrom(0, 0.2, 1) }),
    )
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const backend = new MemoryObjectStore()
        const store = await open(backend, true)
        const model = new Map<string, { snap: SnapshotRecord; want: Record<string, string> }>()
        let version = 0
        for (const o of ops) {
          if (o.kind === "snap") {
            const src = await tempDir()
            await buildTree(src, treeFor(version++, o.files))
            const { snapshot } = await createSnapshot(store, src, { full: true })
            model.set(snapshot.id, { snap: snapshot, want: await describeTree(src, { mtimes: false }) })
          } else if (o.kind === "delete" && model.size > 0) {
            const id = [...model.keys()][o.which % model.size]!
            await store.deleteRecord("snapshots", id)
            model.delete(id)
          } else if (o.kind === "gc") {
            const before = await indexedIds(backend)
            await collectGarbage(store, { repackThreshold: o.threshold })
            await expectCacheMatchesIndexFiles(store, backend, before)
            if (o.threshold === 0) {
              const s = await sizes(store, backend)
              expect(s.physical).toBe(s.accounted)
              expect(s.packs).toBe(s.listed)
            }
          }
          for (const { snap, want } of model.values()) await restoresAs(store, snap, want)
          expect((await verifyRepository(store)).ok).toBe(true)
        }
        await store.close()
      }),
      { numRuns: 15 },
    )
  })

  it("reclaims the data of deleted snapshots and reports it; a dry run changes nothing", async () => {
    const backend = new MemoryObjectStore()
    const store = await open(backend, true)
    const a = await tempDir()
    await buildTree(a, treeFor(1, [0, 1, 2, 3, 4, 5]))
    const keep = (await createSnapshot(store, a)).snapshot
    const b = await tempDir()
    await buildTree(b, treeFor(2, [6, 7, 8, 9]))
    const drop = (await createSnapshot(store, b)).snapshot
    await store.deleteRecord("snapshots", drop.id)
    const before = (await backend.list("")).map((o) => `${o.key}:${o.size}`)
    const dry = await collectGarbage(store, { dryRun: true })
    expect(dry.reclaimableBytes).toBeGreaterThan(4 * 3000)
    expect(dry.bytesFreed).toBe(0)
    expect((await backend.list("")).map((o) => `${o.key}:${o.size}`)).toEqual(before)
    const real = await collectGarbage(store)
    expect(real.bytesFreed).toBe(dry.reclaimableBytes)
    expect(real.bytesFreed).toBeGreaterThan(4 * 3000)
    await restoresAs(store, keep, await describeTree(a, { mtimes: false }))
    const again = await collectGarbage(store)
    expect(again.bytesFreed).toBe(0)
    await store.close()
  })

  it("reads the trees of a snapshot with a few ranged reads, not one per tree", async () => {
    const backend = new MemoryObjectStore()
    const store = await open(backend, true)
    const src = await tempDir()
    const spec: DirSpec = {}
    for (let d = 0; d < 40; d++) spec[`d${d}`] = { dir: { "f.txt": { file: `file ${d}` } } }
    await buildTree(src, spec)
    await createSnapshot(store, src)
    const { backend: counting, packReads } = countingPackReads(backend)
    const reader = await open(counting)
    const report = await collectGarbage(reader, { dryRun: true })
    expect(report.liveBlobs).toBe(41 + 40) // 41 trees, 40 chunks
    expect(packReads.length).toBeLessThanOrEqual(4) // one per level of the tree (and pack), here 2
    await Promise.all([store.close(), reader.close()])
  })

  it("stops, changing nothing, at a tree whose references it cannot tell", async () => {
    const bad: unknown[] = [
      { name: "p", type: "fifo", mode: 0o644, mtime: "0", uid: 0, gid: 0 }, // an entry type it does not know
      { name: "d", type: "dir", mode: 0o755, mtime: "0", uid: 0, gid: 0, size: 0, tree: 7 },
      { name: "f", type: "file", mode: 0o644, mtime: "0", uid: 0, gid: 0, size: 1, chunks: "abc" },
      null,
    ]
    for (const entry of bad) {
      const backend = new MemoryObjectStore()
      const store = await open(backend, true)
      const src = await tempDir()
      await buildTree(src, treeFor(1, [1]))
      const { snapshot } = await createSnapshot(store, src)
      const { id } = await store.putBlob(BLOB_TREE, Buffer.from(JSON.stringify({ v: 1, entries: [entry] })))
      await store.flush()
      await store.putRecord("snapshots", "snap_0000000000000001", { ...snapshot, id: "snap_0000000000000001", tree: id })
      await store.deleteRecord("snapshots", snapshot.id)
      const before = (await backend.list("")).filter((o) => !o.key.startsWith("locks/")).map((o) => o.key)
      const err = await collectGarbage(store).catch((e) => e)
      expect(err).toBeInstanceOf(IntegrityError)
      expect(err.message).toContain(`tree ${id} is malformed`)
      expect((await backend.list("")).filter((o) => !o.key.startsWith("locks/")).map((o) => o.key)).toEqual(before)
      await store.close()
    }
  })

  it("updates the local index in place, and rebuilds it when it holds files gc did not replace", async () => {
    const backend = new MemoryObjectStore()
    const store = await open(backend, true)
    for (let v = 0; v < 4; v++) {
      const src = await tempDir()
      await buildTree(src, treeFor(v, [v, v + 1, v + 2]))
      const { snapshot } = await createSnapshot(store, src)
      if (v % 2 === 1) await store.deleteRecord("snapshots", snapshot.id)
    }
    const before = await indexedIds(backend)
    let clears = 0
    const index = await store.openIndex()
    const clear = index.clear.bind(index)
    index.clear = () => (clears++, clear())
    await collectGarbage(store, { repackThreshold: 0 })
    expect(clears).toBe(0)
    await expectCacheMatchesIndexFiles(store, backend, before)
    // a cache that also holds a file the caller did not name is rebuilt, not patched
    const [file] = await store.loadedIndexFiles()
    await index.add([], "0".repeat(64))
    await store.replaceIndexFiles(file!, [], { remove: [], put: [] })
    expect(clears).toBe(1)
    await expectCacheMatchesIndexFiles(store, backend, before)
    await store.close()
  })

  it("waits for a snapshot holding the shared lock, and a snapshot waits for gc", async () => {
    const backend = new MemoryObjectStore()
    const store = await open(backend, true, 200)
    const lock = await store.lock(false, "snapshot in progress")
    const err = await collectGarbage(store).catch((e) => e)
    expect(err.code).toBe("LOCKED")
    expect(err.message).toContain("snapshot in progress")
    await lock.release()
    // gc holds the exclusive lock; a snapshot started meanwhile waits and then succeeds
    const other = await open(backend, false, 10_000)
    const src = await tempDir()
    await buildTree(src, treeFor(3, [1, 2]))
    const gcLock = await store.lock(true, "gc")
    let done = false
    const snap = createSnapshot(other, src).then((r) => ((done = true), r))
    await new Promise((r) => setTimeout(r, 300))
    expect(done).toBe(false)
    await gcLock.release()
    const { snapshot } = await snap
    await restoresAs(other, snapshot, await describeTree(src, { mtimes: false }))
    await Promise.all([store.close(), other.close()])
  })

  it("a snapshot started while a real gc runs waits for it, then succeeds", async () => {
    const backend = new MemoryObjectStore()
    let open_: () => void = () => {}
    let gated = false
    const gate = new Promise<void>((r) => (open_ = r))
    const paused = new Proxy(backend, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver)
        if (prop !== "list") return typeof v === "function" ? v.bind(target) : v
        return async (prefix: string) => {
          if (gated && prefix === "data/") await gate // gc holds the exclusive lock here
          return target.list(prefix)
        }
      },
    }) as ObjectStore
    const store = await open(paused, true, 10_000)
    const a = await tempDir()
    await buildTree(a, treeFor(1, [1, 2, 3]))
    const drop = (await createSnapshot(store, a)).snapshot
    await store.deleteRecord("snapshots", drop.id)
    gated = true
    const gc = collectGarbage(store, { repackThreshold: 0 })
    await new Promise((r) => setTimeout(r, 100))
    const b = await tempDir()
    await buildTree(b, treeFor(2, [2, 3, 4])) // shares chunks with the garbage
    let done = false
    const snap = createSnapshot(store, b).then((r) => ((done = true), r))
    await new Promise((r) => setTimeout(r, 300))
    expect(done).toBe(false)
    gated = false
    open_()
    const report = await gc
    expect(report.snapshots).toBe(0)
    const { snapshot } = await snap
    await restoresAs(store, snapshot, await describeTree(b, { mtimes: false }))
    expect((await verifyRepository(store)).ok).toBe(true)
    await store.close()
  })

  // A Store that loaded the index before gc must not keep the deleted packs
  // in its local cache: Store.withLock syncs the index right after taking the
  // lock, and syncIndex rebuilds the cache when an index file it knew vanished.
  it("a store opened before gc does not dedup against blobs gc deleted", async () => {
    const backend = new MemoryObjectStore()
    const a = await open(backend, true)
    const src = await tempDir()
    await buildTree(src, treeFor(1, [1, 2]))
    const { snapshot } = await createSnapshot(a, src)
    const b = await open(backend) // another process: its cache lists the chunks
    await a.deleteRecord("snapshots", snapshot.id)
    await collectGarbage(a)
    expect(await backend.list("data/")).toEqual([])
    const again = await createSnapshot(b, src, { full: true })
    await restoresAs(b, again.snapshot, await describeTree(src, { mtimes: false }))
    await Promise.all([a.close(), b.close()])
  })

  it("a crash at any backend call leaves every snapshot restorable, and a rerun finishes the job", async () => {
    // build one history, then crash gc at call N for every N it makes
    const base = new MemoryObjectStore()
    const store = await open(base, true)
    const kept: Array<{ snap: SnapshotRecord; want: Record<string, string> }> = []
    for (let v = 0; v < 5; v++) {
      const src = await tempDir()
      await buildTree(src, treeFor(v, [v, v + 1, v + 2]))
      const { snapshot } = await createSnapshot(store, src)
      if (v % 2 === 0) kept.push({ snap: snapshot, want: await describeTree(src, { mtimes: false }) })
      else await store.deleteRecord("snapshots", snapshot.id)
    }
    await store.close()
    const snapshotOf = async (b: MemoryObjectStore) => {
      const copy = new MemoryObjectStore()
      for (const o of await b.list("")) await copy.put(o.key, await b.get(o.key))
      return copy
    }
    const clean = await snapshotOf(base)
    const cleanStore = await open(clean)
    await collectGarbage(cleanStore, { repackThreshold: 0 })
    const cleanSize = (await sizes(cleanStore, clean)).physical
    const cleanPacks = (await clean.list("data/")).map((o) => o.key)
    await cleanStore.close()

    // "before": the process dies before the call reaches the backend;
    // "after": the call is carried out, then the process dies before it hears back
    let crashes = 0
    for (const mode of ["before", "after"] as const) {
      for (let n = 1; ; n++) {
        const backend = await snapshotOf(base)
        let calls = 0
        let crashed = false
        const crashing = new Proxy(backend, {
          get(target, prop, receiver) {
            const v = Reflect.get(target, prop, receiver)
            if (typeof v !== "function") return v
            if (!["put", "putIfAbsent", "delete"].includes(String(prop))) return v.bind(target)
            return async (...args: unknown[]) => {
              const call = () => (v as (...a: unknown[]) => Promise<unknown>).apply(target, args)
              if (String(args[0]).startsWith("locks/")) return call()
              if (crashed) throw new IoError("the process is gone")
              if (++calls === n) {
                crashed = true
                if (mode === "after") await call()
                throw new IoError("injected crash")
              }
              return call()
            }
          },
        }) as ObjectStore
        const s = await open(crashing)
        await collectGarbage(s, { repackThreshold: 0 }).catch(() => {})
        await s.releaseIndex()
        if (!crashed) break
        crashes++
        for (const k of await backend.list("locks/")) await backend.delete(k.key) // a crashed process's lock is stale
        const after = await open(backend)
        for (const { snap, want } of kept) await restoresAs(after, snap, want)
        await collectGarbage(after, { repackThreshold: 0 })
        for (const { snap, want } of kept) await restoresAs(after, snap, want)
        expect((await sizes(after, backend)).physical).toBe(cleanSize)
        expect((await backend.list("data/")).map((o) => o.key)).toEqual(cleanPacks)
        expect((await verifyRepository(after)).ok).toBe(true)
        await after.close()
      }
    }
    expect(crashes).toBeGreaterThan(3)
    console.log(`gc crash test: ${crashes} crash points, every snapshot restored after each`)
  })

  it("removes temp files crashed writers left behind, once they are an hour old", async () => {
    const dir = await tempDir()
    const backend = new FsObjectStore(path.join(dir, "repo"))
    const store = await open(backend, true)
    const src = await tempDir()
    await buildTree(src, treeFor(1, [1, 2]))
    await createSnapshot(store, src)
    const dataDir = path.join(dir, "repo", "data")
    const sub = (await fsp.readdir(dataDir))[0]!
    const old = path.join(dataDir, sub, "abc~tmp-0123")
    const fresh = path.join(dataDir, sub, "def~tmp-4567")
    await fsp.writeFile(old, "half a pack")
    await fsp.writeFile(fresh, "a pack being written")
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000)
    await fsp.utimes(old, twoHoursAgo, twoHoursAgo)
    expect((await collectGarbage(store, { dryRun: true })).tempFilesRemoved).toBe(0)
    expect((await collectGarbage(store)).tempFilesRemoved).toBe(1)
    await expect(fsp.stat(old)).rejects.toThrow()
    await fsp.stat(fresh)
    await store.close()
  })
})
