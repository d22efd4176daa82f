// Faults from below: the repository's backend (FsObjectStore) wrapped in
// FaultyObjectStore, which injects EIO, ENOSPC, HTTP 503, torn writes,
// connection resets and delays at seeded random operations, during
// Store.open, createSnapshot, restoreSnapshot, collectGarbage and close.
// Each operation must either succeed or fail with a CairnError whose message
// is one clear sentence (no TypeError, no raw errno). Afterwards, reopened
// WITHOUT faults on the same host cache, every snapshot that was reported
// successful is listed and restores identically, and every listed snapshot
// restores (a failure reported after the record was written is allowed, a
// half-written snapshot is not).

import { promises as fsp } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { collectGarbage } from "../../engine/gc.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { FaultyObjectStore, type FaultKind } from "../../store/backends/faulty.js"
import { CairnError } from "../../store/errors.js"
import { Store } from "../../store/store.js"
import { FULL, buildCorpus, describeTree, mutateCorpus, randInt, report, rng, tempDir, type CorpusOptions, type Listing } from "./harness.js"

const OPS = FULL ? 400 : 30
const CORPUS: CorpusOptions = { dirs: 3, filesPerDir: 12, bigFiles: 2, bigSize: 300 * 1024 }
const KINDS: FaultKind[] = ["eio", "enospc", "torn", "reset", "503", "delay"]

let root: string
const failures: string[] = []
const figures = {
  operations: 0,
  succeeded: 0,
  failedCleanly: 0,
  faultsInjected: 0,
  snapshotsReported: 0,
  committedThoughReportedFailed: 0,
  restoresChecked: 0,
  locksLeftBehind: 0,
}
const byKind: Record<string, number> = {}

beforeAll(async () => {
  root = await tempDir("cairn-rel-faults-")
})

afterAll(async () => {
  report("faults", { ...figures, ...Object.fromEntries(Object.entries(byKind).map(([k, v]) => [`fault.${k}`, v])), failures: failures.length })
  await fsp.rm(root, { recursive: true, force: true })
})

function judge(err: unknown, what: string): void {
  if (!(err instanceof CairnError)) {
    failures.push(`${what}: failed with a non-cairn error: ${(err as Error)?.stack ?? String(err)}`.slice(0, 600))
    return
  }
  const m = err.message
  if (m.length < 10 || /undefined|\[object Object\]|NaN/.test(m)) failures.push(`${what}: unclear message (${err.code}): ${m}`)
  else figures.failedCleanly++
}

describe("faults from below: a faulty backend under snapshot, restore and gc", () => {
  it(`${OPS} operations with injected faults leave every reported snapshot restorable`, async () => {
    const r = rng(707)
    const repoDir = path.join(root, "repo")
    const cacheDir = path.join(root, "cache")
    const src = path.join(root, "src")
    await buildCorpus(src, "faults", CORPUS)
    const inner = new FsObjectStore(repoDir)
    await (await Store.init({ backend: inner, cacheDir, config: { packSize: 64 * 1024 } })).close()
    const good = new Map<string, Listing>() // reported successful
    const deleted = new Set<string>()
    let wantNow = await describeTree(src)
    /** what a snapshot attempt may have committed: record id unknown, so by tree content */
    const attempted: Listing[] = [wantNow]

    for (let i = 0; i < OPS && failures.length < 8; i++) {
      const faulty = new FaultyObjectStore(inner, { seed: randInt(r, 1, 2 ** 30), failRate: [0.02, 0.05, 0.15][randInt(r, 0, 2)]!, kinds: KINDS, maxDelayMs: 5 })
      const goodIds = [...good.keys()].filter((id) => !deleted.has(id))
      const op = goodIds.length === 0 ? "snapshot" : (["snapshot", "snapshot", "restore", "gc"] as const)[randInt(r, 0, 3)]!
      const what = `op ${i} (${op})`
      figures.operations++
      if (op === "snapshot" && r() < 0.7) {
        await mutateCorpus(src, r, `f${i}`, CORPUS)
        wantNow = await describeTree(src)
        attempted.push(wantNow)
      }
      let store: Store | undefined
      try {
        store = await Store.open({ backend: faulty, cacheDir, lockWaitMs: 2_000 })
        if (op === "snapshot") {
          const { snapshot } = await createSnapshot(store, src)
          good.set(snapshot.id, wantNow)
          figures.snapshotsReported++
        } else if (op === "restore") {
          const id = goodIds[randInt(r, 0, goodIds.length - 1)]!
          const dest = path.join(root, `out-${i}`)
          const record = await store.getRecord<SnapshotRecord>("snapshots", id)
          await restoreSnapshot(store, record, dest)
          if (JSON.stringify(await describeTree(dest)) !== JSON.stringify(good.get(id))) failures.push(`${what}: a restore that succeeded under faults differs`)
          await fsp.rm(dest, { recursive: true, force: true })
        } else {
          // keep the repository small (the checks restore every snapshot): down to 5 live ones
          for (let k = 0; goodIds.length - k > 5 || (k === 0 && goodIds.length > 2 && r() < 0.7); k++) {
            const victim = goodIds[k]!
            deleted.add(victim) // may be gone even if the call below reports a fault
            await store.deleteRecord("snapshots", victim)
          }
          await collectGarbage(store)
        }
        await store.close()
        figures.succeeded++
      } catch (err) {
        judge(err, what)
        // a store whose close failed still holds the host's LevelDB cache; let go of it
        if (store) await store.close().catch(() => store!.releaseIndex().catch(() => {}))
      } finally {
        figures.faultsInjected += faulty.totalFaults
        for (const [k, v] of Object.entries(faulty.faults)) byKind[k] = (byKind[k] ?? 0) + v
        await fsp.rm(path.join(root, `out-${i}`), { recursive: true, force: true })
      }
      // A lock whose release failed stays until it is stale (5 minutes without refresh, this
      // process being alive): count it, then remove it as an operator would, so the run goes on.
      const locks = await inner.list("locks/")
      figures.locksLeftBehind += locks.length
      for (const l of locks) await inner.delete(l.key)
      // without faults, on the same host cache: every snapshot listed restores, every reported one is listed
      await checkClean(repoDir, cacheDir, good, deleted, attempted, what, op === "gc" || i === OPS - 1 || i % 5 === 0)
    }
    expect(failures).toEqual([])
  }, FULL ? 3_600_000 : 60_000)
})

async function checkClean(
  repoDir: string,
  cacheDir: string,
  good: Map<string, Listing>,
  deleted: Set<string>,
  attempted: Listing[],
  what: string,
  all: boolean,
): Promise<void> {
  const store = await Store.open({ backend: new FsObjectStore(repoDir), cacheDir, lockWaitMs: 5_000 })
  try {
    const { records, damaged } = await store.listRecords<SnapshotRecord>("snapshots")
    if (damaged.length > 0) failures.push(`${what}: damaged records after faults: ${damaged.join(", ")}`)
    const listed = new Map(records.map((s) => [s.id, s]))
    for (const id of good.keys()) if (!deleted.has(id) && !listed.has(id)) failures.push(`${what}: reported snapshot ${id} is not listed`)
    const newest = [...good.keys()].filter((id) => !deleted.has(id)).pop()
    for (const s of records) {
      const known = good.get(s.id)
      if (!known) {
        // committed, then reported as failed: it must be whole, equal to one of the attempted sources
        const dest = path.join(cacheDir, "..", "check-unknown")
        const ok = await restoreSnapshot(store, s, dest).then(
          () => true,
          (e: Error) => (failures.push(`${what}: listed snapshot ${s.id} (reported failed) does not restore: ${e.message}`), false),
        )
        if (ok) {
          const got = JSON.stringify(await describeTree(dest))
          if (!attempted.some((l) => JSON.stringify(l) === got)) failures.push(`${what}: listed snapshot ${s.id} matches no source it was taken from`)
          figures.committedThoughReportedFailed++
          good.set(s.id, JSON.parse(got) as Listing)
        }
        await fsp.rm(dest, { recursive: true, force: true })
        continue
      }
      if (!all && s.id !== newest) continue
      const dest = path.join(cacheDir, "..", "check")
      figures.restoresChecked++
      await restoreSnapshot(store, s, dest).then(
        async () => {
          if (JSON.stringify(await describeTree(dest)) !== JSON.stringify(known)) failures.push(`${what}: snapshot ${s.id} restores differently`)
        },
        (e: Error) => failures.push(`${what}: snapshot ${s.id} does not restore after faults: ${e.message}`),
      )
      await fsp.rm(dest, { recursive: true, force: true })
    }
  } finally {
    await store.close()
  }
}
