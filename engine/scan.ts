// Scan: walk a workspace with lstat semantics into an in-memory model.
//
// Symlinks are recorded as links and never followed. Sockets, FIFOs and
// devices are skipped with a warning; so are names that are not valid UTF-8
// (they cannot round-trip through a string) and entries that vanish or cannot
// be read during the walk. Hardlinks: regular files with nlink > 1 that share
// (dev, ino) inside the tree form a group whose first member in sorted path
// order holds the content; the others point at it. The result also carries
// the totals that progress reporting needs before any content is read.

import { promises as fsp, type BigIntStats } from "node:fs"
import path from "node:path"
import { Semaphore } from "../store/concurrency.js"
import { throwIfAborted } from "../store/errors.js"
import type { IgnoreRules } from "./ignore.js"

export interface ScanNode {
  name: string
  /** path from the scan root, "/"-separated, "" for the root */
  rel: string
  type: "file" | "dir" | "symlink"
  mode: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  dev: bigint
  nlink: number
  uid: number
  gid: number
  size: number
  target?: string
  children?: ScanNode[]
  /** for hardlink group members after the first: rel path of the first */
  linkTo?: string
}

export interface Warning {
  path: string
  reason: string
}

export interface ScanResult {
  root: ScanNode
  files: number
  dirs: number
  symlinks: number
  /** bytes of regular-file content to read (hardlinks counted once) */
  bytes: number
  warnings: Warning[]
}

export interface ScanOptions {
  ignore?: IgnoreRules
  signal?: AbortSignal
}

const statSlots = new Semaphore(32)

export async function scanTree(root: string, opts: ScanOptions = {}): Promise<ScanResult> {
  const st = await fsp.lstat(root, { bigint: true })
  if (!st.isDirectory()) throw new Error(`${root} is not a directory`)
  const result: ScanResult = { root: toNode("", "", st), files: 0, dirs: 0, symlinks: 0, bytes: 0, warnings: [] }
  await walk(root, result.root, result, opts)
  linkHardlinks(result)
  return result
}

function toNode(name: string, rel: string, st: BigIntStats): ScanNode {
  const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : "file"
  return {
    name,
    rel,
    type,
    mode: Number(st.mode & 0o7777n),
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    ino: st.ino,
    dev: st.dev,
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: type === "file" ? Number(st.size) : 0,
  }
}

async function walk(abs: string, node: ScanNode, result: ScanResult, opts: ScanOptions): Promise<void> {
  throwIfAborted(opts.signal)
  let names: Buffer[]
  try {
    names = await statSlots.run(() => fsp.readdir(abs, { encoding: "buffer" }))
  } catch (err) {
    result.warnings.push({ path: node.rel || ".", reason: `directory not readable (${(err as NodeJS.ErrnoException).code})` })
    node.children = []
    return
  }
  const children: ScanNode[] = []
  await Promise.all(
    names.map(async (raw) => {
      const name = raw.toString("utf8")
      const rel = node.rel === "" ? name : `${node.rel}/${name}`
      if (!Buffer.from(name, "utf8").equals(raw)) {
        result.warnings.push({ path: rel, reason: "name is not valid UTF-8; skipped" })
        return
      }
      let st: BigIntStats
      try {
        st = await statSlots.run(() => fsp.lstat(path.join(abs, name), { bigint: true }))
      } catch (err) {
        result.warnings.push({ path: rel, reason: `vanished or unreadable during scan (${(err as NodeJS.ErrnoException).code})` })
        return
      }
      if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
        result.warnings.push({ path: rel, reason: `${kindOf(st)} skipped` })
        return
      }
      const child = toNode(name, rel, st)
      if (opts.ignore?.ignores(rel, child.type === "dir")) return
      if (child.type === "symlink") {
        try {
          child.target = await fsp.readlink(path.join(abs, name))
        } catch (err) {
          result.warnings.push({ path: rel, reason: `symlink vanished during scan (${(err as NodeJS.ErrnoException).code})` })
          return
        }
      }
      children.push(child)
    }),
  )
  children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  node.children = children
  for (const child of children) {
    if (child.type === "dir") result.dirs++
    else if (child.type === "symlink") result.symlinks++
    else result.files++
  }
  await Promise.all(children.filter((c) => c.type === "dir").map((c) => walk(path.join(abs, c.name), c, result, opts)))
}

function kindOf(st: BigIntStats): string {
  if (st.isSocket()) return "socket"
  if (st.isFIFO()) return "FIFO"
  if (st.isBlockDevice()) return "block device"
  if (st.isCharacterDevice()) return "character device"
  return "special file"
}

/** Groups hardlinked files; the first in depth-first sorted order keeps the content. */
function linkHardlinks(result: ScanResult): void {
  const first = new Map<string, string>()
  const visit = (node: ScanNode) => {
    for (const child of node.children ?? []) {
      if (child.type === "dir") visit(child)
      else if (child.type === "file") {
        if (child.nlink > 1) {
          const key = `${child.dev}:${child.ino}`
          const owner = first.get(key)
          if (owner !== undefined) {
            child.linkTo = owner
            continue
          }
          first.set(key, child.rel)
        }
        result.bytes += child.size
      }
    }
  }
  visit(result.root)
}

/** Depth-first, sorted iteration over every node below root. */
export function* walkNodes(node: ScanNode): Generator<ScanNode> {
  for (const child of node.children ?? []) {
    yield child
    if (child.type === "dir") yield* walkNodes(child)
  }
}
