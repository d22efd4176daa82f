// Property and adversarial tests of snapshot -> restore.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { ObjectStore } from "../../store/backend.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { hashBytes, type BlobId } from "../../store/ids.js"
import { BLOB_TREE } from "../../store/pack.js"
import { Store } from "../../store/store.js"
import { restoreFailed, restoreSnapshot, restoreSnapshotMany, type RestoreResult } from "../../engine/restore.js"
import { isCairnError } from "../../store/errors.js"
import type { FileEntry } from "../../engine/tree.js"
import { flattenTree, loadTree } from "../../engine/walk.js"
import { createSnapshot } from "../../engine/snapshot.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { buildTree, describeTree, type DirSpec, type Spec } from "../fixtures.js"
import { countingPackReads, seededBytes, tempDir } from "../helpers.js"

async function newStore(backend = new MemoryObjectStore()) {
  return Store.init({ backend, cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
}

const nameArb = fc
  .oneof(
    fc.stringMatching(/^[a-z0-9]{1,8}$/),
    fc.constantFrom("with space", "ünïcødé", "日本語", "emoji 🎉", ".hidden", "-dash", "a.b.c"),
  )
  .filter((n) => n !== "." && n !== "..")

const contentArb = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 40 }),
  fc.nat({ max: 400_000 }).map((n) => seededBytes(`c${n}`, n)),
)

const modeArb = fc.constantFrom(0o644, 0o600, 0o755, 0o444, 0o700)
const mtimeArb = fc.bigInt({ min: 1_000_000_000_000_000n, max: 1_900_000_000_000_000_000n }).map((n) => (n / 1000n) * 1000n)

const treeArb: fc.Arbitrary<DirSpec> = fc.letrec((tie) => ({
  dir: fc.dictionary(nameArb, tie("node") as fc.Arbitrary<Spec>, { maxKeys: 5 }),
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.record({ file: contentArb, mode: modeArb, mtimeNs: mtimeArb }),
    fc.record({ symlink: fc.oneof(nameArb, fc.constant("../up/and/away"), fc.constant("/abs/target")) }),
    fc.record({ dir: tie("dir") as fc.Arbitrary<DirSpec>, mode: fc.constantFrom(0o755, 0o700, 0o555) }),
  ),
})).dir as fc.Arbitrary<DirSpec>

/** Adds hardlinks to some files of the spec (as siblings named "hl-<n>"). */
function withHardlinks(spec: DirSpec): DirSpec {
  const files: string[] = []
  const walk = (s: DirSpec, prefix: string) => {
    for (const [name, node] of Object.entries(s)) {
      const rel = prefix ? `${prefix}/${name}` : name
      if ("file" in node) files.push(rel)
      else if ("dir" in node) walk(node.dir, rel)
    }
  }
  walk(spec, "")
  const out: DirSpec = { ...spec }
  files.slice(0, 2).forEach((rel, i) => (out[`hl-${i}`] = { hardlink: rel }))
  return out
}

async function roundTrip(store: Store, spec: DirSpec, writers: boolean) {
  const src = await tempDir()
  await buildTree(src, spec)
  const { snapshot } = await createSnapshot(store, src)
  const dest = path.join(await tempDir(), "out")
  await restoreSnapshot(store, snapshot, dest, { writers })
  return { src, dest, snapshot }
}

describe("restore(snapshot(tree)) == tree", () => {
  // single-chunk files go to the writer threads by default; writers: false keeps them inline
  it.each([
    ["writer threads", true, 40],
    ["inline writes", false, 15],
  ] as const)("for random trees (%s)", async (_label, writers, numRuns) => {
    const store = await newStore()
    await fc.assert(
      fc.asyncProperty(treeArb.map(withHardlinks), async (spec) => {
        const { src, dest } = await roundTrip(store, spec, writers)
        expect(await describeTree(dest)).toEqual(await describeTree(src))
      }),
      { numRuns },
    )
    await store.close()
  })

  it("for sub-path restores", async () => {
    const store = await newStore()
    await fc.assert(
      fc.asyncProperty(treeArb, nameArb, async (inner, dirName) => {
        const spec: DirSpec = { [dirName]: { dir: { nested: { dir: inner } } }, top: { file: "x" } }
        const src = await tempDir()
        await buildTree(src, spec)
        const { snapshot } = await createSnapshot(store, src)
        const dest = path.join(await tempDir(), "sub")
        await restoreSnapshot(store, snapshot, dest, { subPath: `/${dirName}/nested` })
        expect(await describeTree(dest)).toEqual(await describeTree(path.join(src, dirName, "nested")))
      }),
      { numRuns: 25 },
    )
    await store.close()
  })
})

describe("many large files open at once", () => {
  // each large file keeps its temp file open while its chunks come in; more of them under way at
  // once than there are open-file slots (64) once left the restore waiting on itself, never finishing
  it.each([
    ["writer threads", true, 1],
    ["inline writes", false, 1],
    ["a fan-out of 3", true, 3],
  ] as const)("100 equal multi-chunk files restore whole (%s)", async (_label, writers, fanout) => {
    // chunks of at most 64 KiB: each 300 KB file is several, whatever the repository's gear table
    const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024, chunker: { minSize: 4096, avgSize: 16384, maxSize: 65536 } } })
    const src = await tempDir()
    const data = seededBytes("equal", 300_000)
    await buildTree(src, Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}.bin`, { file: data }])))
    const { snapshot } = await createSnapshot(store, src)
    const entry = (await loadTree(store, snapshot.tree)).entries[0] as FileEntry
    expect(entry.chunks!.length).toBeGreaterThan(1)
    const root = await tempDir()
    const dests = Array.from({ length: fanout }, (_, i) => path.join(root, `d${i}`))
    const outcomes = await restoreSnapshotMany(store, snapshot, dests.map((dest) => ({ dest })), { writers, cache: false })
    const want = await describeTree(src)
    for (const [i, o] of outcomes.entries()) {
      expect(o.status).toBe("fulfilled")
      expect(await describeTree(dests[i]!)).toEqual(want)
    }
    await store.close()
  })
})

describe("fan-out", () => {
  it("parallel restores are identical and independent", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { a: { file: "one" }, d: { dir: { b: { file: seededBytes("b", 200_000) } } }, l: { symlink: "a" } })
    const { snapshot } = await createSnapshot(store, src)
    const root = await tempDir()
    const dests = [0, 1, 2, 3].map((i) => path.join(root, `box${i}`))
    await Promise.all(dests.map((d) => restoreSnapshot(store, snapshot, d)))
    const want = await describeTree(src)
    for (const d of dests) expect(await describeTree(d)).toEqual(want)
    await fsp.writeFile(path.join(dests[0]!, "a"), "edited")
    await fsp.appendFile(path.join(dests[1]!, "d", "b"), "more")
    for (const d of dests.slice(2)) expect(await describeTree(d)).toEqual(want)
    const later = path.join(root, "later")
    await restoreSnapshot(store, snapshot, later)
    expect(await describeTree(later)).toEqual(want)
    await store.close()
  })

  it("one pass into several destinations gives each the tree, independent of the others (random trees)", async () => {
    const store = await newStore()
    await fc.assert(
      fc.asyncProperty(treeArb.map(withHardlinks), fc.boolean(), async (spec, writers) => {
        const src = await tempDir()
        await buildTree(src, spec)
        const { snapshot } = await createSnapshot(store, src)
        const root = await tempDir()
        const dests = ["a", "b", "c"].map((n) => path.join(root, n))
        const progress = new Map<string, number>()
        const outcomes = await restoreSnapshotMany(
          store,
          snapshot,
          dests.map((dest) => ({ dest, onProgress: (p) => progress.set(dest, p.filesDone ?? 0) })),
          { writers },
        )
        const want = await describeTree(src)
        for (const [i, o] of outcomes.entries()) {
          expect(o.status).toBe("fulfilled")
          const r = (o as PromiseFulfilledResult<RestoreResult>).value
          expect(r.dest).toBe(dests[i])
          expect(r.sharedWith).toBe(2)
          expect(r.files).toBe(outcomes[0]!.status === "fulfilled" ? outcomes[0].value.files : -1)
          if (r.files > 0) expect(progress.get(dests[i]!)).toBe(r.files)
          expect(await describeTree(dests[i]!)).toEqual(want)
        }
        // every file of one destination is its own: rewriting them all (hardlinks included) leaves the others as they were
        const files = (await fsp.readdir(dests[0]!, { recursive: true, withFileTypes: true })).filter((e) => e.isFile())
        for (const f of files) {
          const p = path.join(f.parentPath ?? f.path, f.name)
          await fsp.chmod(p, 0o600)
          await fsp.writeFile(p, "changed")
        }
        for (const d of dests.slice(1)) expect(await describeTree(d)).toEqual(want)
      }),
      { numRuns: 20 },
    )
    await store.close()
  })

  it("a destination refused or overlapping another is reported alone; the others are restored", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { a: { file: "one" }, big: { file: seededBytes("big", 300_000) } })
    const { snapshot } = await createSnapshot(store, src)
    const root = await tempDir()
    const full = path.join(root, "full")
    await fsp.mkdir(full)
    await fsp.writeFile(path.join(full, "keep"), "mine")
    const ok1 = path.join(root, "ok1")
    const ok2 = path.join(root, "ok2")
    const outcomes = await restoreSnapshotMany(store, snapshot, [{ dest: ok1 }, { dest: full }, { dest: path.join(ok1, "inner") }, { dest: ok1 }, { dest: ok2 }, { dest: "" }])
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "rejected", "rejected", "fulfilled", "rejected"])
    const reason = (i: number) => String((outcomes[i] as PromiseRejectedResult).reason)
    expect(reason(1)).toMatch(/not empty/)
    expect(reason(2)).toMatch(/one lies inside the other/)
    expect(reason(3)).toMatch(/one lies inside the other/)
    expect(reason(5)).toMatch(/needs a destination directory/)
    expect((outcomes[0] as PromiseFulfilledResult<RestoreResult>).value.sharedWith).toBe(1)
    const want = await describeTree(src)
    expect(await describeTree(ok1)).toEqual(want)
    expect(await describeTree(ok2)).toEqual(want)
    expect(await fsp.readdir(full)).toEqual(["keep"])
    await store.close()
  })

  it("damage in a pack fails the damaged file in every destination and nothing else", async () => {
    const backend = new MemoryObjectStore()
    const store = await newStore(backend)
    const src = await tempDir()
    await buildTree(src, { good: { file: "fine" }, bad: { file: seededBytes("bad", 5000) }, big: { file: seededBytes("big", 700_000) } })
    const { snapshot } = await createSnapshot(store, src)
    const entry = (await loadTree(store, snapshot.tree)).entries.find((e) => e.name === "bad") as FileEntry
    const [loc] = await store.locateMany([entry.chunks![0]!])
    if (!loc || loc === "pending") throw new Error("chunk not indexed")
    backend.tamper(`data/${loc.pack.slice(0, 2)}/${loc.pack}`, (b) => {
      const c = Uint8Array.from(b)
      c[loc.offset + 100]! ^= 0x40
      return c
    })
    const root = await tempDir()
    const dests = [path.join(root, "x"), path.join(root, "y")]
    const outcomes = await restoreSnapshotMany(store, snapshot, dests.map((dest) => ({ dest })))
    for (const [i, o] of outcomes.entries()) {
      expect(o.status).toBe("rejected")
      const err = (o as PromiseRejectedResult).reason
      expect(err.code).toBe("INTEGRITY")
      expect(err.data.failed.map((f: { path: string }) => f.path)).toEqual(["bad"])
      expect((await fsp.readdir(dests[i]!)).sort()).toEqual(["big", "good"])
      expect(await fsp.readFile(path.join(dests[i]!, "good"), "utf8")).toBe("fine")
      expect((await fsp.readFile(path.join(dests[i]!, "big"))).equals(seededBytes("big", 700_000))).toBe(true)
    }
    await store.close()
  })
})

describe("damage", () => {
  it.each([
    ["one chunk, writer threads", 10_000, true],
    ["one chunk, inline writes", 10_000, false],
    ["many chunks, writer threads", 700_000, true],
    ["many chunks, inline writes", 700_000, false],
  ] as const)("a flipped byte fails only the affected file, with an integrity error, and leaves no partial file (%s)", async (_label, size, writers) => {
    const backend = new MemoryObjectStore()
    const store = await newStore(backend)
    const src = await tempDir()
    const victim = seededBytes("victim", size)
    const big = seededBytes("big and fine", 900_000)
    await buildTree(src, { "victim.bin": { file: victim }, "big.bin": { file: big }, "ok.txt": { file: "fine" }, sub: { dir: { "also-ok": { file: "yes" } } } })
    const { snapshot } = await createSnapshot(store, src)
    const entry = (await loadTree(store, snapshot.tree)).entries.find((e) => e.name === "victim.bin") as FileEntry
    const chunk = entry.chunks![Math.floor(entry.chunks!.length / 2)]!
    const [loc] = await store.locateMany([chunk])
    if (!loc || loc === "pending") throw new Error("victim not indexed")
    backend.tamper(`data/${loc.pack.slice(0, 2)}/${loc.pack}`, (b) => {
      const c = Uint8Array.from(b)
      c[loc.offset + 500]! ^= 0x40
      return c
    })
    const dest = path.join(await tempDir(), "out")
    const err = await restoreSnapshot(store, snapshot, dest, { writers }).catch((e) => e)
    expect(err.code).toBe("INTEGRITY")
    expect(err.data.failed.map((f: { path: string }) => f.path)).toEqual(["victim.bin"])
    const names = await fsp.readdir(dest)
    expect(names.sort()).toEqual(["big.bin", "ok.txt", "sub"])
    expect((await fsp.readFile(path.join(dest, "big.bin"))).equals(big)).toBe(true)
    expect(await fsp.readFile(path.join(dest, "sub", "also-ok"), "utf8")).toBe("yes")
    await store.close()
  })
})

describe("hostile trees", () => {
  async function snapshotOfTree(store: Store, entries: unknown[]): Promise<SnapshotRecord> {
    const bytes = Buffer.from(JSON.stringify({ v: 1, entries }))
    const { id } = await store.putBlob(BLOB_TREE, bytes)
    await store.flush()
    return {
      id: "snap_0000000000000000",
      tree: id,
      createdAt: new Date().toISOString(),
      host: "x",
      source: "hand-made",
      exclude: [],
      labels: {},
      sizeBytes: 0,
      status: "ready",
      stats: { files: 0, dirs: 0, symlinks: 0, logicalBytes: 0, storedBytes: 0, addedBytes: 0 },
    }
  }
  const meta = { mode: 0o644, mtime: "0", uid: 0, gid: 0 }
  const empty = hashBytes(Buffer.alloc(0)) as BlobId
  const cases: Array<[string, unknown[]]> = [
    ["dot-dot", [{ name: "..", type: "file", ...meta, size: 0, chunks: [] }]],
    ["absolute", [{ name: "/etc/passwd", type: "file", ...meta, size: 0, chunks: [] }]],
    ["slash", [{ name: "a/../../x", type: "file", ...meta, size: 0, chunks: [] }]],
    ["nul", [{ name: "a\0b", type: "file", ...meta, size: 0, chunks: [] }]],
    ["empty name", [{ name: "", type: "file", ...meta, size: 0, chunks: [] }]],
    ["dot", [{ name: ".", type: "dir", ...meta, size: 0, tree: empty }]],
    ["duplicate names (symlink then dir through it)", [
      { name: "a", type: "symlink", ...meta, target: "/tmp" },
      { name: "a", type: "dir", ...meta, size: 0, tree: empty },
    ]],
    ["hardlink escaping", [{ name: "h", type: "file", ...meta, size: 0, link: "../../etc/passwd" }]],
    ["absolute hardlink", [{ name: "h", type: "file", ...meta, size: 0, link: "/etc/passwd" }]],
    ["unknown type", [{ name: "dev", type: "chardev", ...meta }]],
    ["huge mode", [{ name: "f", type: "file", ...meta, mode: 0o177777, size: 0, chunks: [] }]],
  ]
  for (const [label, entries] of cases) {
    it(`rejects ${label} and writes nothing outside the destination`, async () => {
      const store = await newStore()
      const snapshot = await snapshotOfTree(store, entries)
      const root = await tempDir()
      const dest = path.join(root, "dest")
      const err = await restoreSnapshot(store, snapshot, dest).catch((e) => e)
      expect(err?.code).toBe("INTEGRITY")
      expect(await fsp.readdir(root)).toEqual((await fsp.readdir(root)).filter((n) => n === "dest"))
      const inside = await fsp.readdir(dest).catch(() => [])
      expect(inside).toEqual([])
      await store.close()
    })
  }

  it("a directory the file system cannot make fails the restore with its error, and leaves no stage behind", async () => {
    const store = await newStore()
    const inner = (await store.putBlob(BLOB_TREE, Buffer.from(JSON.stringify({ v: 1, entries: [{ name: "f", type: "file", ...meta, size: 0, chunks: [] }] })))).id
    // a name longer than a directory entry can be (NAME_MAX, 255 bytes): the trees allow it, mkdir does not
    const snapshot = await snapshotOfTree(store, [{ name: "x".repeat(300), type: "dir", ...meta, mode: 0o755, size: 0, tree: inner }])
    const root = await tempDir()
    const err = await restoreSnapshot(store, snapshot, path.join(root, "new")).catch((e) => e)
    expect(String(err?.message)).toMatch(/ENAMETOOLONG/)
    const outcomes = await restoreSnapshotMany(store, snapshot, [{ dest: path.join(root, "fan-a") }, { dest: path.join(root, "fan-b") }])
    for (const o of outcomes) expect(o.status === "rejected" && String((o.reason as Error).message)).toMatch(/ENAMETOOLONG/)
    expect((await fsp.readdir(root)).sort()).toEqual(["fan-a", "fan-b", "new"])
    for (const d of ["new", "fan-a", "fan-b"]) expect(await fsp.readdir(path.join(root, d))).toEqual([])
    await store.close()
  })

  it("rejects a path deeper than 1024 levels made of shared subtrees (two levels breadth first)", async () => {
    const store = await newStore()
    const dirMeta = { mode: 0o755, mtime: "0", uid: 0, gid: 0, size: 0 }
    // x[i] holds x[i+1]; the root holds every x[i]: each tree is one level below the root,
    // but the path through all of them is 1100 deep
    let below = (await store.putBlob(BLOB_TREE, Buffer.from(JSON.stringify({ v: 1, entries: [] })))).id
    const chain: BlobId[] = []
    for (let i = 0; i < 1100; i++) {
      below = (await store.putBlob(BLOB_TREE, Buffer.from(JSON.stringify({ v: 1, entries: [{ name: "x", type: "dir", ...dirMeta, tree: below }] })))).id
      chain.push(below)
    }
    const entries = chain.reverse().map((tree, i) => ({ name: `d${String(i).padStart(4, "0")}`, type: "dir", ...dirMeta, tree }))
    const snapshot = await snapshotOfTree(store, entries)
    const dest = path.join(await tempDir(), "dest")
    const err = await restoreSnapshot(store, snapshot, dest).catch((e) => e)
    expect(err?.code).toBe("INTEGRITY")
    expect(String(err?.message)).toMatch(/deeper than 1024/)
    expect(await fsp.readdir(dest).catch(() => [])).toEqual([])
    await store.close()
  })

  it("a symlink in the tree is never followed by a later write", async () => {
    // the only way to name a path twice is a duplicate, which decodeTree refuses; here the
    // symlink points outside and a sibling file is restored next to it: nothing lands outside
    const store = await newStore()
    const outside = await tempDir()
    const src = await tempDir()
    await buildTree(src, { a: { symlink: outside }, b: { file: "inside" } })
    const { snapshot } = await createSnapshot(store, src)
    const dest = path.join(await tempDir(), "d")
    await restoreSnapshot(store, snapshot, dest)
    expect(await fsp.readdir(outside)).toEqual([])
    expect(await fsp.readlink(path.join(dest, "a"))).toBe(outside)
    await store.close()
  })
})

/**
 * A snapshot of 30 directories d0..d29, each holding f.txt and a directory
 * sub (with sub(d) in it), written through one store; and a second store on
 * the same backend whose pack reads are counted.
 */
async function thirtyDirs(backend: MemoryObjectStore, sub: (d: number) => DirSpec) {
  const store = await newStore(backend)
  const src = await tempDir()
  const spec: DirSpec = {}
  for (let d = 0; d < 30; d++) spec[`d${d}`] = { dir: { "f.txt": { file: `file ${d}` }, sub: { dir: sub(d) } } }
  await buildTree(src, spec)
  const { snapshot } = await createSnapshot(store, src)
  await store.close()
  const { backend: counting, packReads } = countingPackReads(backend)
  const reader = await Store.open({ backend: counting, cacheDir: await tempDir() })
  return { snapshot, reader, packReads }
}

describe("reading a snapshot's trees", () => {
  it("reads them with a few ranged reads per level, parents before children", async () => {
    const { snapshot, reader, packReads } = await thirtyDirs(new MemoryObjectStore(), (d) => ({ "g.txt": { file: `g ${d}` } }))
    const placed = await flattenTree(reader, snapshot.tree)
    // 61 trees on 3 levels; the packs are small (64 KiB), so a level may span a few of them
    expect(packReads.length).toBeLessThanOrEqual(8)
    expect(placed.length).toBe(30 * 4)
    const seen = new Set<string>()
    for (const p of placed) {
      const parent = p.rel.includes("/") ? p.rel.slice(0, p.rel.lastIndexOf("/")) : ""
      if (parent) expect(seen.has(parent)).toBe(true)
      seen.add(p.rel)
    }
    // depth first: a directory's subdirectory's entries come before the next sibling directory's
    const rels = placed.map((p) => p.rel)
    expect(rels.indexOf("d0/sub/g.txt")).toBeLessThan(rels.indexOf("d1/f.txt"))
    await reader.close()
  })

  it("on a remote repository, reads them the same way into the host's tree cache, then from it", async () => {
    const { snapshot, reader, packReads } = await thirtyDirs(Object.assign(new MemoryObjectStore(), { remote: true }), () => ({}))
    const first = await flattenTree(reader, snapshot.tree)
    expect(packReads.length).toBeGreaterThan(0)
    expect(packReads.length).toBeLessThanOrEqual(8) // not one per tree (61)
    const afterFirst = packReads.length
    // damage one cached tree: it is read again (and only it), the rest come from the cache
    const someTree = (first.find((p) => p.rel === "d7")!.entry as { tree: BlobId }).tree
    await fsp.writeFile(path.join(reader.cacheDir, "trees", someTree.slice(0, 2), someTree), "damaged")
    const second = await flattenTree(reader, snapshot.tree)
    expect(second).toEqual(first)
    expect(packReads.length).toBe(afterFirst + 1)
    await reader.close()
  })
})

describe("a restore that leaves paths unrestored", () => {
  const result = (failed: RestoreResult["failed"]): RestoreResult => ({ dest: "/d", files: 1, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, failed })
  it("blames the destination, not the repository, when writing failed; damage first when there is some", () => {
    const full = restoreFailed("/d", result([{ path: "a.bin", reason: "ENOSPC: no space left on device, write", code: "IO" }, { path: "b", reason: "ENOSPC: no space left on device, open", code: "IO" }]))
    expect(isCairnError(full, "IO")).toBe(true)
    expect(full.message).toBe(
      "restore into /d left 2 path(s) unrestored (first: a.bin: ENOSPC: no space left on device, write); the destination's disk is full: free some space, then restore again into an empty directory (or with overwrite)",
    )
    const other = restoreFailed("/d", result([{ path: "a", reason: "EIO: i/o error, write", code: "IO" }]))
    expect(other.message).toMatch(/; fix that, then restore again/)
    expect(other.message).not.toMatch(/verify/)
    const mixed = restoreFailed("/d", result([{ path: "a", reason: "EIO: i/o error, write", code: "IO" }, { path: "b", reason: "blob x does not match its hash", code: "INTEGRITY" }]))
    expect(isCairnError(mixed, "INTEGRITY")).toBe(true)
    expect(mixed.message).toBe('restore into /d left 2 path(s) unrestored (first: b: blob x does not match its hash); run "cairn verify --read-data" to see the damage')
  })
})
