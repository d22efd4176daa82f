// Crash consistency: `cairn snapshot`, `cairn restore` and `cairn gc` run as
// subprocesses and are SIGKILLed at seeded random moments (a delay drawn
// from 0..1.2x the command's measured run time, so most kills land mid-work).
// After every kill:
//   - the repository opens (`cairn ls --json` succeeds) and the killed
//     process's lock is treated as stale (the next command finishes in well
//     under the 60 s lock wait);
//   - `verify --read-data` passes (the CLI's, or the library stand-in in
//     driver.mjs while this build's CLI lacks it): every tree decodes and
//     every blob of every snapshot hash-checks;
//   - no snapshot is lost, and no partial one is listed: a snapshot the
//     killed process managed to commit must restore to exactly the source it
//     was taken from;
//   - snapshots restore identically (new ones after a snapshot kill; all of
//     them after a gc kill, the only command that deletes data);
//   - the next snapshot (or restore) succeeds and restores identically;
//   - a killed restore leaves no file under its final name with wrong mode,
//     size, content or mtime (temp files ".cairn-*.tmp" may remain).
// Hostile trees and tars are covered in test/engine/restore.property.test.ts
// and test/engine/tar.test.ts.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  FULL,
  buildCorpus,
  cairn,
  capabilities,
  checkPartialRestore,
  describeTree,
  gc,
  lastLine,
  openAndList,
  mutateCorpus,
  randInt,
  report,
  restoreAndDescribe,
  rng,
  tempDir,
  verify,
  type Listing,
} from "./harness.js"

const KILLS = FULL ? 50 : 3
const TEST_TIMEOUT = FULL ? 3_600_000 : 60_000
/** The lock wait is 60 s: a command that honours a dead process's lock as live would take that long. */
const PROMPT_MS = 20_000

let root: string
let repo: string
let src: string
/** snapshot id -> what it must restore to */
const expected = new Map<string, Listing>()
const deleted = new Set<string>()
const failures: string[] = []
const figures = { runs: 0, kills: 0, completedBeforeKill: 0, committedByKilled: 0, restoresChecked: 0, partialFilesChecked: 0, tempFilesLeft: 0, staleLocks: 0 }
const perCommand: Record<string, { kills: number; early: number }> = {
  snapshot: { kills: 0, early: 0 },
  restore: { kills: 0, early: 0 },
  gc: { kills: 0, early: 0 },
}

function fail(what: string): void {
  failures.push(what)
}

async function snapshotNow(what: string): Promise<string | undefined> {
  const want = await describeTree(src)
  const r = await cairn(["--repo", repo, "snapshot", src], { timeoutMs: 60_000 })
  figures.runs++
  if (r.code !== 0) {
    fail(`${what}: snapshot failed (${r.code}, ${r.ms.toFixed(0)} ms): ${r.stderr.trim()}`)
    return undefined
  }
  if (r.ms > PROMPT_MS) fail(`${what}: snapshot took ${r.ms.toFixed(0)} ms (a stale lock was honoured?)`)
  const id = lastLine(r.stdout)
  expected.set(id, want)
  return id
}

async function checkRestores(ids: Iterable<string>, what: string): Promise<void> {
  for (const id of ids) {
    const { run, listing } = await restoreAndDescribe(repo, id)
    figures.runs++
    figures.restoresChecked++
    if (run.code !== 0) fail(`${what}: restore ${id} failed (${run.code}): ${run.stderr.trim()}`)
    else if (JSON.stringify(listing) !== JSON.stringify(expected.get(id))) fail(`${what}: restore ${id} differs from its source`)
  }
}

async function countLocks(): Promise<number> {
  return (await fsp.readdir(path.join(repo, "locks")).catch(() => [])).length
}

/**
 * The checks after a kill. `pending` is what the killed snapshot (if any) was
 * taking: if a record for it appeared, it must restore to exactly that.
 * Returns the ids listed now that were not known before.
 */
async function afterKill(what: string, pending?: Listing): Promise<string[]> {
  figures.staleLocks += await countLocks()
  const ls = await openAndList(repo)
  if (!ls.ids) {
    fail(`${what}: the repository does not open: ${ls.error}`)
    return []
  }
  if (ls.ms > PROMPT_MS) fail(`${what}: opening and listing took ${ls.ms.toFixed(0)} ms`)
  const listed = new Set(ls.ids)
  for (const id of expected.keys()) if (!deleted.has(id) && !listed.has(id)) fail(`${what}: snapshot ${id} was lost`)
  const fresh = [...listed].filter((id) => !expected.has(id))
  if (fresh.length > (pending ? 1 : 0)) fail(`${what}: unexpected snapshots listed: ${fresh.join(", ")}`)
  for (const id of fresh) {
    if (!pending) continue
    figures.committedByKilled++
    expected.set(id, pending)
  }
  const v = await verify(repo)
  figures.runs++
  if (v.code !== 0) fail(`${what}: verify --read-data failed (${v.code}): ${v.stdout.trim().slice(0, 600)} ${v.stderr.trim().slice(0, 600)}`)
  return fresh
}

beforeAll(async () => {
  root = await tempDir("cairn-rel-crash-")
  repo = path.join(root, "repo")
  src = path.join(root, "src")
  await buildCorpus(src, "crash")
  expect((await cairn(["--repo", repo, "init"])).code).toBe(0)
  await capabilities()
}, 120_000)

afterAll(async () => {
  const leftovers: string[] = []
  const visit = async (dir: string) => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await visit(path.join(dir, e.name))
      else if (e.name.includes("~tmp-")) leftovers.push(path.join(dir, e.name))
    }
  }
  await visit(repo)
  figures.tempFilesLeft = leftovers.length
  const caps = await capabilities()
  report("crash", {
    ...figures,
    "kills.snapshot": perCommand.snapshot!.kills,
    "kills.restore": perCommand.restore!.kills,
    "kills.gc": perCommand.gc!.kills,
    exitedBeforeKill: Object.values(perCommand).reduce((n, c) => n + c.early, 0),
    verifyBy: caps.verify ? "cli" : "library",
    gcBy: caps.gc ? "cli" : "library",
    failures: failures.length,
  })
  await fsp.rm(root, { recursive: true, force: true })
})

describe("crash consistency: SIGKILL at random moments", () => {
  it(`cairn snapshot, killed ${KILLS} times`, async () => {
    const r = rng(101)
    const first = await snapshotNow("initial")
    expect(first).toBeDefined()
    // calibrate the kill window on a snapshot that has new data to write
    await mutateCorpus(src, r, "calibrate")
    const t0 = performance.now()
    await snapshotNow("calibration")
    const window = Math.max(200, (performance.now() - t0) * 1.2)
    for (let i = 0; perCommand.snapshot!.kills < KILLS && i < KILLS * (FULL ? 6 : 3) && failures.length < 5; i++) {
      await mutateCorpus(src, r, `s${i}`)
      const want = await describeTree(src)
      const run = await cairn(["--repo", repo, "snapshot", src], { killAfterMs: randInt(r, 0, window) })
      figures.runs++
      if (run.killed) {
        figures.kills++
        perCommand.snapshot!.kills++
        const fresh = await afterKill(`snapshot kill ${i}`, want)
        await checkRestores(fresh, `snapshot kill ${i}`)
      } else {
        perCommand.snapshot!.early++
        figures.completedBeforeKill++
        if (run.code !== 0) fail(`snapshot ${i} exited ${run.code} without being killed: ${run.stderr.trim()}`)
        else expected.set(lastLine(run.stdout), want)
      }
      // the next snapshot succeeds, promptly, and restores identically
      const next = await snapshotNow(`snapshot after kill ${i}`)
      if (next) await checkRestores([next], `snapshot after kill ${i}`)
    }
    // every kill was followed by verify --read-data over all snapshots; the full run restores them all too
    if (FULL) await checkRestores([...expected.keys()].filter((id) => !deleted.has(id)), "after the snapshot kills")
    expect(failures).toEqual([])
  }, TEST_TIMEOUT)

  it(`cairn restore, killed ${KILLS} times`, async () => {
    const r = rng(202)
    const ids = [...expected.keys()].filter((id) => !deleted.has(id))
    expect(ids.length).toBeGreaterThan(0)
    const cal = await restoreAndDescribe(repo, ids[ids.length - 1]!, { cli: true })
    figures.runs++
    if (cal.run.code !== 0) fail(`restore calibration failed: ${cal.run.stderr}`)
    const window = Math.max(200, cal.run.ms)
    for (let i = 0; perCommand.restore!.kills < KILLS && i < KILLS * (FULL ? 6 : 3) && failures.length < 5; i++) {
      const id = ids[randInt(r, 0, ids.length - 1)]!
      const dest = path.join(await tempDir("cairn-rel-partial-"), "out")
      const run = await cairn(["--repo", repo, "restore", id, dest], { killAfterMs: randInt(r, 0, window) })
      figures.runs++
      if (run.killed) {
        figures.kills++
        perCommand.restore!.kills++
        const partial = await checkPartialRestore(dest, expected.get(id)!)
        figures.partialFilesChecked += partial.files
        for (const w of partial.wrong) fail(`restore kill ${i} (${id}): ${w}`)
        await afterKill(`restore kill ${i}`)
      } else {
        perCommand.restore!.early++
        figures.completedBeforeKill++
        if (run.code !== 0) fail(`restore ${i} exited ${run.code} without being killed: ${run.stderr.trim()}`)
        else if (JSON.stringify(await describeTree(dest)) !== JSON.stringify(expected.get(id))) fail(`restore ${i} differs`)
      }
      await fsp.rm(path.dirname(dest), { recursive: true, force: true })
      // the next restore succeeds, promptly, and is identical
      const again = await restoreAndDescribe(repo, id)
      figures.runs++
      if (again.run.code !== 0 || again.run.ms > PROMPT_MS) fail(`restore after kill ${i}: ${again.run.code} in ${again.run.ms.toFixed(0)} ms: ${again.run.stderr.trim()}`)
      else if (JSON.stringify(again.listing) !== JSON.stringify(expected.get(id))) fail(`restore after kill ${i} differs`)
    }
    expect(failures).toEqual([])
  }, TEST_TIMEOUT)

  it(`cairn gc, killed ${KILLS} times`, async () => {
    const r = rng(303)
    /** makes garbage: a new snapshot with new data, then the oldest deletable snapshots go */
    const makeGarbage = async (tag: string) => {
      await mutateCorpus(src, r, tag)
      await snapshotNow(`${tag} snapshot`)
      const live = [...expected.keys()].filter((id) => !deleted.has(id))
      const victims = live.slice(1, Math.max(1, live.length - 2)) // keep the first and the 2 newest
      if (victims.length > 0) {
        const { Repository } = await import("../../engine/repository.js")
        const handle = await Repository.open({ path: repo, create: false })
        try {
          await handle.snapshots.delete(victims)
          for (const v of victims) deleted.add(v)
        } catch (err) {
          fail(`${tag}: rm failed: ${String(err)}`)
        } finally {
          await handle.close()
        }
      }
    }
    await makeGarbage("gc-calibrate")
    const t0 = performance.now()
    const cal = await gc(repo)
    figures.runs++
    if (cal.code !== 0) fail(`gc calibration failed (${cal.code}): ${cal.stderr.trim()}`)
    // gc's work ends well before the process exits (closing, releasing): aim inside it
    const window = Math.max(150, (performance.now() - t0) * 0.9)
    for (let i = 0; perCommand.gc!.kills < KILLS && i < KILLS * (FULL ? 6 : 3) && failures.length < 5; i++) {
      await makeGarbage(`g${i}`)
      const run = await gc(repo, { killAfterMs: randInt(r, 0, window) })
      figures.runs++
      if (run.killed) {
        figures.kills++
        perCommand.gc!.kills++
        await afterKill(`gc kill ${i}`)
      } else {
        perCommand.gc!.early++
        figures.completedBeforeKill++
        if (run.code !== 0) fail(`gc ${i} exited ${run.code} without being killed: ${run.stderr.trim()}`)
      }
      // gc deletes data: every snapshot must still restore identically
      await checkRestores([...expected.keys()].filter((id) => !deleted.has(id)), `gc kill ${i}`)
      await snapshotNow(`snapshot after gc kill ${i}`) // restored by the next round's check
    }
    // a rerun finishes the job
    const last = await gc(repo)
    figures.runs++
    if (last.code !== 0) fail(`final gc failed (${last.code}): ${last.stderr.trim()}`)
    await afterKill("after the final gc")
    await checkRestores([...expected.keys()].filter((id) => !deleted.has(id)), "after the final gc")
    expect(failures).toEqual([])
  }, TEST_TIMEOUT)
})
