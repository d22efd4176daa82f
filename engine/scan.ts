// Scan: walk a workspace with lstat semantics into an in-memory model.
//
// Symlinks are recorded as links and never followed. Sockets, FIFOs and
// devices are skipped with a warning; so are names that are not valid UTF-8
// (they cannot round-trip through a string) and entries that vanish or cannot
// be read during the walk. Hardlinks: regular files with nlink > 1 that share
// (dev, ino) inside the tree form a group whose first member in sorted path
// order holds the content; the others point at it. The result also carries
// the totals that progress reporting needs before any content is read.

import fs, { promises as fsp, type BigIntStats } from "node:fs"
import path from "node:path"
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
  /**
   * Called during the walk for each regular file of at least `size` bytes
   * with one link (a hardlinked file's group is only known once the walk
   * is done), so that reading it can start while the walk goes on.
   */
  onLargeFile?: { size: number; fn: (node: ScanNode) => void }
  /** Directories left out, by "dev:ino", with the warning that says why (a repository inside the tree it snapshots). */
  skipDirs?: { ids: ReadonlySet<string>; reason: string }
}

export async function scanTree(root: string, opts: ScanOptions = {}): Promise<ScanResult> {
  root = path.resolve(root)
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

/**
 * Metadata calls are synchronous: an lstat answered from the inode cache
 * takes ~2 us inline but ~30 us as a thread-pool round trip, and a scan is
 * nothing but such calls. To keep the event loop responsive (progress,
 * timers, other boxes' work), the walk yields after every YIELD_EVERY calls.
 */
const YIELD_EVERY = 512

async function walk(root: string, rootNode: ScanNode, result: ScanResult, opts: ScanOptions): Promise<void> {
  let calls = 0
  const stack: Array<[string, ScanNode]> = [[root, rootNode]]
  while (stack.length > 0) {
    const [abs, node] = stack.pop()!
    throwIfAborted(opts.signal)
    if (calls > YIELD_EVERY) {
      calls = 0
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    let names: string[]
    try {
      names = fs.readdirSync(abs)
      calls++
      // undecodable bytes read as U+FFFD: such names cannot round-trip through a string
      if (names.some((n) => n.includes("\uFFFD"))) names = validNames(abs, node.rel, result.warnings)
    } catch (err) {
      result.warnings.push({ path: node.rel || ".", reason: `directory not readable (${(err as NodeJS.ErrnoException).code})` })
      node.children = []
      continue
    }
    const children: ScanNode[] = []
    for (const name of names) {
      const rel = node.rel === "" ? name : `${node.rel}/${name}`
      const full = `${abs}/${name}`
      const st = lstatOrWarn(full, rel, result.warnings)
      calls++
      if (!st) continue
      if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
        result.warnings.push({ path: rel, reason: `${kindOf(st)} skipped` })
        continue
      }
      const child = toNode(name, rel, st)
      if (opts.ignore?.ignores(rel, child.type === "dir")) continue
      if (child.type === "dir" && opts.skipDirs?.ids.has(`${st.dev}:${st.ino}`)) {
        result.warnings.push({ path: rel, reason: opts.skipDirs.reason })
        continue
      }
      if (child.type === "symlink") {
        try {
          child.target = fs.readlinkSync(full)
        } catch (err) {
          result.warnings.push({ path: rel, reason: `symlink vanished during scan (${(err as NodeJS.ErrnoException).code})` })
          continue
        }
      }
      children.push(child)
      if (child.type === "dir") result.dirs++
      else if (child.type === "symlink") result.symlinks++
      else {
        result.files++
        if (opts.onLargeFile && child.size >= opts.onLargeFile.size && child.nlink === 1) opts.onLargeFile.fn(child)
      }
    }
    children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    node.children = children
    for (let i = children.length - 1; i >= 0; i--) {
      const c = children[i]!
      if (c.type === "dir") stack.push([`${abs}/${c.name}`, c])
    }
  }
}

/**
 * lstat, or undefined with a warning: the entry vanished (its directory may
 * have been replaced too: ENOTDIR), or its path is longer than the kernel
 * takes (PATH_MAX, 4096 bytes on Linux), or it cannot be examined.
 */
function lstatOrWarn(full: string, rel: string, warnings: Warning[]): BigIntStats | undefined {
  try {
    const st = fs.lstatSync(full, { bigint: true, throwIfNoEntry: false })
    if (!st) warnings.push({ path: rel, reason: "vanished during scan" })
    return st
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const reason =
      code === "ENOTDIR"
        ? "vanished during scan"
        : code === "ENAMETOOLONG"
          ? `skipped: its path is longer than the system allows (${Buffer.byteLength(full)} bytes)`
          : `skipped: cannot be examined (${code ?? String(err)})`
    warnings.push({ path: rel, reason })
    return undefined
  }
}

/** The names of a directory that are valid UTF-8; the others are reported and skipped. */
function validNames(abs: string, rel: string, warnings: Warning[]): string[] {
  const out: string[] = []
  for (const raw of fs.readdirSync(abs, { encoding: "buffer" })) {
    const name = raw.toString("utf8")
    if (Buffer.from(name, "utf8").equals(raw)) out.push(name)
    else warnings.push({ path: rel === "" ? name : `${rel}/${name}`, reason: "name is not valid UTF-8; skipped" })
  }
  return out
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
