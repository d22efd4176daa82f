// Diff: what changed between two snapshots, or a snapshot and a directory.
//
// Trees are content-addressed, so two directories with the same tree id are
// identical and the walk skips them without reading anything below: the
// time is proportional to what changed, not to the size of the trees. A live
// directory is scanned like a snapshot would scan it (same excludes) and its
// files are compared by size and mtime first; a file whose size matches but
// whose mtime differs is chunked and hashed to tell a touched file from an
// edited one.

import { constants as fsConstants, promises as fsp } from "node:fs"
import path from "node:path"
import { hashBytes, type BlobId } from "../store/ids.js"
import type { Store } from "../store/store.js"
import { Chunker, gearTable } from "./fastcdc.js"
import { compileIgnore } from "./ignore.js"
import { scanTree, type ScanNode } from "./scan.js"
import { compareNames, nsToString, type TreeEntry } from "./tree.js"
import { loadTree } from "./walk.js"

export type ChangeKind = "added" | "removed" | "modified"
/** What made a path "modified"; a changed mtime alone does not (it is not a change of state a restore would show). */
export type ChangeAspect = "content" | "mode" | "type" | "target"

export interface Change {
  path: string
  change: ChangeKind
  type: "file" | "dir" | "symlink"
  what?: ChangeAspect[]
  oldSize?: number
  newSize?: number
}

export interface DiffResult {
  changes: Change[]
  addedBytes: number
  removedBytes: number
  modifiedBytes: number
}

/** A directory's entries, however they were obtained. */
interface Side {
  entries: Map<string, Item>
}

interface Item {
  name: string
  type: "file" | "dir" | "symlink"
  mode: number
  mtime: string
  size: number
  /** chunk ids (files), target (symlinks), subtree id (dirs, snapshot side) */
  chunks?: BlobId[]
  link?: string
  target?: string
  tree?: BlobId
  /** live side: the scanned node and its absolute path */
  node?: ScanNode
  abs?: string
}

function fromEntry(e: TreeEntry): Item {
  // one literal per kind, no spread of a shared base: a spread gives every item a hidden class of its own
  const { name, type, mode, mtime } = e
  if (e.type === "file") return { name, type, mode, mtime, size: e.size, chunks: e.chunks, link: e.link }
  if (e.type === "symlink") return { name, type, mode, mtime, size: 0, target: e.target }
  return { name, type, mode, mtime, size: e.size, tree: e.tree }
}

/**
 * oldSize/newSize of a change: files only. A directory's size is known on the
 * snapshot side (logical bytes below) but not on a live side, and the files
 * below a changed directory are reported on their own.
 */
function sizes(x: Item | undefined, y: Item | undefined): { oldSize?: number; newSize?: number } {
  return { ...(x?.type === "file" ? { oldSize: x.size } : {}), ...(y?.type === "file" ? { newSize: y.size } : {}) }
}

class Differ {
  readonly result: DiffResult = { changes: [], addedBytes: 0, removedBytes: 0, modifiedBytes: 0 }

  constructor(
    private readonly store: Store,
    private readonly contentOf: (item: Item) => Promise<BlobId[] | undefined>,
  ) {}

  async treeSide(id: BlobId): Promise<Side> {
    const tree = await loadTree(this.store, id)
    return { entries: new Map(tree.entries.map((e) => [e.name, fromEntry(e)])) }
  }

  async compare(a: Side, b: Side, prefix: string, expandB: (item: Item) => Promise<Side>): Promise<void> {
    const names = [...new Set([...a.entries.keys(), ...b.entries.keys()])].sort(compareNames)
    for (const name of names) {
      const p = prefix ? `${prefix}/${name}` : name
      const x = a.entries.get(name)
      const y = b.entries.get(name)
      if (x && !y) await this.whole("removed", x, p, (i) => this.treeSide(i.tree!))
      else if (!x && y) await this.whole("added", y, p, expandB)
      else if (x && y) await this.pair(x, y, p, expandB)
    }
  }

  private async pair(x: Item, y: Item, p: string, expandB: (item: Item) => Promise<Side>): Promise<void> {
    if (x.type !== y.type) {
      this.push({ path: p, change: "modified", type: y.type, what: ["type"], ...sizes(x, y) })
      if (x.type === "dir") await this.below("removed", x, p, (i) => this.treeSide(i.tree!))
      if (y.type === "dir") await this.below("added", y, p, expandB)
      return
    }
    const what: ChangeAspect[] = []
    if (x.type === "file") {
      if (x.size !== y.size || (x.link ?? "") !== (y.link ?? "")) what.push("content")
      else if (x.link !== undefined) {
        // hardlink members: their content is compared at the group's first member
      } else if (x.chunks && y.chunks) {
        if (x.chunks.join() !== y.chunks.join()) what.push("content")
      } else if (x.mtime !== y.mtime) {
        // live side, same size, touched: hash it to tell a touch from an edit
        const [cx, cy] = [x.chunks ?? (await this.contentOf(x)), y.chunks ?? (await this.contentOf(y))]
        if (cx?.join() !== cy?.join()) what.push("content")
      }
    }
    if (x.type === "symlink" && x.target !== y.target) what.push("target")
    if (x.mode !== y.mode) what.push("mode")
    if (what.length > 0) this.push({ path: p, change: "modified", type: y.type, what, ...sizes(x, y) })
    if (x.type === "dir") {
      if (x.tree !== undefined && x.tree === y.tree) return // identical subtrees: nothing below differs
      await this.compare(await this.treeSide(x.tree!), await expandB(y), p, expandB)
    }
  }

  private async whole(kind: "added" | "removed", item: Item, p: string, expand: (i: Item) => Promise<Side>): Promise<void> {
    this.push({ path: p, change: kind, type: item.type, ...(kind === "added" ? sizes(undefined, item) : sizes(item, undefined)) })
    if (item.type === "dir") await this.below(kind, item, p, expand)
  }

  private async below(kind: "added" | "removed", dir: Item, p: string, expand: (i: Item) => Promise<Side>): Promise<void> {
    const side = await expand(dir)
    for (const name of [...side.entries.keys()].sort(compareNames)) await this.whole(kind, side.entries.get(name)!, `${p}/${name}`, expand)
  }

  private push(c: Change): void {
    this.result.changes.push(c)
    const fileBytes = (n?: number) => (c.type === "file" ? (n ?? 0) : 0)
    if (c.change === "added") this.result.addedBytes += fileBytes(c.newSize)
    else if (c.change === "removed") this.result.removedBytes += fileBytes(c.oldSize)
    else if (c.what?.includes("content")) this.result.modifiedBytes += fileBytes(c.newSize)
  }
}

/** Differences between two snapshots' root trees, in path order. */
export async function diffTrees(store: Store, a: BlobId, b: BlobId): Promise<DiffResult> {
  const differ = new Differ(store, async () => undefined)
  if (a === b) return differ.result
  await differ.compare(await differ.treeSide(a), await differ.treeSide(b), "", (i) => differ.treeSide(i.tree!))
  return differ.result
}

/** Differences between a snapshot's tree (a) and a live directory (b). */
export async function diffLive(store: Store, a: BlobId, dir: string, opts: { exclude?: string[] } = {}): Promise<DiffResult> {
  const root = path.resolve(dir)
  const scan = await scanTree(root, { ignore: compileIgnore(opts.exclude ?? []) })
  const c = store.config.chunker
  const gear = gearTable(Buffer.from(c.seed, "hex"))
  const params = { minSize: c.minSize, avgSize: c.avgSize, maxSize: c.maxSize }
  const liveSide = (node: ScanNode): Side => ({
    entries: new Map(
      (node.children ?? []).map((n) => [
        n.name,
        {
          name: n.name,
          type: n.type,
          mode: n.mode,
          mtime: nsToString(n.mtimeNs),
          size: n.size,
          target: n.target,
          node: n,
          abs: path.join(root, n.rel),
          ...(n.linkTo !== undefined ? { link: n.linkTo } : {}),
        } satisfies Item,
      ]),
    ),
  })
  const hashFile = async (item: Item): Promise<BlobId[] | undefined> => {
    if (!item.abs) return undefined
    const handle = await fsp.open(item.abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch(() => undefined)
    if (!handle) return undefined
    try {
      const chunker = new Chunker(params, gear)
      const ids: BlobId[] = []
      for await (const block of handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false })) {
        for (const piece of chunker.push(block as Buffer)) ids.push(hashBytes(piece))
      }
      for (const piece of chunker.finish()) ids.push(hashBytes(piece))
      return ids
    } finally {
      await handle.close()
    }
  }
  const differ = new Differ(store, hashFile)
  await differ.compare(await differ.treeSide(a), liveSide(scan.root), "", async (i) => liveSide(i.node!))
  return differ.result
}
