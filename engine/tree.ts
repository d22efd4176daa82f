// Tree objects: one per directory, canonical, content-addressed.
//
// A tree is UTF-8 JSON {"v":1,"entries":[...]} with entries sorted by name
// (UTF-16 code unit order, JavaScript's default) and every entry's keys in a
// fixed order, so equal directories encode to equal bytes and therefore to
// one blob, wherever and whenever they were snapshotted. Host-local facts
// that change when a tree is merely copied (inode numbers, ctimes) are not
// part of a tree; the incremental cache keeps them (see statcache.ts).
//
// Entries:
//   file     {name,type:"file",mode,mtime,uid,gid,size,chunks:[id...]}
//            or, for the 2nd.. member of a hardlink group, {...,size,link:"path/of/first"}
//   symlink  {name,type:"symlink",mode,mtime,uid,gid,target}
//   dir      {name,type:"dir",mode,mtime,uid,gid,size,tree:id}   size = logical bytes below
// mtime is nanoseconds since the epoch as a decimal string (a JSON number
// cannot hold it exactly). Trees read from a repository are untrusted:
// decodeTree checks every field, and names that could leave a restore
// destination ("", ".", "..", "/" or NUL inside) are rejected.

import { IntegrityError } from "../store/errors.js"
import { isBlobId, type BlobId } from "../store/ids.js"

export const TREE_VERSION = 1

interface EntryBase {
  name: string
  mode: number
  mtime: string
  uid: number
  gid: number
}

export interface FileEntry extends EntryBase {
  type: "file"
  size: number
  chunks?: BlobId[]
  /** Hardlink: path (from the snapshot root) of the group's first member, which holds the chunks. */
  link?: string
}

export interface SymlinkEntry extends EntryBase {
  type: "symlink"
  target: string
}

export interface DirEntry extends EntryBase {
  type: "dir"
  size: number
  tree: BlobId
}

export type TreeEntry = FileEntry | SymlinkEntry | DirEntry

export interface Tree {
  entries: TreeEntry[]
}

export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** Canonical bytes of a tree; entries are sorted and normalized here. */
export function encodeTree(entries: readonly TreeEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => compareNames(a.name, b.name))
  // one literal per kind, keys in the canonical order (as in decodeTree: spreads cost more than the stringify)
  const canon = sorted.map((e) => {
    const { name, type, mode, mtime, uid, gid } = e
    switch (e.type) {
      case "file":
        return e.link !== undefined
          ? { name, type, mode, mtime, uid, gid, size: e.size, link: e.link }
          : { name, type, mode, mtime, uid, gid, size: e.size, chunks: e.chunks ?? [] }
      case "symlink":
        return { name, type, mode, mtime, uid, gid, target: e.target }
      case "dir":
        return { name, type, mode, mtime, uid, gid, size: e.size, tree: e.tree }
    }
  })
  return Buffer.from(JSON.stringify({ v: TREE_VERSION, entries: canon }), "utf8")
}

/** A name that can be created inside a directory and nowhere else. */
export function isSafeName(name: unknown): name is string {
  return (
    typeof name === "string" &&
    name.length > 0 &&
    name.length <= 4096 &&
    name !== "." &&
    name !== ".." &&
    !name.includes("/") &&
    !name.includes("\0")
  )
}

/** A relative path made only of safe names. */
export function isSafeRelPath(p: unknown): p is string {
  return typeof p === "string" && p.length > 0 && p.split("/").every(isSafeName)
}

const MAX_SIZE = Number.MAX_SAFE_INTEGER

export function decodeTree(bytes: Uint8Array, id: string): Tree {
  const bad = (why: string) =>
    new IntegrityError(`tree ${id} is malformed (${why}); the repository is damaged or was tampered with`, { tree: id })
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
  } catch {
    throw bad("not JSON")
  }
  if (typeof doc !== "object" || doc === null || (doc as { v?: unknown }).v !== TREE_VERSION) throw bad("unknown version")
  const raw = (doc as { entries?: unknown }).entries
  if (!Array.isArray(raw)) throw bad("no entries")
  const entries: TreeEntry[] = []
  let prev: string | undefined
  for (const e of raw as Array<Record<string, unknown>>) {
    if (typeof e !== "object" || e === null) throw bad("entry is not an object")
    if (!isSafeName(e.name)) throw bad(`unsafe name ${JSON.stringify(e.name)}`)
    if (prev !== undefined && compareNames(prev, e.name) >= 0) throw bad(`names not sorted or duplicated at ${JSON.stringify(e.name)}`)
    prev = e.name
    if (!isUint(e.mode) || e.mode > 0o7777 || typeof e.mtime !== "string" || !/^-?\d{1,25}$/.test(e.mtime)) {
      throw bad(`bad metadata for ${JSON.stringify(e.name)}`)
    }
    if (!isUint(e.uid) || !isUint(e.gid)) throw bad(`bad owner for ${JSON.stringify(e.name)}`)
    // each kind built as one literal (no spread of a shared base): a restore decodes every tree of a snapshot,
    // and the spreads cost it more than the JSON parse did
    const { name, mode, mtime, uid, gid } = e as { name: string; mode: number; mtime: string; uid: number; gid: number }
    if (e.type === "file") {
      const size = e.size
      if (!isUint(size) || size > MAX_SIZE) throw bad(`bad size for ${JSON.stringify(name)}`)
      if (e.link !== undefined) {
        if (!isSafeRelPath(e.link)) throw bad(`unsafe hardlink target ${JSON.stringify(e.link)}`)
        entries.push({ name, mode, mtime, uid, gid, type: "file", size, link: e.link })
      } else {
        if (!Array.isArray(e.chunks) || !e.chunks.every(isBlobId)) throw bad(`bad chunk list for ${JSON.stringify(name)}`)
        entries.push({ name, mode, mtime, uid, gid, type: "file", size, chunks: e.chunks as BlobId[] })
      }
    } else if (e.type === "symlink") {
      if (typeof e.target !== "string" || e.target.length === 0 || e.target.includes("\0")) {
        throw bad(`bad symlink target for ${JSON.stringify(name)}`)
      }
      entries.push({ name, mode, mtime, uid, gid, type: "symlink", target: e.target })
    } else if (e.type === "dir") {
      if (!isBlobId(e.tree) || !isUint(e.size)) throw bad(`bad subtree for ${JSON.stringify(name)}`)
      entries.push({ name, mode, mtime, uid, gid, type: "dir", size: e.size, tree: e.tree })
    } else {
      throw bad(`unknown type ${JSON.stringify(e.type)}`)
    }
  }
  return { entries }
}

function isUint(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0
}

/** nanoseconds (bigint) <-> the decimal string kept in trees */
export function nsToString(ns: bigint): string {
  return ns.toString()
}

/**
 * The subtrees and chunks a tree references, for walks that need nothing
 * else (gc's mark). decodeTree checks every name and field for restore's sake
 * and costs twice the JSON parse; this checks only what could make a
 * walk miss a reference: an entry type it does not know, or a reference that
 * is not a string, is an IntegrityError. (A string that is no blob id is found
 * in no pack, which stops a walk too.) It may return more than restore would
 * use (chunks next to a hardlink), never less.
 */
export function treeReferences(raw: Uint8Array, id: BlobId): { trees: BlobId[]; chunks: BlobId[] } {
  const bad = (why: string) => new IntegrityError(`tree ${id} is malformed (${why})`, { tree: id })
  let doc: { v?: unknown; entries?: unknown }
  try {
    doc = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("utf8"))
  } catch {
    throw bad("not JSON")
  }
  if (typeof doc !== "object" || doc === null || doc.v !== TREE_VERSION) throw bad("unknown version")
  if (!Array.isArray(doc.entries)) throw bad("no entries")
  const trees: BlobId[] = []
  const chunks: BlobId[] = []
  for (const e of doc.entries as Array<{ type?: unknown; tree?: unknown; chunks?: unknown } | null>) {
    switch (e?.type) {
      case "dir":
        if (typeof e.tree !== "string") throw bad("a subtree is not an id")
        trees.push(e.tree as BlobId)
        break
      case "file":
        if (e.chunks === undefined) break
        if (!Array.isArray(e.chunks) || !e.chunks.every((c) => typeof c === "string")) throw bad("a chunk list is not a list of ids")
        for (const c of e.chunks) chunks.push(c as BlobId)
        break
      case "symlink":
        break
      default:
        throw bad(`unknown entry type ${JSON.stringify(e?.type)}`)
    }
  }
  return { trees, chunks }
}
