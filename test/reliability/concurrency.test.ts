// Concurrency: several CLI processes on one repository at once.
//   - 2 and 4 processes snapshot different directories at the same moment:
//     all succeed, every snapshot restores identically, verify passes;
//   - a snapshot while gc runs (started in either order, seeded stagger):
//     both succeed (the exclusive lock makes one wait), and the snapshot
//     restores, including when its data equals what gc is deleting;
//   - 4 restores fan out while a snapshot writes: all identical.
// Plus the library-level root cause of a lost-data race found here: a store
// opened before a gc keeps its index and dedups against blobs gc deleted.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { collectGarbage } from "../../engine/gc.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { Store } from "../../store/store.js"
import { seededBytes } from "../helpers.js"
import {
  FULL,
  buildCorpus,
  DRIVER,
  cairn,
  describeTree,
  gc,
  lastLine,
  mutateCorpus,
  randInt,
  report,
  restoreAndDescribe,
  rng,
  runNode,
  tempDir,
  verify,
  type CorpusOptions,
  type Listing,
  type Run,
} from "./harness.js"

const ROUNDS = FULL ? 10 : 1
const SMALL: CorpusOptions = { dirs: 4, filesPerDir: 20, bigFiles: 2, bigSize: 768 * 1024 }

let root: string
let repo: string
const expected = new Map<string, Listing>()
let failures: string[] = []
const figures = { rounds: 0, processes: 0, snapshots: 0, restores: 0, gcRuns: 0, verifies: 0, failures: 0 }

/** Each test gets its own repository, so that damage found by one does not cascade into the next. */
async function freshRepo(name: string): Promise<void> {
  figures.failures += failures.length
  failures = []
  expected.clear()
  repo = path.join(root, name)
  expect((await cairn(["--repo", repo, "init"])).code).toBe(0)
}

beforeAll(async () => {
  root = await tempDir("cairn-rel-conc-")
})

afterAll(async () => {
  figures.failures += failures.length
  report("concurrency", figures)
  await fsp.rm(root, { recursive: true, force: true })
})

function ok(r: Run, what: string): boolean {
  figures.processes++
  if (r.code === 0) return true
  failures.push(`${what}: exited ${r.code}${r.signal ? ` (${r.signal})` : ""} after ${r.ms.toFixed(0)} ms: ${r.stderr.trim().slice(0, 400)}`)
  return false
}

async function checkAll(what: string): Promise<void> {
  const v = await verify(repo)
  figures.verifies++
  if (v.code !== 0) failures.push(`${what}: verify failed (${v.code}): ${(v.stdout + v.stderr).slice(0, 600)}`)
  for (const [id, want] of expected) {
    const { run, listing } = await restoreAndDescribe(repo, id)
    figures.restores++
    if (run.code !== 0) failures.push(`${what}: restore ${id} failed (${run.code}): ${run.stderr.trim().slice(0, 300)}`)
    else if (JSON.stringify(listing) !== JSON.stringify(want)) failures.push(`${what}: restore ${id} differs from its source`)
  }
}

async function parallelSnapshots(n: number, round: number): Promise<void> {
  const dirs = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const dir = path.join(root, `src-${n}-${round}-${i}`)
      await buildCorpus(dir, `conc-${n}-${round}-${i}`, SMALL)
      return { dir, want: await describeTree(dir) }
    }),
  )
  const runs = await Promise.all(dirs.map((d) => cairn(["--repo", repo, "snapshot", d.dir])))
  runs.forEach((r, i) => {
    figures.snapshots++
    if (ok(r, `${n} parallel snapshots, #${i}`)) expected.set(lastLine(r.stdout), dirs[i]!.want)
  })
}

describe("concurrency: many processes, one repository", () => {
  it("2 and 4 processes snapshot different directories at once", async () => {
    await freshRepo("parallel")
    for (let round = 0; round < ROUNDS; round++) {
      figures.rounds++
      await parallelSnapshots(2, round)
      await parallelSnapshots(4, round)
    }
    await checkAll("after parallel snapshots")
    expect(failures).toEqual([])
  }, FULL ? 1_800_000 : 60_000)

  it("4 processes create a box of one name at the same moment: exactly one gets it", async () => {
    await freshRepo("box-names")
    // started together, each waits for one instant, so that their checks and registrations overlap
    const at = String(Date.now() + 1500)
    const runs = await Promise.all(Array.from({ length: 4 }, () => runNode(DRIVER, ["box-create", repo, "twin", at])))
    figures.processes += runs.length
    const won = runs.filter((r) => r.code === 0)
    expect(won, runs.map((r) => r.stderr).join("")).toHaveLength(1)
    for (const r of runs.filter((x) => x.code !== 0)) {
      expect(r.code).toBe(6)
      expect(r.stderr).toMatch(/^driver: ALREADY_EXISTS (a box named "twin" already exists|another process is creating a box named "twin")/)
    }
    const list = JSON.parse((await cairn(["--repo", repo, "box", "ls", "--json"])).stdout) as unknown
    const boxes = (Array.isArray(list) ? list : (list as { boxes: Array<{ name?: string }> }).boxes) as Array<{ name?: string }>
    expect(boxes.filter((b) => b.name === "twin")).toHaveLength(1)
  })

  it("snapshot while gc runs: both succeed, and the snapshot restores", async () => {
    await freshRepo("gc-race")
    const r = rng(505)
    const src = path.join(root, "gc-src")
    await buildCorpus(src, "gc-race", SMALL)
    for (let round = 0; round < (FULL ? 20 : 3); round++) {
      figures.rounds++
      // garbage whose content the racing snapshot is about to store again
      await mutateCorpus(src, r, `race${round}`, SMALL)
      const want = await describeTree(src)
      const first = await cairn(["--repo", repo, "snapshot", src])
      figures.snapshots++
      if (!ok(first, `round ${round}: setup snapshot`)) continue
      const rm = await cairn(["--repo", repo, "rm", lastLine(first.stdout)])
      if (!ok(rm, `round ${round}: rm`)) continue
      const gcFirst = round % 2 === 0
      const stagger = randInt(r, 0, 250)
      const later = <T>(p: () => Promise<T>) => new Promise<T>((res) => setTimeout(() => res(p()), stagger))
      const [g, s] = await Promise.all([
        gcFirst ? gc(repo) : later(() => gc(repo)),
        gcFirst ? later(() => cairn(["--repo", repo, "snapshot", src])) : cairn(["--repo", repo, "snapshot", src]),
      ])
      figures.gcRuns++
      figures.snapshots++
      ok(g, `round ${round}: gc (${gcFirst ? "first" : `${stagger} ms after the snapshot`})`)
      if (ok(s, `round ${round}: snapshot (${gcFirst ? `${stagger} ms after gc` : "first"})`)) {
        const id = lastLine(s.stdout)
        expected.set(id, want)
        const { run, listing } = await restoreAndDescribe(repo, id)
        figures.restores++
        if (run.code !== 0) failures.push(`round ${round}: the snapshot taken during gc does not restore: ${run.stderr.trim().slice(0, 400)}`)
        else if (JSON.stringify(listing) !== JSON.stringify(want)) failures.push(`round ${round}: the snapshot taken during gc differs`)
      }
    }
    await checkAll("after snapshot-vs-gc")
    expect(failures).toEqual([])
  }, FULL ? 1_800_000 : 60_000)

  it("4 restores fan out while a snapshot writes", async () => {
    await freshRepo("fan-out")
    const r = rng(606)
    const src = path.join(root, "fan-src")
    await buildCorpus(src, "fan", SMALL)
    const base = await cairn(["--repo", repo, "snapshot", src])
    expect(base.code).toBe(0)
    const baseId = lastLine(base.stdout)
    const baseWant = await describeTree(src)
    expected.set(baseId, baseWant)
    for (let round = 0; round < ROUNDS + 1; round++) {
      figures.rounds++
      await mutateCorpus(src, r, `fan${round}`, SMALL)
      const want = await describeTree(src)
      const dests = await Promise.all([0, 1, 2, 3].map(async () => path.join(await tempDir("cairn-rel-fan-"), "out")))
      const [snap, ...restores] = await Promise.all([
        cairn(["--repo", repo, "snapshot", src]),
        ...dests.map((d) => cairn(["--repo", repo, "restore", baseId, d])),
      ])
      figures.snapshots++
      if (ok(snap!, `round ${round}: snapshot during fan-out`)) expected.set(lastLine(snap!.stdout), want)
      for (let i = 0; i < restores.length; i++) {
        figures.restores++
        if (!ok(restores[i]!, `round ${round}: restore #${i}`)) continue
        if (JSON.stringify(await describeTree(dests[i]!)) !== JSON.stringify(baseWant)) failures.push(`round ${round}: restore #${i} differs`)
      }
      await Promise.all(dests.map((d) => fsp.rm(path.dirname(d), { recursive: true, force: true })))
    }
    await checkAll("after fan-out")
    expect(failures).toEqual([])
  }, FULL ? 1_800_000 : 60_000)

  it("a store opened before a gc does not commit snapshots that reference what the gc deleted", async () => {
    // The library form of the race above: a long-lived process (a Box user, or a
    // `cairn snapshot` that opened the repository while gc held the lock) keeps
    // the index it loaded at open; gc deletes a dead pack; the snapshot then
    // dedups against the deleted blobs and commits a record that cannot restore.
    const dir = await tempDir("cairn-rel-stale-")
    const repoDir = path.join(dir, "repo")
    const src = path.join(dir, "src")
    await fsp.mkdir(src)
    await fsp.writeFile(path.join(src, "x.bin"), seededBytes("stale-index", 100_000))
    const s0 = await Store.init({ backend: new FsObjectStore(repoDir), cacheDir: path.join(dir, "c0") })
    const { snapshot: dead } = await createSnapshot(s0, src)
    await s0.deleteRecord("snapshots", dead.id)
    await s0.close()
    const longLived = await Store.open({ backend: new FsObjectStore(repoDir), cacheDir: path.join(dir, "c1") })
    const gcStore = await Store.open({ backend: new FsObjectStore(repoDir), cacheDir: path.join(dir, "c2") })
    expect((await collectGarbage(gcStore)).packsDeleted).toBe(1)
    await gcStore.close()
    const { snapshot } = await createSnapshot(longLived, src)
    const out = path.join(dir, "out")
    const err = await restoreSnapshot(longLived, snapshot, out).then(
      () => undefined,
      (e: Error) => e.message,
    )
    await longLived.close()
    const same = err === undefined && JSON.stringify(await describeTree(out)) === JSON.stringify(await describeTree(src))
    await fsp.rm(dir, { recursive: true, force: true })
    expect(err).toBeUndefined()
    expect(same).toBe(true)
  })
})
