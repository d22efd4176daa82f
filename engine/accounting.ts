// Size accounting on demand: what each snapshot alone holds (uniqueBytes),
// per-directory usage (cairn du), and repository totals (cairn stats).
//
// A blob's cost is its stored (compressed) length in its pack. A blob is
// unique to a snapshot when no other snapshot references it: deleting that
// snapshot and running gc frees exactly the unique blobs' bytes (plus pack
// overhead). Each snapshot is walked with its own visited set, so a tree
// shared inside one snapshot counts once; decoded trees are cached across
// snapshots.

import type { BlobId } from "../store/ids.js"
import type { Store } from "../store/store.js"
import type { DirEntry, Tree } from "./tree.js"
import type { SnapshotRecord } from "./types.js"
import { loadTree } from "./walk.js"
import { listSnapshots } from "./records.js"

export interface DuRow {
  path: string
  logicalBytes: number
  storedBytes: number
  uniqueBytes: number
}

export interface RepositoryStats {
  snapshots: number
  packs: number
  /** sum of the snapshots' logical sizes */
  logicalBytes: number
  /** bytes the repository occupies: packs, index files, records */
  physicalBytes: number
  /** stored bytes of the distinct blobs the snapshots reference */
  referencedBytes: number
  /** logicalBytes / physicalBytes */
  dedupRatio: number
}

class TreeCache {
  private readonly trees = new Map<BlobId, Promise<Tree>>()
  constructor(private readonly store: Store) {}
  get(id: BlobId): Promise<Tree> {
    let t = this.trees.get(id)
    if (!t) this.trees.set(id, (t = loadTree(this.store, id)))
    return t
  }
}

/** Every blob (trees and chunks) a tree references, the tree itself included. */
async function blobsBelow(cache: TreeCache, root: BlobId, into = new Set<BlobId>()): Promise<Set<BlobId>> {
  if (into.has(root)) return into
  into.add(root)
  const tree = await cache.get(root)
  for (const e of tree.entries) {
    if (e.type === "file") for (const c of e.chunks ?? []) into.add(c)
    else if (e.type === "dir") await blobsBelow(cache, e.tree, into)
  }
  return into
}

async function storedLengths(store: Store, ids: Iterable<BlobId>): Promise<Map<BlobId, number>> {
  const list = [...ids]
  const out = new Map<BlobId, number>()
  for (let i = 0; i < list.length; i += 10_000) {
    const batch = list.slice(i, i + 10_000)
    const locs = await store.locateForRead(batch)
    batch.forEach((id, k) => out.set(id, store.storedLengthOf(locs[k], id)))
  }
  return out
}

/** For every snapshot in the repository, how many snapshots reference each blob. */
async function referenceCounts(store: Store, cache: TreeCache): Promise<{ counts: Map<BlobId, number>; snapshots: SnapshotRecord[] }> {
  const { records } = await listSnapshots(store)
  const counts = new Map<BlobId, number>()
  for (const s of records) for (const id of await blobsBelow(cache, s.tree)) counts.set(id, (counts.get(id) ?? 0) + 1)
  return { counts, snapshots: records }
}

/** What deleting each given snapshot would free now, given all the others. */
export async function uniqueBytes(store: Store, snapshotIds: string[]): Promise<Map<string, number>> {
  const cache = new TreeCache(store)
  const { counts, snapshots } = await referenceCounts(store, cache)
  const out = new Map<string, number>()
  for (const id of snapshotIds) {
    const s = snapshots.find((x) => x.id === id)
    if (!s) continue
    const mine = [...(await blobsBelow(cache, s.tree))].filter((b) => counts.get(b) === 1)
    const lengths = await storedLengths(store, mine)
    out.set(id, mine.reduce((n, b) => n + (lengths.get(b) ?? 0), 0))
  }
  return out
}

/** Per-directory logical, stored and unique bytes of one snapshot, down to maxDepth. */
export async function diskUsage(store: Store, snapshot: SnapshotRecord, opts: { maxDepth?: number } = {}): Promise<DuRow[]> {
  const maxDepth = opts.maxDepth ?? 2
  const cache = new TreeCache(store)
  const { counts } = await referenceCounts(store, cache)
  const all = await blobsBelow(cache, snapshot.tree)
  const lengths = await storedLengths(store, all)
  const rows: DuRow[] = []
  const visit = async (treeId: BlobId, p: string, logical: number, depth: number) => {
    const below = await blobsBelow(cache, treeId)
    let stored = 0
    let unique = 0
    for (const b of below) {
      const n = lengths.get(b) ?? 0
      stored += n
      if (counts.get(b) === 1) unique += n
    }
    rows.push({ path: p, logicalBytes: logical, storedBytes: stored, uniqueBytes: unique })
    if (depth >= maxDepth) return
    const tree = await cache.get(treeId)
    for (const e of tree.entries) {
      if (e.type === "dir") await visit((e as DirEntry).tree, p === "/" ? `/${e.name}` : `${p}/${e.name}`, e.size, depth + 1)
    }
  }
  await visit(snapshot.tree, "/", snapshot.sizeBytes, 0)
  return rows
}

export async function repositoryStats(store: Store): Promise<RepositoryStats> {
  const cache = new TreeCache(store)
  const { counts, snapshots } = await referenceCounts(store, cache)
  const lengths = await storedLengths(store, counts.keys())
  let referenced = 0
  for (const n of lengths.values()) referenced += n
  const objects = await Promise.all(["data/", "index/", "snapshots/", "boxes/", "config"].map((p) => store.backend.list(p)))
  const packs = objects[0]!.length
  const physical = objects.flat().reduce((n, o) => n + o.size, 0)
  const logical = snapshots.reduce((n, s) => n + s.sizeBytes, 0)
  return {
    snapshots: snapshots.length,
    packs,
    logicalBytes: logical,
    physicalBytes: physical,
    referencedBytes: referenced,
    dedupRatio: physical > 0 ? logical / physical : 0,
  }
}
