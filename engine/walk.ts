// Reading trees back: load a snapshot's tree objects into a flat, validated
// list of entries with their paths, resolving sub-paths on the way.

import { mapLimit, Semaphore } from "../store/concurrency.js"
import { BadInputError, IntegrityError, NotFoundError, throwIfAborted } from "../store/errors.js"
import type { BlobId } from "../store/ids.js"
import type { BlobLocation } from "../store/local-index.js"
import type { Store } from "../store/store.js"
import { decodeTree, isSafeName, type DirEntry, type Tree, type TreeEntry } from "./tree.js"

export interface PlacedEntry {
  /** path below the restore root, "/"-separated */
  rel: string
  entry: TreeEntry
}

const treeSlots = new Semaphore(8)

export async function loadTree(store: Store, id: BlobId): Promise<Tree> {
  let bytes: Uint8Array
  try {
    bytes = await treeSlots.run(() => store.getBlob(id))
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new IntegrityError(`tree ${id} is missing from the repository`, { tree: id, blob: id }, err)
    }
    throw err
  }
  return decodeTree(bytes, id)
}

/** Splits a user-given path inside a snapshot ("/a/b", "a/b/") into safe names. */
export function splitSnapshotPath(p: string): string[] {
  const names = p.split("/").filter((n) => n !== "" && n !== ".")
  for (const n of names) {
    if (!isSafeName(n)) throw new BadInputError(`invalid path ${JSON.stringify(p)} inside a snapshot: ".." and NUL are not allowed`)
  }
  return names
}

/**
 * Resolves a path inside a snapshot. Returns the entry (a synthetic dir entry
 * for the root) or throws NotFoundError.
 */
export async function resolvePath(store: Store, rootTree: BlobId, p: string): Promise<TreeEntry> {
  const names = splitSnapshotPath(p)
  let entry: TreeEntry = { name: "", type: "dir", mode: 0o755, mtime: "0", uid: 0, gid: 0, size: 0, tree: rootTree }
  for (let i = 0; i < names.length; i++) {
    if (entry.type !== "dir") throw new NotFoundError(`/${names.slice(0, i).join("/")} is not a directory in the snapshot`, { path: p })
    const tree = await loadTree(store, (entry as DirEntry).tree)
    const next = tree.entries.find((e) => e.name === names[i])
    if (!next) throw new NotFoundError(`there is no /${names.slice(0, i + 1).join("/")} in the snapshot`, { path: p })
    entry = next
  }
  return entry
}

export interface LocatedTree {
  id: BlobId
  loc: BlobLocation
}

/**
 * Reads that never span more than this, nor skip more than TREE_READ_GAP
 * bytes between two trees: a snapshot writes its trees next to each other,
 * so one read fetches many of them (one syscall or one ranged GET instead of
 * one per tree) while the bytes of unrelated blobs read along stay few.
 */
const TREE_READ_SPAN = 16 << 20
const TREE_READ_GAP = 256 << 10

interface TreeRead {
  pack: string
  start: number
  end: number
  trees: LocatedTree[]
}

/** Groups trees into ranged reads, per pack, in offset order. */
function treeReads(trees: readonly LocatedTree[]): TreeRead[] {
  const sorted = [...trees].sort((a, b) => (a.loc.pack < b.loc.pack ? -1 : a.loc.pack > b.loc.pack ? 1 : a.loc.offset - b.loc.offset))
  const reads: TreeRead[] = []
  let read: TreeRead | undefined
  for (const t of sorted) {
    const end = t.loc.offset + t.loc.length
    if (read && read.pack === t.loc.pack && t.loc.offset - read.end <= TREE_READ_GAP && end - read.start <= TREE_READ_SPAN) {
      read.end = Math.max(read.end, end)
      read.trees.push(t)
    } else {
      read = { pack: t.loc.pack, start: t.loc.offset, end, trees: [t] }
      reads.push(read)
    }
  }
  return reads
}

/**
 * Reads located tree blobs with a few ranged reads per pack (neighbours
 * together, in offset order) and hands each one's checked raw bytes to
 * `each`. Damage is an IntegrityError, as for one blob.
 */
export async function readTreeBlobs(
  store: Store,
  trees: readonly LocatedTree[],
  each: (id: BlobId, raw: Uint8Array) => void,
  signal?: AbortSignal,
): Promise<void> {
  await mapLimit(treeReads(trees), 4, async (read) => {
    throwIfAborted(signal)
    const bytes = await store.readPackRange(read.pack, read.start, read.end - read.start)
    await Promise.all(
      read.trees.map(async ({ id, loc }) => {
        const stored = bytes.subarray(loc.offset - read.start, loc.offset - read.start + loc.length)
        each(id, await store.decodeChecked(id, loc.codec, stored, loc.rawLength, loc.pack, true))
      }),
    )
  })
}

/**
 * Every entry below a directory tree, parents before children (a
 * directory's entries, then each subdirectory's, depth first). Trees are
 * read level by level: each level is located with one batched index lookup
 * and read with a few ranged reads per pack (on S3, a few GETs instead of
 * one per directory); a remote repository's trees go through the host's tree
 * cache first, and those read are added to it. A tree shared by several
 * directories is read once.
 */
export async function flattenTree(store: Store, treeId: BlobId): Promise<PlacedEntry[]> {
  const trees = new Map<BlobId, Tree>()
  let frontier = [treeId]
  for (let depth = 0; frontier.length > 0; depth++) {
    if (depth > 1024) throw new IntegrityError(`tree ${frontier[0]} nests deeper than 1024 levels`, { tree: frontier[0] })
    await loadLevel(store, frontier, trees)
    const next = new Set<BlobId>()
    for (const id of frontier) for (const e of trees.get(id)!.entries) if (e.type === "dir" && !trees.has(e.tree)) next.add(e.tree)
    frontier = [...next]
  }
  const out: PlacedEntry[] = []
  // a path can be longer than the levels are many (shared subtrees), so depth is checked again here
  const visit = (id: BlobId, prefix: string, depth: number): void => {
    if (depth > 1024) throw new IntegrityError(`tree ${id} nests deeper than 1024 levels`, { tree: id })
    const mine = trees.get(id)!.entries.map((entry) => ({ rel: prefix ? `${prefix}/${entry.name}` : entry.name, entry }))
    out.push(...mine)
    for (const p of mine) if (p.entry.type === "dir") visit(p.entry.tree, p.rel, depth + 1)
  }
  visit(treeId, "", 0)
  return out
}

/** A part of a snapshot, as a restore or an export of a sub-path takes it. */
export interface SnapshotPart {
  /** the entry at the sub-path (a synthetic directory entry for the root) */
  top: TreeEntry
  /** the directory the entries' rels start from, as a path from the snapshot root ("" for the root) */
  base: string
  /** the entries: a directory's whole content, or the one entry; a hardlink whose first member lies outside the part holds its content here */
  placed: PlacedEntry[]
}

/**
 * The entries of a snapshot's sub-path ("/" for all of it), ordered by
 * `order` before their hardlinks are made self-contained (see
 * adoptOutsideHolders; the whole snapshot needs none of it).
 */
export async function placePart(
  store: Store,
  root: BlobId,
  subPath: string,
  order: (placed: PlacedEntry[]) => PlacedEntry[] = (p) => p,
): Promise<SnapshotPart> {
  const names = splitSnapshotPath(subPath)
  const top = await resolvePath(store, root, subPath)
  if (top.type === "dir") {
    const base = names.join("/")
    const placed = order(await flattenTree(store, top.tree))
    return { top, base, placed: base === "" ? placed : await adoptOutsideHolders(store, root, placed, base) }
  }
  const base = names.slice(0, -1).join("/")
  return { top, base, placed: await adoptOutsideHolders(store, root, [{ rel: top.name, entry: top }], base) }
}

/**
 * Makes a part of a snapshot self-contained in its hardlinks. placed: the
 * part's entries, rels from its directory, which is `base` from the snapshot
 * root. A member of a hardlink group whose first member (the one holding the
 * content) is not among them becomes the group's holder here: it takes that
 * member's chunks and size, and the group's later members here link to it.
 * A member whose holder is not a regular file in the snapshot (damage) is
 * left as it is, for the caller to report. The outside holders' directories
 * are each read once, however many groups they hold.
 */
async function adoptOutsideHolders(store: Store, root: BlobId, placed: PlacedEntry[], base: string): Promise<PlacedEntry[]> {
  const prefix = base === "" ? "" : `${base}/`
  const holders = new Set(placed.filter((p) => p.entry.type === "file" && p.entry.link === undefined).map((p) => p.rel))
  const adopted = new Map<string, string>() // holder's path from the root -> the member that holds its content now
  // a directory of the snapshot (path from the root) -> its entries by name, or undefined if it is not a readable directory
  const dirs = new Map<string, Promise<Map<string, TreeEntry> | undefined>>()
  const dirAt = (dir: string): Promise<Map<string, TreeEntry> | undefined> => {
    let entries = dirs.get(dir)
    if (!entries) {
      entries = (async () => {
        const slash = dir.lastIndexOf("/")
        const parent = dir === "" ? undefined : (await dirAt(slash < 0 ? "" : dir.slice(0, slash)))?.get(dir.slice(slash + 1))
        if (dir !== "" && parent?.type !== "dir") return undefined
        const tree = await loadTree(store, parent?.type === "dir" ? parent.tree : root)
        return new Map(tree.entries.map((e) => [e.name, e]))
      })().catch(() => undefined)
      dirs.set(dir, entries)
    }
    return entries
  }
  const out: PlacedEntry[] = []
  for (const p of placed) {
    const e = p.entry
    if (e.type !== "file" || e.link === undefined || (e.link.startsWith(prefix) && holders.has(e.link.slice(prefix.length)))) {
      out.push(p)
      continue
    }
    const taken = adopted.get(e.link)
    if (taken !== undefined) {
      out.push({ rel: p.rel, entry: { ...e, link: prefix + taken } })
      continue
    }
    const slash = e.link.lastIndexOf("/")
    const holder = (await dirAt(slash < 0 ? "" : e.link.slice(0, slash)))?.get(e.link.slice(slash + 1))
    if (holder?.type !== "file" || holder.link !== undefined) {
      out.push(p)
      continue
    }
    adopted.set(e.link, p.rel)
    const { link: _holderPath, ...own } = e
    out.push({ rel: p.rel, entry: { ...own, size: holder.size, chunks: holder.chunks ?? [] } })
  }
  return out
}

async function loadLevel(store: Store, ids: BlobId[], into: Map<BlobId, Tree>): Promise<void> {
  const remote = store.backend.remote === true
  let wanted = ids
  if (remote) {
    const cached = await Promise.all(ids.map((id) => store.cachedTree(id)))
    wanted = []
    ids.forEach((id, k) => {
      const raw = cached[k]
      if (raw) into.set(id, decodeTree(raw, id))
      else wanted.push(id)
    })
  }
  const located: LocatedTree[] = []
  const one: BlobId[] = []
  const found = wanted.length > 0 ? await store.locateForRead(wanted) : []
  wanted.forEach((id, k) => {
    const loc = found[k]
    // missing ones fail with loadTree's error; pending ones are read from memory
    if (loc && loc !== "pending") located.push({ id, loc })
    else one.push(id)
  })
  const keeping: Promise<void>[] = []
  await readTreeBlobs(store, located, (id, raw) => {
    into.set(id, decodeTree(raw, id))
    if (remote) keeping.push(store.keepTree(id, raw))
  })
  await Promise.all([...keeping, ...one.map(async (id) => void into.set(id, await loadTree(store, id)))])
}
