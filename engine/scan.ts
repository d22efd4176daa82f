// Scan: walk a workspace with lstat semantics into an in-memory model.
//
// Symlinks are recorded as links and never followed. Sockets, FIFOs and
// devices are skipped with a warning; so are names that are not valid UTF-8
// (they cannot round-trip through a string) and entries that vanish or cannot
// be read during the walk. Hardlinks: regular files with nlink > 1 that share
// (dev, ino) inside the tree form a group whose first member in sorted path
// order holds the content; the others point at it. The result also carries
// the totals that progress reporting needs before any content is read.
// A large tree is listed by helper threads too (scan-helper.ts): the same
// rules apply to what they list, and warnings come out in path order, so a
// tree scans to the same result however the work was shared. A directory
// the stat cache lists as it is on disk (ScanOptions.listed) is not read:
// its names are the cache's, and each of its entries is still lstat'ed.

import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import { throwIfAborted } from "../store/errors.js"
import { lstatEntry, type EntryStat } from "./lstat.js"
import { entryStat, helpers, listDirs, type Listing } from "./scan-helper.js"
import type { IgnoreRules } from "./ignore.js"
import type { SettleProbe, Settler, SubtreeCounts } from "./statcache.js"

/** An entry as scanned: its lstat (mode: the permission bits only; size: 0 but for a file), its place, and what the walk adds. */
export interface ScanNode extends EntryStat {
  name: string
  /** path from the scan root, "/"-separated, "" for the root */
  rel: string
  type: "file" | "dir" | "symlink"
  target?: string
  children?: ScanNode[]
  /** for hardlink group members after the first: rel path of the first */
  linkTo?: string
  /** a directory's: how many names its listing held (kept or not) */
  names?: number
  /** its entry's number in the stat cache, when the cache's listing of its directory gave it (ScanOptions.listed) */
  cacheAt: number | undefined
  /**
   * A directory the stat cache settled (ScanOptions.settle): unchanged with
   * everything below it, which the walk did not list (no children) and
   * whose counts below it are these.
   */
  settled?: SubtreeCounts
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
  /** Entries listed before helper threads list directories too (default HELP_FROM; 0: from the start, Infinity: never). */
  helpFrom?: number
  /**
   * A directory's names known without a readdir (the stat cache's, for a
   * directory unchanged since: StatCacheView.listing), with a number for
   * each (their entries' in the cache: ScanNode.cacheAt), or undefined to
   * read them. Asked on the walk's own thread, before each readdir, with
   * the directory's own number when its listing gave one.
   */
  listed?: (rel: string, st: EntryStat, at: number | undefined) => { names: string[]; at: readonly number[] } | undefined
  /**
   * Settles directories unchanged since the stat cache was written, with
   * everything below them (StatCacheView.settler): asked of each directory
   * before it is listed (on the walk's own thread), given the walk's lstat,
   * its skipped directories, and its pauses. A settled directory is not
   * listed (ScanNode.settled).
   */
  settle?: (probe: SettleProbe) => Settler
}

export async function scanTree(root: string, opts: ScanOptions = {}): Promise<ScanResult> {
  root = path.resolve(root)
  const st = lstatEntry(root)
  if (st === undefined) await fsp.lstat(root) // not there: fails as fs does (ENOENT), which callers report
  if (st === undefined || (st.mode & S_IFMT) !== S_IFDIR) throw new Error(`${root} is not a directory`)
  const result: ScanResult = { root: toNode("", "", "dir", st), files: 0, dirs: 0, symlinks: 0, bytes: 0, warnings: [] }
  await walk(root, result.root, result, opts)
  linkHardlinks(result)
  // in path order: the walk's order depends on which thread listed what
  result.warnings.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  return result
}

const S_IFMT = 0o170000
const S_IFDIR = 0o040000
const TYPES: Record<number, ScanNode["type"] | string> = {
  0o100000: "file",
  0o040000: "dir",
  0o120000: "symlink",
  0o140000: "socket",
  0o010000: "FIFO",
  0o060000: "block device",
  0o020000: "character device",
}

function toNode(name: string, rel: string, type: ScanNode["type"], st: EntryStat, cacheAt?: number): ScanNode {
  return {
    name,
    rel,
    type,
    mode: st.mode & 0o7777,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    ino: st.ino,
    dev: st.dev,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    size: type === "file" ? st.size : 0,
    cacheAt,
  }
}

/**
 * Metadata calls are synchronous: an lstat answered from the inode cache
 * takes ~2 us inline but ~30 us as a thread-pool round trip, and a scan is
 * nothing but such calls. To keep the event loop responsive (progress,
 * timers, other boxes' work), the walk yields after every YIELD_EVERY calls.
 */
const YIELD_EVERY = 512

/**
 * From this many entries on, the walk hands directories to helper threads
 * too (scan-helper.ts): half of those it has waiting, up to HELP_BATCH, two
 * batches in flight per helper (one being listed, one waiting), while it
 * lists the rest itself. The tree of 100,000 small files scanned in 0.71-0.75
 * s instead of 0.90-0.95 (a helper lists, but the walk still makes a node of
 * every entry); the bench's workspace (14,837 entries) was slower with a
 * helper from 2,048 entries on (0.49 s against 0.45 unchanged), whose start
 * (~40 ms, 12-15 MiB) only a larger tree repays.
 */
const HELP_FROM = 16_384
const HELP_BATCH = 32

/** What listing one entry gave: its stat, or why not; a symlink's target, if known already. */
interface Found {
  st?: EntryStat
  /** why the lstat failed (ENOENT: vanished) */
  code?: string
  target?: string
  targetCode?: string
}

async function walk(root: string, rootNode: ScanNode, result: ScanResult, opts: ScanOptions): Promise<void> {
  let calls = 0
  let entries = 0
  const helpFrom = opts.helpFrom ?? HELP_FROM
  const stack: Array<[string, ScanNode]> = [[root, rootNode]]
  // batches of directories out with helpers, and their listings once back (taken in at the walk's next turn)
  const helping = new Set<Promise<void>>()
  const listed: Array<[string, ScanNode, Listing]> = []
  const settler = opts.settle?.({
    lstat: lstatEntry,
    skips: (st) => opts.skipDirs?.ids.has(`${st.dev}:${st.ino}`) === true,
    tick: () => {
      if (++calls <= YIELD_EVERY) return undefined
      calls = 0
      throwIfAborted(opts.signal)
      return new Promise<void>((resolve) => setImmediate(resolve))
    },
  })
  const ask = (batch: Array<[string, ScanNode]>) => {
    const asked: Promise<void> = listDirs(batch.map(([abs]) => abs))
      .then(
        (listings) => void listings.forEach((l, i) => listed.push([...batch[i]!, l])),
        () => void stack.push(...batch), // the helper failed: listed here after all
      )
      .finally(() => helping.delete(asked))
    helping.add(asked)
  }
  while (stack.length > 0 || helping.size > 0 || listed.length > 0) {
    throwIfAborted(opts.signal)
    if (stack.length === 0 && listed.length === 0) {
      await Promise.race(helping) // nothing to do here until a helper answers
      continue
    }
    if (calls > YIELD_EVERY) {
      calls = 0
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    if (entries >= helpFrom && helping.size < 2 * helpers() && stack.length >= 2) ask(stack.splice(stack.length - Math.min(HELP_BATCH, stack.length >> 1)))
    const done = listed.pop()
    if (done) {
      const [abs, node, listing] = done
      if ("names" in listing) {
        const { names, stats, codes, targets, targetCodes } = listing
        node.names = names.length
        entries += names.length
        calls += names.length >> 2 // taking a listing in costs a fraction of making it
        addChildren(abs, node, names, (name, i) => (codes[i] === undefined ? { st: entryStat(stats, i), target: targets[i], targetCode: targetCodes[i] } : { code: codes[i] }), result, opts, stack)
        continue
      }
      if ("code" in listing) {
        unreadable(node, listing.code, result)
        continue
      }
      // names that are not valid UTF-8: listed here, where they are reported
      stack.push([abs, node])
      continue
    }
    const [abs, node] = stack.pop()!
    const below = await settler?.(node.rel, node.cacheAt, node, abs)
    if (below !== undefined) {
      node.settled = below
      result.files += below.files
      result.dirs += below.dirs
      result.symlinks += below.symlinks
      continue
    }
    // a directory unchanged since the stat cache was written: its names are the cache's, no readdir
    const known = opts.listed?.(node.rel, node, node.cacheAt)
    let names = known?.names
    if (names !== undefined) {
      node.names = names.length
    } else {
      try {
        names = fs.readdirSync(abs)
        node.names = names.length
        calls++
        // undecodable bytes read as U+FFFD: such names cannot round-trip through a string
        if (names.some((n) => n.includes("\uFFFD"))) names = validNames(abs, node.rel, result.warnings)
      } catch (err) {
        unreadable(node, (err as NodeJS.ErrnoException).code, result)
        continue
      }
    }
    calls += names.length
    entries += names.length
    addChildren(abs, node, names, (name) => lstatHere(`${abs}/${name}`), result, opts, stack, known?.at)
  }
}

function unreadable(node: ScanNode, code: string | undefined, result: ScanResult): void {
  result.warnings.push({ path: node.rel || ".", reason: `directory not readable (${code})` })
  node.children = []
}

/**
 * The entries of a directory (abs, node) as its listing found them: each one
 * kept as a child (its subdirectories go on the stack), or left out with a
 * warning that says why, or left out by the ignore rules. The same rules
 * whichever thread listed it.
 */
function addChildren(
  abs: string,
  node: ScanNode,
  names: readonly string[],
  find: (name: string, i: number) => Found,
  result: ScanResult,
  opts: ScanOptions,
  stack: Array<[string, ScanNode]>,
  cacheAt?: readonly number[],
): void {
  const children: ScanNode[] = []
  names.forEach((name, i) => {
    const rel = node.rel === "" ? name : `${node.rel}/${name}`
    const { st, code, target, targetCode } = find(name, i)
    if (!st) {
      result.warnings.push({ path: rel, reason: statProblem(code, `${abs}/${name}`) })
      return
    }
    const type = TYPES[st.mode & S_IFMT] ?? "special file"
    if (type !== "file" && type !== "dir" && type !== "symlink") {
      result.warnings.push({ path: rel, reason: `${type} skipped` })
      return
    }
    const child = toNode(name, rel, type, st, cacheAt?.[i])
    if (opts.ignore?.ignores(rel, type === "dir")) return
    if (type === "dir" && opts.skipDirs?.ids.has(`${st.dev}:${st.ino}`)) {
      result.warnings.push({ path: rel, reason: opts.skipDirs.reason })
      return
    }
    if (type === "symlink") {
      // the helper read it already (target or targetCode), else read here
      const link = target !== undefined || targetCode !== undefined ? { target, code: targetCode } : readlinkHere(`${abs}/${name}`)
      if (link.target === undefined) {
        result.warnings.push({ path: rel, reason: `symlink vanished during scan (${link.code})` })
        return
      }
      child.target = link.target
    }
    children.push(child)
    if (type === "dir") result.dirs++
    else if (type === "symlink") result.symlinks++
    else {
      result.files++
      if (opts.onLargeFile && child.size >= opts.onLargeFile.size && child.nlink === 1) opts.onLargeFile.fn(child)
    }
  })
  children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  node.children = children
  for (let i = children.length - 1; i >= 0; i--) {
    const c = children[i]!
    if (c.type === "dir") stack.push([`${abs}/${c.name}`, c])
  }
}

/** An entry's lstat on this thread, or the code of why not (ENOENT: it vanished). */
function lstatHere(full: string): Found {
  try {
    const st = lstatEntry(full)
    return st ? { st } : { code: "ENOENT" }
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code ?? String(err) }
  }
}

/** A symlink's target read on this thread, or the code of why not. */
function readlinkHere(full: string): { target?: string; code?: string } {
  try {
    return { target: fs.readlinkSync(full) }
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code ?? String(err) }
  }
}

/**
 * Why an entry was left out when its lstat failed: it vanished (its
 * directory may have been replaced too: ENOTDIR), or its path is longer than
 * the kernel takes (PATH_MAX, 4096 bytes on Linux), or it cannot be examined.
 */
function statProblem(code: string | undefined, full: string): string {
  if (code === "ENOENT" || code === "ENOTDIR") return "vanished during scan"
  if (code === "ENAMETOOLONG") return `skipped: its path is longer than the system allows (${Buffer.byteLength(full)} bytes)`
  return `skipped: cannot be examined (${code})`
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

/** Groups hardlinked files; the first in depth-first sorted order keeps the content. */
function linkHardlinks(result: ScanResult): void {
  const first = new Map<string, string>()
  const visit = (node: ScanNode) => {
    // nothing below a settled directory has a second link (statcache.ts, Settler)
    if (node.settled) result.bytes += node.settled.bytes
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
