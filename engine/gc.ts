// Garbage collection: delete the blobs no snapshot references, and the packs
// and index entries that held them.
//
// Protocol (FORMAT.md, "gc"):
//   1. Take the EXCLUSIVE repository lock. Snapshots and restores hold shared
//      locks for their whole run, so none is running and none starts until gc
//      is done: no writer can reference a blob gc is about to delete.
//   2. Flush this process's store and sync the local index.
//   3. Mark: read every snapshot record (a damaged record aborts gc: what it
//      references is unknown) and walk its trees breadth first; a tree shared
//      by several snapshots is read once. Each level's trees are read in pack
//      and offset order, neighbours with one ranged read, and only their
//      references are parsed (a tree gc cannot read them from aborts gc).
//      live = every tree id and every chunk id.
//   4. Read every index file (index/) and list data/. A pack that no index
//      file lists is an orphan (a writer crashed before its index file, or an
//      earlier gc crashed). Orphans are read only if some live blob is in no
//      indexed pack (an index file was lost): then the orphans that hold such
//      blobs are kept and re-indexed. A live blob found nowhere aborts gc.
//   5. Every live blob gets one home: of the packs that hold a copy, the one
//      with the largest live fraction (ties: the smaller pack id), so copies
//      left by a crashed gc or by racing writers count as dead elsewhere.
//      Per pack, used = sum(stored length + 46) of its homed blobs + 48;
//      dead = pack size - used. No homed blob: delete. dead / size >
//      repackThreshold: repack. Otherwise keep.
//   6. Repack: copy the stored bytes of the homed blobs of every repacked
//      pack (in pack id, offset order; each is hash-checked first) into new
//      packs through the store, without recompressing; store.flush() makes
//      them durable (and writes an index file of its own).
//   7. Write ONE index file listing every kept and new pack with its homed
//      (live) entries only. Only after that put resolved (durable), delete
//      every other index file; only after that, delete every pack in data/
//      that the new index file does not list.
//   8. Bring the local index to exactly the one index file: delete the
//      entries of the blobs it no longer lists, rewrite those it lists in
//      another place, then swap the index-file records (Store.replaceIndexFiles;
//      if the cache held anything else, it is rebuilt instead).
//
// Crash points (the repository after a crash at each, and why it is safe;
// "rerun" is the next gc):
//   a. Before step 6 writes anything: nothing changed.
//   b. During/after the new packs' puts, before any index file lists them:
//      the new packs are orphans; the old index files and packs are intact.
//      A rerun writes byte-identical packs (same content, same order, so the
//      same names) and deletes what it does not list.
//   c. After flush's index file, before the new one: two index files list
//      a live blob (old sparse pack, new dense pack); either copy is valid.
//      A rerun homes the blob in the dense pack and deletes the old one.
//   d. After the new index file, while old index files are deleted: every
//      index file that remains lists only packs that still exist (no pack
//      has been deleted yet), so every lookup resolves.
//   e. While packs are deleted: only the new index file remains and it lists
//      no pack that is deleted; the packs left over are orphans, which a
//      rerun deletes without reading (no live blob needs them).
//   f. Before or during the local index update: the local cache names index
//      files that vanished (their records go last, in one atomic batch); the
//      next syncIndex (Store.open, a reader's locateForRead) sees that and
//      rebuilds it.
// The lock object of a crashed gc stays behind until it is stale (dead pid
// on this host, or not refreshed for 5 minutes elsewhere).
//
// dryRun computes the same plan and report and writes nothing (it still
// takes and releases the lock).

import { mapLimit } from "../store/concurrency.js"
import { BadInputError, IntegrityError, throwIfAborted } from "../store/errors.js"
import type { BlobId } from "../store/ids.js"
import { decodeIndexFile, encodeIndexFile, type PackListing } from "../store/index-file.js"
import type { BlobLocation } from "../store/local-index.js"
import { ENTRY_BYTES, TRAILER_BYTES, packKey, parsePack, type PackEntry } from "../store/pack.js"
import type { Store } from "../store/store.js"
import { treeReferences } from "./tree.js"
import { readTreeBlobs, type LocatedTree } from "./walk.js"
import type { Progress, SnapshotRecord } from "./types.js"
import { listSnapshots } from "./records.js"

export interface GcOptions {
  /** compute and report, change nothing */
  dryRun?: boolean
  /** repack packs whose dead fraction exceeds this (0..1); default 0.2 */
  repackThreshold?: number
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface GcReport {
  dryRun: boolean
  snapshots: number
  /** distinct blobs (trees and chunks) the snapshots reference */
  liveBlobs: number
  /** index entries (or, for re-read orphans, header entries) that are not a live blob's home */
  deadBlobs: number
  packsDeleted: number
  packsRepacked: number
  packsKept: number
  /** sum of the sizes of the packs in data/ before */
  bytesBefore: number
  /** after (in a dry run: what it would be) */
  bytesAfter: number
  /** bytesBefore - bytesAfter; 0 in a dry run */
  bytesFreed: number
  /** what this run frees (in a dry run: would free) */
  reclaimableBytes: number
  durationMs: number
  /** temp files of crashed writers (older than an hour) removed; 0 in a dry run */
  tempFilesRemoved: number
  /** keys written or deleted; empty in a dry run */
  touched: string[]
}

export const DEFAULT_REPACK_THRESHOLD = 0.2
const TEMP_MAX_AGE_MS = 60 * 60_000

export async function collectGarbage(store: Store, opts: GcOptions = {}): Promise<GcReport> {
  const threshold = opts.repackThreshold ?? DEFAULT_REPACK_THRESHOLD
  if (typeof threshold !== "number" || !(threshold >= 0 && threshold <= 1)) {
    throw new BadInputError(`repackThreshold must be a number from 0 to 1, not ${String(threshold)}`)
  }
  throwIfAborted(opts.signal)
  return store.withLock(true, "gc", () => runGc(store, { ...opts, repackThreshold: threshold }))
}

interface PackInfo {
  id: string
  /** physical size from the data/ listing; undefined when an index lists a missing pack */
  size: number | undefined
  entries: Map<BlobId, PackEntry>
  indexed: boolean
}

type Action = "keep" | "repack" | "delete"

interface PackPlan {
  pack: PackInfo
  homed: PackEntry[]
  action: Action
}

async function runGc(store: Store, opts: GcOptions & { repackThreshold: number }): Promise<GcReport> {
  const started = performance.now()
  const dryRun = opts.dryRun === true
  // the index was synced when the lock was taken (Store.withLock); flush adds its own file
  if (!dryRun) await store.flush()
  throwIfAborted(opts.signal)

  const snapshots = await readSnapshots(store)
  const view = await RepoView.read(store)
  throwIfAborted(opts.signal)
  const live = await markLive(store, view, snapshots, opts)
  throwIfAborted(opts.signal)
  const plans = planPacks(view, live, opts.repackThreshold)

  const bytesBefore = [...view.packs.values()].reduce((n, p) => n + (p.size ?? 0), 0)
  const kept = plans.filter((p) => p.action === "keep")
  const repacked = plans.filter((p) => p.action === "repack")
  const deleted = plans.filter((p) => p.action === "delete")
  const moving = repacked.flatMap((p) => p.homed)
  const plannedAfter =
    kept.reduce((n, p) => n + p.pack.size!, 0) + plannedPackSizes(moving, store.config.packSize).reduce((a, b) => a + b, 0)
  let deadBlobs = 0
  for (const p of plans) deadBlobs += Math.max(0, p.pack.entries.size - p.homed.length)
  const report: GcReport = {
    dryRun,
    snapshots: snapshots.length,
    liveBlobs: live.size,
    deadBlobs,
    packsDeleted: deleted.length,
    packsRepacked: repacked.length,
    packsKept: kept.length,
    bytesBefore,
    bytesAfter: plannedAfter,
    bytesFreed: 0,
    reclaimableBytes: bytesBefore - plannedAfter,
    durationMs: 0,
    tempFilesRemoved: 0,
    touched: [],
  }
  if (!dryRun) {
    try {
      const bytesAfter = await execute(store, view, kept, repacked, report.touched, opts)
      report.bytesAfter = bytesAfter
      report.bytesFreed = bytesBefore - bytesAfter
      // under the exclusive lock no writer is running; the age limit spares a
      // writer that does not take the lock (a record put) caught mid-rename
      report.tempFilesRemoved = (await store.backend.sweepTemp?.(TEMP_MAX_AGE_MS)) ?? 0
    } catch (err) {
      // the local cache may name packs that are gone: start it afresh (best effort)
      await (await store.openIndex()).clear().catch(() => {})
      await store.syncIndex().catch(() => {})
      throw err
    }
  }
  report.durationMs = Math.round(performance.now() - started)
  return report
}

async function readSnapshots(store: Store): Promise<SnapshotRecord[]> {
  const { records, damaged } = await listSnapshots(store)
  if (damaged.length > 0) {
    throw new IntegrityError(
      `gc cannot tell what snapshot ${damaged[0]} references (its record is damaged); delete or repair it and run gc again`,
      { snapshots: damaged },
    )
  }
  for (const s of records) {
    if (typeof s.tree !== "string") throw new IntegrityError(`snapshot ${s.id} has no root tree; gc stopped without changing anything`, { snapshot: s.id })
  }
  return records
}

/** The repository as its index files and data/ listing describe it. */
class RepoView {
  readonly packs = new Map<string, PackInfo>()
  /** blob -> existing packs that hold a copy (indexed ones, and orphans once read) */
  readonly where = new Map<BlobId, string[]>()
  /** blob -> the pack of its only index entry, or null when index files list it more than once */
  readonly indexedIn = new Map<BlobId, string | null>()
  private orphansRead: Promise<void> | undefined

  private constructor(
    private readonly store: Store,
    readonly indexFiles: string[],
  ) {}

  static async read(store: Store): Promise<RepoView> {
    const names = (await store.backend.list("index/")).map((o) => o.key.slice("index/".length))
    const view = new RepoView(store, names)
    const files = await mapLimit(names, 8, async (name) => decodeIndexFile(await store.backend.get(`index/${name}`), name))
    for (const listing of files.flat()) {
      const info = view.info(listing.pack)
      info.indexed = true
      for (const e of listing.entries) {
        info.entries.set(e.id, e)
        view.indexedIn.set(e.id, view.indexedIn.has(e.id) ? null : listing.pack)
      }
    }
    for (const obj of await store.backend.list("data/")) {
      view.info(obj.key.slice(obj.key.lastIndexOf("/") + 1)).size = obj.size
    }
    for (const p of view.packs.values()) if (p.indexed && p.size !== undefined) view.addCopies(p)
    return view
  }

  private info(id: string): PackInfo {
    let p = this.packs.get(id)
    if (!p) this.packs.set(id, (p = { id, size: undefined, entries: new Map(), indexed: false }))
    return p
  }

  private addCopies(p: PackInfo): void {
    for (const id of p.entries.keys()) {
      const at = this.where.get(id)
      if (at) at.push(p.id)
      else this.where.set(id, [p.id])
    }
  }

  locate(id: BlobId): BlobLocation | undefined {
    const pack = this.where.get(id)?.[0]
    const e = pack === undefined ? undefined : this.packs.get(pack)!.entries.get(id)
    return e && { pack: pack!, kind: e.kind, codec: e.codec, offset: e.offset, length: e.length, rawLength: e.rawLength }
  }

  /** Reads the headers of the packs no index file lists (once). Damaged orphans are left as dead. */
  readOrphans(): Promise<void> {
    this.orphansRead ??= (async () => {
      const orphans = [...this.packs.values()].filter((p) => !p.indexed && p.size !== undefined)
      await mapLimit(orphans, 4, async (p) => {
        try {
          for (const e of parsePack(await this.store.backend.get(packKey(p.id)), p.id)) p.entries.set(e.id, e)
        } catch (err) {
          if (!(err instanceof IntegrityError)) throw err
          p.entries.clear()
        }
      })
      for (const p of orphans) this.addCopies(p)
    })()
    return this.orphansRead
  }
}

/** Every tree and chunk reachable from the snapshots; each tree is read once. */
async function markLive(store: Store, view: RepoView, snapshots: SnapshotRecord[], opts: GcOptions): Promise<Set<BlobId>> {
  const live = new Set<BlobId>()
  let frontier = [...new Set(snapshots.map((s) => s.tree))]
  for (const id of frontier) live.add(id)
  let treesDone = 0
  while (frontier.length > 0) {
    const next: BlobId[] = []
    await readTreeBlobs(
      store,
      await locateTrees(view, frontier),
      (id, raw) => {
        let refs: { trees: BlobId[]; chunks: BlobId[] }
        try {
          refs = treeReferences(raw, id)
        } catch (err) {
          if (err instanceof IntegrityError) throw new IntegrityError(`${err.message}; gc stopped without changing anything`, { tree: id })
          throw err
        }
        for (const sub of refs.trees) {
          if (live.has(sub)) continue
          live.add(sub)
          next.push(sub)
        }
        for (const c of refs.chunks) live.add(c)
        treesDone++
        opts.onProgress?.({ phase: "gc", filesDone: treesDone, filesTotal: treesDone + next.length, bytesDone: 0, bytesTotal: 0 })
      },
      opts.signal,
    )
    frontier = next
  }
  if ([...live].some((id) => !view.where.has(id))) await view.readOrphans()
  const missing = [...live].filter((id) => !view.where.has(id))
  if (missing.length > 0) {
    throw new IntegrityError(
      `${missing.length} blob(s) that snapshots reference are missing from the repository (first: ${missing[0]}); gc stopped without changing anything`,
      { blobs: missing.slice(0, 20) },
    )
  }
  return live
}

/** Where each tree is; reads the orphans' headers if one is in no indexed pack. */
async function locateTrees(view: RepoView, ids: readonly BlobId[]): Promise<LocatedTree[]> {
  if (ids.some((id) => !view.where.has(id))) await view.readOrphans()
  return ids.map((id) => {
    const loc = view.locate(id)
    if (!loc) throw new IntegrityError(`tree ${id} is missing from the repository; gc stopped without changing anything`, { tree: id })
    return { id, loc }
  })
}

/** Homes every live blob in one pack and decides each pack's fate. */
function planPacks(view: RepoView, live: Set<BlobId>, threshold: number): PackPlan[] {
  const candidateUse = new Map<string, number>()
  for (const id of live) {
    for (const pack of view.where.get(id)!) {
      const e = view.packs.get(pack)!.entries.get(id)!
      candidateUse.set(pack, (candidateUse.get(pack) ?? 0) + e.length + ENTRY_BYTES)
    }
  }
  const score = new Map<string, number>()
  for (const [pack, use] of candidateUse) score.set(pack, (use + TRAILER_BYTES) / view.packs.get(pack)!.size!)
  const homed = new Map<string, PackEntry[]>()
  for (const id of live) {
    const copies = view.where.get(id)!
    let best = copies[0]!
    for (let i = 1; i < copies.length; i++) {
      const pack = copies[i]!
      const a = score.get(pack)!
      const b = score.get(best)!
      if (a > b || (a === b && pack < best)) best = pack
    }
    const list = homed.get(best)
    if (list) list.push(view.packs.get(best)!.entries.get(id)!)
    else homed.set(best, [view.packs.get(best)!.entries.get(id)!])
  }
  const plans: PackPlan[] = []
  for (const pack of [...view.packs.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (pack.size === undefined) continue // listed by an index, gone from data/: dropped from the new index
    const mine = (homed.get(pack.id) ?? []).sort((a, b) => a.offset - b.offset)
    const used = mine.length === 0 ? 0 : mine.reduce((n, e) => n + e.length + ENTRY_BYTES, TRAILER_BYTES)
    const dead = Math.max(0, pack.size - used)
    const action: Action = mine.length === 0 ? "delete" : dead / pack.size > threshold ? "repack" : "keep"
    plans.push({ pack, homed: mine, action })
  }
  return plans
}

/**
 * How the new index file differs from the union of the old ones (which the
 * local cache holds): the blobs it no longer lists, and those it lists
 * somewhere else than the one old entry (moved, or listed more than once).
 */
function indexDelta(view: RepoView, listings: readonly PackListing[]): Parameters<Store["replaceIndexFiles"]>[2] {
  const listed = new Set<BlobId>()
  const put: Array<[BlobId, BlobLocation]> = []
  for (const { pack, entries } of listings) {
    for (const e of entries) {
      listed.add(e.id)
      if (view.indexedIn.get(e.id) !== pack) put.push([e.id, { pack, kind: e.kind, codec: e.codec, offset: e.offset, length: e.length, rawLength: e.rawLength }])
    }
  }
  const remove = [...view.indexedIn.keys()].filter((id) => !listed.has(id))
  return { remove, put }
}

/** The sizes of the packs the store will write for these blobs (it seals a pack at packSize). */
function plannedPackSizes(entries: readonly PackEntry[], packSize: number): number[] {
  const sizes: number[] = []
  let data = 0
  let n = 0
  for (const e of entries) {
    data += e.length
    n++
    if (data >= packSize) {
      sizes.push(data + n * ENTRY_BYTES + TRAILER_BYTES)
      data = 0
      n = 0
    }
  }
  if (n > 0) sizes.push(data + n * ENTRY_BYTES + TRAILER_BYTES)
  return sizes
}

/** Steps 6-8 of the protocol; returns the bytes in data/ afterwards. */
async function execute(
  store: Store,
  view: RepoView,
  kept: PackPlan[],
  repacked: PackPlan[],
  touched: string[],
  opts: GcOptions,
): Promise<number> {
  // 6. copy live blobs out of sparse packs
  const bytesTotal = repacked.reduce((n, p) => n + p.homed.reduce((m, e) => m + e.length, 0), 0)
  let bytesDone = 0
  for (const plan of repacked) {
    throwIfAborted(opts.signal)
    const bytes = await store.readPackRange(plan.pack.id, 0, plan.pack.size!)
    for (const e of plan.homed) {
      const stored = bytes.subarray(e.offset, e.offset + e.length)
      await store.decodeChecked(e.id, e.codec, stored, e.rawLength, plan.pack.id)
      await store.storeEncoded(e, stored)
      bytesDone += e.length
      opts.onProgress?.({ phase: "gc", filesDone: 0, filesTotal: 0, bytesDone, bytesTotal })
    }
  }
  await store.flush()
  const moved = repacked.flatMap((p) => p.homed)
  const locs = await store.locateMany(moved.map((e) => e.id))
  const fresh = new Map<string, PackEntry[]>()
  moved.forEach((e, i) => {
    const loc = locs[i]
    if (loc === undefined || loc === "pending") throw new IntegrityError(`blob ${e.id} was not written while repacking`, { blob: e.id })
    const list = fresh.get(loc.pack) ?? []
    list.push({ id: e.id, kind: loc.kind, codec: loc.codec, offset: loc.offset, length: loc.length, rawLength: loc.rawLength })
    fresh.set(loc.pack, list)
  })
  for (const pack of fresh.keys()) touched.push(packKey(pack))

  // 7. one index file for every kept and new pack, then delete the rest
  const listings: PackListing[] = [
    ...kept.map((p) => ({ pack: p.pack.id, entries: p.homed })),
    ...[...fresh].map(([pack, entries]) => ({ pack, entries: entries.sort((a, b) => a.offset - b.offset) })),
  ].sort((a, b) => (a.pack < b.pack ? -1 : 1))
  const { name, bytes } = encodeIndexFile(listings)
  const indexFiles = (await store.backend.list("index/")).map((o) => o.key)
  const newKey = `index/${name}`
  const replaced = indexFiles.filter((key) => key !== newKey)
  if (replaced.length > 0) {
    await store.backend.put(newKey, bytes)
    touched.push(newKey)
    for (const key of replaced) {
      await store.backend.delete(key)
      touched.push(key)
    }
  }
  const listed = new Set(listings.map((l) => l.pack))
  for (const pack of view.packs.values()) {
    if (pack.size === undefined || listed.has(pack.id)) continue
    await store.backend.delete(packKey(pack.id))
    touched.push(packKey(pack.id))
  }

  // 8. the local cache: exactly the new index file
  await store.replaceIndexFiles(
    name,
    replaced.map((key) => key.slice("index/".length)),
    indexDelta(view, listings),
  )
  let after = kept.reduce((n, p) => n + p.pack.size!, 0)
  for (const entries of fresh.values()) after += entries.reduce((n, e) => n + e.length + ENTRY_BYTES, TRAILER_BYTES)
  return after
}
