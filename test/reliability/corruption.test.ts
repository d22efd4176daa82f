// Corruption: seeded damage (flipped bytes, truncation, deletion) to pack
// files, index files and snapshot records of a repository on disk
// (FsObjectStore, 128 KiB packs so that there are many), then:
//   - repo.verify({ readData: true }) names every damaged blob that a snapshot
//     references, with the snapshots and paths depending on it;
//   - a restore of a snapshot that needs a damaged blob fails with INTEGRITY
//     (exit 3 from the CLI) and never writes wrong bytes under a final name;
//     files that need no damaged blob still restore;
//   - snapshots that need no damaged blob restore identically;
//   - a lost local index (<repo>/cache deleted) is rebuilt, and a lost or
//     damaged shared index is rebuilt from the packs by `cairn rebuild-index`;
//   - a damaged entry of the host-local materialization cache is never
//     copied into a restore.
// Ground truth comes from the packs' own headers (parsePack) and the trees.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Repository } from "../../engine/repository.js"
import { flattenTree } from "../../engine/walk.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { isCairnError } from "../../store/errors.js"
import { decode } from "../../store/codec.js"
import { hashBytes } from "../../store/ids.js"
import { parsePack, type PackEntry } from "../../store/pack.js"
import { Store } from "../../store/store.js"
import { buildTree } from "../fixtures.js"
import { seededBytes, textBytes } from "../helpers.js"
import { FULL, cairn, checkPartialRestore, describeTree, randInt, report, rng, tempDir, type Listing, type Rng } from "./harness.js"

const TRIALS = FULL ? 300 : 18
const PACK_SIZE = 128 * 1024

let root: string
let template: string
let snapshots: SnapshotRecord[] = []
const expected = new Map<string, Listing>()
/** blob id -> who needs it ("/path" as verify names paths) */
const users = new Map<string, { snapshots: Set<string>; paths: Set<string> }>()
/** per snapshot: path -> blobs it needs (file chunks, and every tree on the way) */
const needs = new Map<string, Map<string, Set<string>>>()
/** pack id -> blobs and their byte ranges */
const treeIds = new Set<string>()
/** every place a blob is needed: snapshot, path, and the trees above it */
const occurrences: Array<{ blob: string; snap: string; path: string; above: string[] }> = []
const packs = new Map<string, { key: string; size: number; entries: PackEntry[] }>()
const failures: string[] = []
const figures = { trials: 0, damagedObjects: 0, "by.pack": 0, "by.index": 0, "by.record": 0, restores: 0, restoresRefused: 0, cliChecks: 0, damageNamed: 0, wrongBytes: 0 }

async function copyDir(from: string, to: string): Promise<void> {
  await fsp.cp(from, to, { recursive: true })
}

function addUser(blob: string, snap: string, p: string): void {
  let u = users.get(blob)
  if (!u) users.set(blob, (u = { snapshots: new Set(), paths: new Set() }))
  u.snapshots.add(snap)
  u.paths.add(p)
}

beforeAll(async () => {
  root = await tempDir("cairn-rel-corrupt-")
  template = path.join(root, "template")
  const src = path.join(root, "src")
  const files: Record<string, { file: Uint8Array | string }> = {}
  for (let i = 0; i < 40; i++) files[`t${i}.txt`] = { file: textBytes(`corrupt-${i}`, 500 + i * 300) }
  await buildTree(src, {
    small: { dir: files },
    big: { dir: { "r1.bin": { file: seededBytes("r1", 400_000) }, "r2.bin": { file: seededBytes("r2", 300_000) } } },
    nested: { dir: { a: { dir: { b: { dir: { "deep.txt": { file: "deep\n" } } } } } } },
    "top.txt": { file: "top\n" },
  })
  const store = await Store.init({ backend: new FsObjectStore(template), cacheDir: path.join(template, "cache"), config: { packSize: PACK_SIZE } })
  await store.close()
  const repo = await Repository.open({ path: template, create: false })
  const take = async () => {
    const { snapshot } = await repo.snapshots.create(src)
    expected.set(snapshot.id, await describeTree(src))
    snapshots.push(snapshot)
  }
  await take()
  await fsp.writeFile(path.join(src, "big", "r2.bin"), seededBytes("r2-v2", 300_000))
  await fsp.writeFile(path.join(src, "small", "t3.txt"), "changed\n")
  await take()
  await buildTree(path.join(src, "extra"), { "x.bin": { file: seededBytes("x", 200_000) }, "y.txt": { file: "why\n" } })
  await take()
  for (const s of snapshots) {
    const need = new Map<string, Set<string>>()
    const treeOf = new Map<string, string[]>([["", [s.tree]]])
    addUser(s.tree, s.id, "/")
    treeIds.add(s.tree)
    occurrences.push({ blob: s.tree, snap: s.id, path: "/", above: [] })
    for (const p of await flattenTree(repo.store, s.tree)) {
      const parent = p.rel.includes("/") ? p.rel.slice(0, p.rel.lastIndexOf("/")) : ""
      const chain = treeOf.get(parent)!
      if (p.entry.type === "dir") {
        treeOf.set(p.rel, [...chain, p.entry.tree])
        addUser(p.entry.tree, s.id, `/${p.rel}`)
        treeIds.add(p.entry.tree)
        occurrences.push({ blob: p.entry.tree, snap: s.id, path: `/${p.rel}`, above: chain })
      }
      if (p.entry.type === "file") {
        for (const c of p.entry.chunks ?? []) {
          addUser(c, s.id, `/${p.rel}`)
          occurrences.push({ blob: c, snap: s.id, path: `/${p.rel}`, above: chain })
        }
        need.set(p.rel, new Set([...chain, ...(p.entry.chunks ?? [])]))
      }
    }
    needs.set(s.id, need)
  }
  await repo.close()
  for (const obj of await new FsObjectStore(template).list("data/")) {
    const id = obj.key.slice(obj.key.lastIndexOf("/") + 1)
    const bytes = await fsp.readFile(path.join(template, obj.key))
    packs.set(id, { key: obj.key, size: obj.size, entries: parsePack(bytes, id) })
  }
}, 120_000)

afterAll(async () => {
  report("corruption", { ...figures, failures: failures.length })
  await fsp.rm(root, { recursive: true, force: true })
})

type Damage = { target: "pack" | "index" | "record"; how: "flip" | "truncate" | "delete"; key: string; at?: number }

/** Damages one object of the repository at dir; returns the blobs whose bytes are certainly gone, and those that may be. */
async function damage(dir: string, r: Rng, target: Damage["target"]): Promise<{ d: Damage; lost: Set<string>; touched: Set<string> }> {
  const how = (["flip", "truncate", "delete"] as const)[randInt(r, 0, 2)]!
  const lost = new Set<string>()
  const touched = new Set<string>()
  let key: string
  if (target === "pack") {
    const ids = [...packs.keys()].sort()
    const id = ids[randInt(r, 0, ids.length - 1)]!
    const pack = packs.get(id)!
    key = pack.key
    const file = path.join(dir, key)
    const all = () => pack.entries.forEach((e) => (lost.add(e.id), touched.add(e.id)))
    if (how === "delete") {
      await fsp.rm(file)
      all()
      return { d: { target, how, key }, lost, touched }
    }
    const bytes = await fsp.readFile(file)
    const at = randInt(r, 0, bytes.length - 1)
    if (how === "flip") {
      bytes[at]! ^= 1 << randInt(r, 0, 7)
      await fsp.writeFile(file, bytes)
      const hit = pack.entries.find((e) => at >= e.offset && at < e.offset + e.length)
      if (hit) {
        touched.add(hit.id)
        // a brotli stream has bits whose flip leaves its output as it was (~1% of single-bit flips of a
        // small blob, the window size among them): then the blob still decodes to its id and nothing is lost
        if (!(await stillDecodes(hit, bytes))) lost.add(hit.id)
      } else pack.entries.forEach((e) => touched.add(e.id)) // header or trailer: the blobs are intact, the pack is not
    } else {
      await fsp.truncate(file, at)
      for (const e of pack.entries) {
        touched.add(e.id)
        if (e.offset + e.length > at) lost.add(e.id)
      }
    }
    return { d: { target, how, key, at }, lost, touched }
  }
  const prefix = target === "index" ? "index" : "snapshots"
  const names = (await fsp.readdir(path.join(dir, prefix))).sort()
  key = `${prefix}/${names[randInt(r, 0, names.length - 1)]!}`
  const file = path.join(dir, key)
  if (how === "delete") await fsp.rm(file)
  else {
    const bytes = await fsp.readFile(file)
    const at = randInt(r, 0, bytes.length - 1)
    if (how === "flip") bytes[at]! ^= 1 << randInt(r, 0, 7)
    await fsp.writeFile(file, how === "flip" ? bytes : bytes.subarray(0, at))
  }
  return { d: { target, how, key }, lost, touched }
}

/** Whether a pack entry's stored bytes, as damaged, still decode to exactly the blob its id names. */
async function stillDecodes(e: PackEntry, pack: Uint8Array): Promise<boolean> {
  try {
    return hashBytes(await decode(e.codec, pack.subarray(e.offset, e.offset + e.length), e.rawLength, true)) === e.id
  } catch {
    return false
  }
}

/** Restores every listed snapshot; checks refusals, partial results and identity against what the damage allows. */
async function checkRestores(repo: Repository, dir: string, lost: Set<string>, touched: Set<string>, what: string): Promise<void> {
  for (const s of await repo.snapshots.list()) {
    const want = expected.get(s.id)
    if (!want) {
      failures.push(`${what}: unknown snapshot ${s.id} listed`)
      continue
    }
    const need = needs.get(s.id)!
    const mustFail = [...need].filter(([, blobs]) => [...blobs].some((b) => lost.has(b))).map(([p]) => p)
    const mayFail = new Set([...need].filter(([, blobs]) => [...blobs].some((b) => touched.has(b))).map(([p]) => p))
    const dest = path.join(dir, "restores", s.id)
    figures.restores++
    const err = await repo.snapshots.restore(s.id, dest).then(
      () => undefined,
      (e: unknown) => e,
    )
    const partial = await checkPartialRestore(dest, want)
    for (const w of partial.wrong) {
      figures.wrongBytes++
      failures.push(`${what}: restore of ${s.id} wrote wrong data: ${w}`)
    }
    if (err === undefined) {
      if (mustFail.length > 0) failures.push(`${what}: restore of ${s.id} succeeded though ${mustFail[0]} lost data`)
      else if (JSON.stringify(await describeTree(dest)) !== JSON.stringify(want)) failures.push(`${what}: restore of ${s.id} differs`)
      continue
    }
    figures.restoresRefused++
    if (!isCairnError(err, "INTEGRITY")) {
      failures.push(`${what}: restore of ${s.id} failed with ${isCairnError(err) ? err.code : String(err)}, not INTEGRITY`)
      continue
    }
    // undamaged files still restore (unless a tree on the way is damaged, which stops the whole restore)
    const failed = new Set(((err.data.failed as Array<{ path: string }>) ?? []).map((f) => f.path))
    const treeHit = [...touched].some((b) => treeIds.has(b))
    if (failed.size === 0 && !treeHit) failures.push(`${what}: restore of ${s.id} stopped as a whole though only file data is damaged`)
    if (failed.size > 0) {
      for (const rel of Object.keys(want)) {
        if (!want[rel]!.startsWith("file ") || mayFail.has(rel) || want[rel]!.includes(" link=")) continue
        if (failed.has(rel)) failures.push(`${what}: restore of ${s.id} failed undamaged ${rel}`)
      }
      for (const p of mustFail) if (!failed.has(p)) failures.push(`${what}: restore of ${s.id} did not report ${p}`)
    }
  }
}

describe("corruption: damaged packs, index files and records", () => {
  it(`${TRIALS} seeded damages: verify names them, restores refuse them, nothing wrong is written`, async () => {
    const r = rng(404)
    const targets = ["pack", "index", "record"] as const
    for (let t = 0; t < TRIALS; t++) {
      const target = targets[t % 3]!
      const dir = path.join(root, `trial-${t}`)
      await copyDir(template, dir)
      const { d, lost, touched } = await damage(dir, r, target)
      figures.trials++
      figures.damagedObjects++
      figures[`by.${target}`]++
      const what = `trial ${t} (${d.how} ${d.key}${d.at === undefined ? "" : ` at ${d.at}`})`
      const repo = await Repository.open({ path: dir, create: false })
      try {
        const v = await repo.verify({ readData: true })
        const referenced = [...lost].filter((b) => users.has(b))
        if (target === "pack") {
          if (referenced.length > 0 && v.ok) failures.push(`${what}: verify found no damage`)
          // every lost blob verify can reach (no lost tree above it) is named, with each snapshot and path needing it
          const named = new Set<string>()
          for (const o of occurrences) {
            if (!lost.has(o.blob) || o.above.some((t) => lost.has(t))) continue
            const dmg = v.damage.find((x) => x.blob === o.blob)
            if (!dmg) failures.push(`${what}: verify did not name damaged blob ${o.blob}`)
            else {
              if (!named.has(o.blob)) figures.damageNamed++
              named.add(o.blob)
              if (!dmg.snapshots.includes(o.snap)) failures.push(`${what}: verify did not name snapshot ${o.snap} for blob ${o.blob}`)
              if (!dmg.paths.includes(o.path)) failures.push(`${what}: verify did not name path ${o.path} for blob ${o.blob}`)
            }
          }
          await checkRestores(repo, dir, lost, touched, what)
        } else if (target === "record") {
          // a damaged record: verify names it (or the flip kept it meaningful), the other snapshots restore
          const name = path.basename(d.key)
          if (d.how !== "delete" && !v.ok && !v.damage.some((x) => x.snapshots.includes(name) || x.record?.includes(name))) {
            failures.push(`${what}: verify reports damage that does not name ${name}: ${JSON.stringify(v.damage).slice(0, 300)}`)
          }
          await checkRecordTrial(repo, dir, name, what)
        } else {
          // an index file: this host's cache already holds it, so only a deletion shows; rebuild-index heals both
          await checkRestores(repo, dir, new Set(), indexTouched(d), what)
        }
      } finally {
        await repo.close()
      }
      if (t % 3 === 0) await cliChecks(dir, what, lost)
      await fsp.rm(dir, { recursive: true, force: true })
      if (failures.length > 8) break
    }
    expect(failures).toEqual([])
  }, FULL ? 3_600_000 : 60_000)

  it("a lost local index (cache deleted) is rebuilt from the index files", async () => {
    const dir = path.join(root, "lost-cache")
    await copyDir(template, dir)
    await fsp.rm(path.join(dir, "cache"), { recursive: true })
    const repo = await Repository.open({ path: dir, create: false })
    try {
      expect((await repo.verify({ readData: true })).ok).toBe(true)
      for (const s of snapshots) {
        await repo.snapshots.restore(s.id, path.join(dir, "out", s.id))
        expect(await describeTree(path.join(dir, "out", s.id))).toEqual(expected.get(s.id))
      }
    } finally {
      await repo.close()
    }
  })

  it("lost index files are rebuilt from the packs by `cairn rebuild-index`", async () => {
    const dir = path.join(root, "lost-index")
    await copyDir(template, dir)
    await fsp.rm(path.join(dir, "index"), { recursive: true })
    await fsp.rm(path.join(dir, "cache"), { recursive: true })
    const rb = await cairn(["--repo", dir, "rebuild-index"])
    figures.cliChecks++
    expect(rb.code, rb.stderr).toBe(0)
    expect((await cairn(["--repo", dir, "verify", "--read-data"])).code).toBe(0)
    for (const s of snapshots) {
      const out = path.join(dir, "out", s.id)
      expect((await cairn(["--repo", dir, "restore", s.id, out])).code).toBe(0)
      expect(await describeTree(out)).toEqual(expected.get(s.id))
    }
  })

  /** A copy of the template repository with one bit of its first index file flipped. */
  async function copyWithDamagedIndex(name: string): Promise<string> {
    const dir = path.join(root, name)
    await copyDir(template, dir)
    const names = await fsp.readdir(path.join(dir, "index"))
    const file = path.join(dir, "index", names.sort()[0]!)
    const bytes = await fsp.readFile(file)
    bytes[20]! ^= 0x01
    await fsp.writeFile(file, bytes)
    return dir
  }

  it("a damaged index file does not lock a fresh host out: `cairn rebuild-index` recovers", async () => {
    // a host without a cache (another machine, or a deleted cache) reads every index file
    const dir = await copyWithDamagedIndex("damaged-index")
    await fsp.rm(path.join(dir, "cache"), { recursive: true })
    const rb = await cairn(["--repo", dir, "rebuild-index"])
    figures.cliChecks++
    expect(rb.code, `rebuild-index: ${rb.stderr}`).toBe(0)
    expect((await cairn(["--repo", dir, "verify", "--read-data"])).code).toBe(0)
    for (const s of snapshots) expect((await cairn(["--repo", dir, "restore", s.id, path.join(dir, "out", s.id)])).code).toBe(0)
  })

  it("verify --read-data reports a damaged index file even when this host's cache already loaded it", async () => {
    const dir = await copyWithDamagedIndex("damaged-index-cached")
    const v = await cairn(["--repo", dir, "verify", "--read-data"])
    figures.cliChecks++
    // every other host fails to open this repository; verify must not call it healthy
    expect(v.code, v.stdout).toBe(3)
  })

  it("a damaged materialization-cache entry is never copied into a restore", async () => {
    const dir = path.join(root, "matcache")
    await copyDir(template, dir)
    const s = snapshots[0]!
    expect((await cairn(["--repo", dir, "restore", s.id, path.join(dir, "out1")])).code).toBe(0)
    const entries: string[] = []
    const visit = async (d: string) => {
      for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await visit(path.join(d, e.name))
        else entries.push(path.join(d, e.name))
      }
    }
    await visit(path.join(dir, "cache", "files"))
    expect(entries.length).toBeGreaterThan(0) // the 300-400 KiB files were cached
    for (const f of entries) {
      const b = await fsp.readFile(f)
      b[1000]! ^= 0x80
      await fsp.writeFile(f, b)
    }
    const out = path.join(dir, "out2")
    const r2 = await cairn(["--repo", dir, "restore", s.id, out])
    figures.cliChecks++
    const partial = await checkPartialRestore(out, expected.get(s.id)!)
    if (partial.wrong.length > 0) figures.wrongBytes += partial.wrong.length
    expect(partial.wrong, `restore exited ${r2.code}`).toEqual([])
  })
})

function indexTouched(d: Damage): Set<string> {
  // a deleted index file makes the blobs it lists unfindable until rebuild-index; with a flip or
  // truncation this host's cache still holds it. Any blob may be affected: be lenient, check bytes.
  if (d.how !== "delete") return new Set()
  return new Set([...users.keys()])
}

async function checkRecordTrial(repo: Repository, dir: string, name: string, what: string): Promise<void> {
  for (const s of snapshots) {
    const dest = path.join(dir, "restores", s.id)
    figures.restores++
    const err = await repo.snapshots.restore(s.id, dest).then(
      () => undefined,
      (e: unknown) => e,
    )
    const partial = await checkPartialRestore(dest, expected.get(s.id)!)
    for (const w of partial.wrong) failures.push(`${what}: restore of ${s.id} wrote wrong data: ${w}`)
    if (err === undefined) {
      if (JSON.stringify(await describeTree(dest)) !== JSON.stringify(expected.get(s.id))) failures.push(`${what}: restore of ${s.id} differs`)
    } else {
      figures.restoresRefused++
      if (s.id !== name) failures.push(`${what}: restore of undamaged snapshot ${s.id} failed: ${String(err)}`)
      else if (!isCairnError(err)) failures.push(`${what}: restore of ${s.id} failed with a non-cairn error: ${String(err)}`)
    }
  }
}

async function cliChecks(dir: string, what: string, lost: Set<string>): Promise<void> {
  figures.cliChecks++
  const v = await cairn(["--repo", dir, "verify", "--read-data"])
  const referenced = occurrences.filter((o) => lost.has(o.blob) && !o.above.some((t) => lost.has(t))).map((o) => o.blob)
  if (referenced.length > 0 && v.code !== 3) failures.push(`${what}: cairn verify --read-data exited ${v.code}, not 3`)
  if (referenced.length === 0) return
  // --json names every damaged blob; the human output names it, or its pack when it joins that pack's blobs on one line
  const json = await cairn(["--repo", dir, "verify", "--read-data", "--json"])
  const entry = (JSON.parse(json.stdout) as { damage: Array<{ blob?: string; pack?: string }> }).damage.find((x) => x.blob === referenced[0])
  if (!entry) failures.push(`${what}: cairn verify --json does not name blob ${referenced[0]}`)
  else if (!v.stdout.includes(referenced[0]!) && !(entry.pack !== undefined && v.stdout.includes(entry.pack))) {
    failures.push(`${what}: cairn verify names neither blob ${referenced[0]} nor its pack ${entry.pack}`)
  }
  const victim = [...users.get(referenced[0]!)!.snapshots][0]!
  const out = path.join(dir, "cli-out")
  const rs = await cairn(["--repo", dir, "restore", victim, out])
  if (rs.code !== 3) failures.push(`${what}: cairn restore of damaged ${victim} exited ${rs.code}, not 3: ${rs.stderr.trim()}`)
  if (/\n\s+at /.test(rs.stderr)) failures.push(`${what}: cairn restore printed a stack trace`)
  const partial = await checkPartialRestore(out, expected.get(victim)!)
  for (const w of partial.wrong) failures.push(`${what}: cairn restore wrote wrong data: ${w}`)
}
