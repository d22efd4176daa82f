// Reading trees back: load a snapshot's tree objects into a flat, validated
// list of entries with their paths, resolving sub-paths on the way.

import { Semaphore } from "../store/concurrency.js"
import { BadInputError, IntegrityError, NotFoundError } from "../store/errors.js"
import type { BlobId } from "../store/ids.js"
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
    if (entry.type !== "dir") throw new NotFoundError(`${names.slice(0, i).join("/")} is not a directory in the snapshot`)
    const tree = await loadTree(store, (entry as DirEntry).tree)
    const next = tree.entries.find((e) => e.name === names[i])
    if (!next) throw new NotFoundError(`no ${names.slice(0, i + 1).join("/")} in the snapshot`, { path: p })
    entry = next
  }
  return entry
}

/**
 * Every entry below a directory tree, parents before children. Trees are
 * loaded with bounded concurrency; a tree already seen (shared subtrees) is
 * decoded once.
 */
export async function flattenTree(store: Store, treeId: BlobId): Promise<PlacedEntry[]> {
  const out: PlacedEntry[] = []
  const seen = new Map<BlobId, Promise<Tree>>()
  const load = (id: BlobId) => {
    let p = seen.get(id)
    if (!p) seen.set(id, (p = loadTree(store, id)))
    return p
  }
  const visit = async (id: BlobId, prefix: string, depth: number): Promise<PlacedEntry[][]> => {
    if (depth > 1024) throw new IntegrityError(`tree ${id} nests deeper than 1024 levels`, { tree: id })
    const tree = await load(id)
    const mine: PlacedEntry[] = tree.entries.map((entry) => ({ rel: prefix ? `${prefix}/${entry.name}` : entry.name, entry }))
    const below = await Promise.all(
      mine.filter((p) => p.entry.type === "dir").map((p) => visit((p.entry as DirEntry).tree, p.rel, depth + 1)),
    )
    return [mine, ...below.flat()]
  }
  for (const group of await visit(treeId, "", 0)) out.push(...group)
  return out
}
