// verifyRepository: a healthy repository passes; each kind of damage is found
// and names the snapshots and paths that depend on it.
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { createSnapshot } from "../../engine/snapshot.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { verifyRepository } from "../../engine/verify.js"
import { resolvePath } from "../../engine/walk.js"
import type { ByteRange, ObjectStore, PutOptions } from "../../store/backend.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { IoError, isCairnError } from "../../store/errors.js"
import { hashBytes, type BlobId } from "../../store/ids.js"
import type { BlobLocation } from "../../store/local-index.js"
import { packKey } from "../../store/pack.js"
import { Store } from "../../store/store.js"
import { buildTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir } from "../helpers.js"

const victim = seededBytes("victim", 5000)

/** victim.bin and a hardlink to it, a subdirectory, and plenty of other data so packs are several. */
function spec(extra: string): DirSpec {
  const more: DirSpec = {}
  for (let i = 0; i < 12; i++) more[`m${i}.bin`] = { file: seededBytes(`${extra}${i}`, 9000) }
  return {
    "victim.bin": { file: victim },
    sub: { dir: { "ok.txt": { file: "ok" }, inner: { dir: { "deep.txt": { file: "deep" } } }, "twin.bin": { hardlink: "victim.bin" } } },
    more: { dir: more },
  }
}

async function setup(backend: ObjectStore = new MemoryObjectStore()) {
  const store = await Store.init({ backend, cacheDir: await tempDir(), config: { packSize: 32 * 1024 } })
  // the victim first goes into a pack of its own (with the seed's tree): the
  // snapshots below dedup against it, so deleting that pack loses no tree of theirs
  const seedDir = await tempDir()
  await buildTree(seedDir, { "victim.bin": { file: victim } })
  const seed = (await createSnapshot(store, seedDir)).snapshot
  const src = await tempDir()
  await buildTree(src, spec("one"))
  const first = (await createSnapshot(store, src)).snapshot
  await fsp.writeFile(path.join(src, "sub", "ok.txt"), "changed") // second snapshot shares victim, not sub's tree
  const second = (await createSnapshot(store, src)).snapshot
  return { store, src, seed, first, second }
}

/** A repository of one snapshot of kept.bin, whose pack also holds dropped.bin's blob, dead since its snapshot was deleted. */
async function withDeadBlob() {
  const backend = new MemoryObjectStore()
  const store = await Store.init({ backend, cacheDir: await tempDir(), config: { packSize: 1 << 20 } })
  const src = await tempDir()
  const kept = seededBytes("kept", 6000)
  const dropped = seededBytes("dropped", 6000)
  await buildTree(src, { "kept.bin": { file: kept }, "dropped.bin": { file: dropped } })
  const first = (await createSnapshot(store, src)).snapshot
  await fsp.rm(path.join(src, "dropped.bin"))
  const second = (await createSnapshot(store, src)).snapshot
  await store.deleteRecord("snapshots", first.id)
  return { backend, store, kept, dropped, second }
}

async function locate(store: Store, id: BlobId): Promise<BlobLocation> {
  const [loc] = await store.locateMany([id])
  if (!loc || loc === "pending") throw new Error(`${id} not indexed`)
  return loc
}

function flipByte(data: Uint8Array, at: number): Uint8Array {
  const copy = Uint8Array.from(data)
  copy[at]! ^= 0x40
  return copy
}

describe("verifyRepository", () => {
  it("passes a healthy repository and counts what it checked", async () => {
    const { store } = await setup()
    const packs = (await store.backend.list("data/")).length
    const report = await verifyRepository(store, { readData: true })
    expect(report).toMatchObject({ ok: true, damage: [], warnings: [], snapshots: 3, packs })
    expect(report.trees).toBe(1 + 4 + 2) // the seed's root; root, sub, inner, more; root and sub again in the second
    expect(report.blobs).toBeGreaterThan(report.trees + 13)
    expect(report.bytesRead).toBeGreaterThan(12 * 9000)
    await store.close()
  })

  it("with readData, a flipped byte names the blob, its pack, both snapshots and every path (hardlinks too)", async () => {
    const backend = new MemoryObjectStore()
    const { store, seed, first, second } = await setup(backend)
    const id = hashBytes(victim)
    const loc = await locate(store, id)
    backend.tamper(packKey(loc.pack), (b) => flipByte(b, loc.offset + 100))
    expect((await verifyRepository(store)).ok).toBe(true) // the header is intact; data is not read
    const report = await verifyRepository(store, { readData: true })
    expect(report.ok).toBe(false)
    expect(report.damage).toEqual([
      {
        blob: id,
        pack: loc.pack,
        reason: expect.stringContaining("does not match its hash"),
        snapshots: [seed.id, first.id, second.id].sort(),
        paths: ["/sub/twin.bin", "/victim.bin"],
      },
    ])
    await store.close()
  })

  it("without readData, a deleted pack is reported with the snapshots and paths that lose data", async () => {
    const { store, seed, first, second } = await setup()
    const loc = await locate(store, hashBytes(victim))
    await store.backend.delete(packKey(loc.pack))
    const report = await verifyRepository(store)
    expect(report.ok).toBe(false)
    expect(report.damage).toEqual([
      // the seed snapshot's root tree lived in that pack too; the seed's own
      // victim.bin is not listed since its tree is lost, so "/victim.bin" below is
      // the hardlink member of first and second (scan order makes sub/twin.bin the
      // group's first member, the one that holds the chunks)
      { blob: seed.tree, pack: loc.pack, reason: expect.stringContaining("missing"), snapshots: [seed.id], paths: ["/"] },
      {
        blob: hashBytes(victim),
        pack: loc.pack,
        reason: expect.stringContaining("missing"),
        snapshots: [first.id, second.id].sort(),
        paths: ["/sub/twin.bin", "/victim.bin"],
      },
    ])
    await store.close()
  })

  it("a damaged tree names its directory and every snapshot that uses it, without reading data", async () => {
    const backend = new MemoryObjectStore()
    const { store, first, second } = await setup(backend)
    const inner = await resolvePath(store, first.tree, "sub/inner")
    if (inner.type !== "dir") throw new Error("not a dir")
    const loc = await locate(store, inner.tree)
    backend.tamper(packKey(loc.pack), (b) => flipByte(b, loc.offset + Math.floor(loc.length / 2)))
    const report = await verifyRepository(store)
    // sub/inner is one tree shared by both snapshots
    expect(report.damage).toEqual([{ blob: inner.tree, pack: loc.pack, reason: expect.stringMatching(/damaged/), snapshots: [first.id, second.id].sort(), paths: ["/sub/inner"] }])
    await store.close()
  })

  it("a deleted pack that held a snapshot's root tree names that snapshot", async () => {
    const { store, second } = await setup()
    const loc = await locate(store, second.tree)
    await store.backend.delete(packKey(loc.pack))
    const report = await verifyRepository(store)
    expect(report.damage).toContainEqual({ blob: second.tree, pack: loc.pack, reason: expect.stringContaining("missing"), snapshots: [second.id], paths: ["/"] })
    await store.close()
  })

  it("reports damaged snapshot records: not JSON, naming no valid tree, or with malformed root metadata", async () => {
    const { store, first } = await setup()
    await store.backend.put("snapshots/snap_00000000000000ff", Buffer.from("{not json"))
    const bad: Partial<SnapshotRecord> = { ...first, id: "snap_00000000000000ee", tree: "nope" as BlobId }
    await store.putRecord("snapshots", "snap_00000000000000ee", bad)
    const badRoot = { ...first, id: "snap_00000000000000dd", root: { mode: "0755", mtime: 1, uid: 0, gid: 0 } }
    await store.putRecord("snapshots", "snap_00000000000000dd", badRoot)
    const report = await verifyRepository(store)
    expect(report.ok).toBe(false)
    expect(report.damage.map((d) => [d.record, d.snapshots])).toEqual([
      ["snapshots/snap_00000000000000dd", ["snap_00000000000000dd"]],
      ["snapshots/snap_00000000000000ee", ["snap_00000000000000ee"]],
      ["snapshots/snap_00000000000000ff", ["snap_00000000000000ff"]],
    ])
    await store.close()
  })

  it("finds a byte flipped in a pack file on disk (filesystem backend)", async () => {
    const dir = await tempDir()
    const { store, first, second } = await setup(new FsObjectStore(path.join(dir, "repo")))
    const id = hashBytes(seededBytes("one3", 9000))
    const loc = await locate(store, id)
    const file = path.join(dir, "repo", ...packKey(loc.pack).split("/"))
    await fsp.chmod(file, 0o644).catch(() => {})
    await fsp.writeFile(file, flipByte(await fsp.readFile(file), loc.offset + 1))
    const report = await verifyRepository(store, { readData: true })
    expect(report.damage).toEqual([expect.objectContaining({ blob: id, pack: loc.pack, snapshots: [first.id, second.id].sort(), paths: ["/more/m3.bin"] })])
    await store.close()
  })

  it("with readData, a byte flipped where no snapshot reads is a warning: a blob the pack's name vouches for (its header lists it) is damaged", async () => {
    const { backend, store, kept, dropped, second } = await withDeadBlob()
    const dead = await locate(store, hashBytes(dropped))
    const live = await locate(store, hashBytes(kept))
    expect(dead.pack).toBe(live.pack)
    backend.tamper(packKey(dead.pack), (b) => flipByte(b, dead.offset + 10))
    expect(await verifyRepository(store)).toMatchObject({ ok: true, warnings: [] }) // the header is intact; data is not read
    const report = await verifyRepository(store, { readData: true })
    expect(report).toMatchObject({ ok: true, damage: [], snapshots: 1 })
    expect(report.warnings).toEqual([expect.stringContaining(`pack ${dead.pack}: blob ${hashBytes(dropped)}, which no snapshot uses, is damaged`)])
    // damage in a blob a snapshot reads is damage, and not also a warning
    backend.tamper(packKey(live.pack), (b) => flipByte(b, live.offset + 10))
    const worse = await verifyRepository(store, { readData: true })
    expect(worse).toMatchObject({ ok: false, warnings: [] })
    expect(worse.damage).toEqual([expect.objectContaining({ blob: hashBytes(kept), pack: live.pack, snapshots: [second.id], paths: ["/kept.bin"] })])
    await store.close()
  })

  it("a pack named by all its bytes (written before 2026-12-07) verifies as before: clean, and a byte flipped where no snapshot reads is a warning", async () => {
    const { backend, store, kept, dropped } = await withDeadBlob()
    // every pack renamed as packs were named before: by the sha256 of all its bytes
    for (const { key } of await backend.list("data/")) {
      const bytes = await backend.get(key)
      await backend.put(packKey(hashBytes(bytes)), bytes)
      await backend.delete(key)
    }
    await store.rebuildIndex()
    const live = await locate(store, hashBytes(kept))
    expect(live.pack).toBe(hashBytes(await backend.get(packKey(live.pack))))
    expect(await verifyRepository(store, { readData: true })).toMatchObject({ ok: true, damage: [], warnings: [] })
    const dead = await locate(store, hashBytes(dropped))
    backend.tamper(packKey(dead.pack), (b) => flipByte(b, dead.offset + 10))
    const report = await verifyRepository(store, { readData: true })
    expect(report).toMatchObject({ ok: true, damage: [] })
    expect(report.warnings).toEqual([expect.stringContaining(`pack ${dead.pack}: its bytes do not hash to its name`)])
    await store.close()
  })

  it("an I/O error of the backend aborts verify instead of being reported as damage", async () => {
    const backend = new FlakyReads(new MemoryObjectStore())
    const { store } = await setup(backend)
    backend.failing = true
    const err = await verifyRepository(store, { readData: true }).catch((e: unknown) => e)
    expect(isCairnError(err, "IO")).toBe(true)
    backend.failing = false
    expect((await verifyRepository(store, { readData: true })).ok).toBe(true)
    await store.close()
  })

  it("stops when its signal fires", async () => {
    const { store } = await setup()
    const controller = new AbortController()
    controller.abort()
    const err = await verifyRepository(store, { signal: controller.signal }).catch((e: unknown) => e)
    expect(isCairnError(err, "ABORTED")).toBe(true)
    await store.close()
  })
})

/** Pack reads fail with an IoError while `failing` is set. */
class FlakyReads implements ObjectStore {
  failing = false
  readonly location = "flaky:"
  constructor(private readonly inner: ObjectStore) {}
  put(key: string, data: Uint8Array, opts?: PutOptions) {
    return this.inner.put(key, data, opts)
  }
  putIfAbsent(key: string, data: Uint8Array) {
    return this.inner.putIfAbsent(key, data)
  }
  async get(key: string, range?: ByteRange) {
    if (this.failing && key.startsWith("data/")) throw new IoError(`injected EIO reading ${key}`)
    return this.inner.get(key, range)
  }
  stat(key: string) {
    return this.inner.stat(key)
  }
  list(prefix: string) {
    return this.inner.list(prefix)
  }
  delete(key: string) {
    return this.inner.delete(key)
  }
  close() {
    return this.inner.close()
  }
}
