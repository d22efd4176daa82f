// The incremental-snapshot cache: for each entry of a workspace's last
// snapshot (or restore), the host-local facts (size, mtime, ctime, inode)
// under which its stored form is known. One cache per workspace, named by a
// key: the box id, or a hash of the directory's absolute path.
//
// A later snapshot of the same workspace reuses a file's chunk list without
// reading it when all of path, size, mtime, ctime and inode are unchanged
// (ctime catches edits that restore the mtime, and chmod/chown), and reuses a
// directory's whole tree object when the directory and everything below it
// are unchanged and the exclude patterns are the same: an unchanged subtree
// costs its lstat calls and nothing else. Such a directory is settled before
// the walk comes to it (Settler): its entries are checked against the cache's
// columns and the scan makes no node for them. A file changed within a timestamp
// tick before the snapshot began is left out (tooRecent): its times could
// stay the same through a second change.
//
// The cache also carries each blob's stored length and the names of the
// repository's index files when it was saved (among them, files listing every
// one of its blobs). While all of those index files still exist, no pack
// holding the blobs was deleted (gc replaces an index file before it deletes
// a pack the file names), so the blobs need no index lookups, and the local
// index is not even opened; after a gc they are looked up once, in bulk.
//
// The cache lives in the host's cache directory, one file per workspace,
// never in the repository: inode numbers mean nothing on another host, and
// keeping them out of trees lets equal directories share one tree object
// across boxes. A missing, damaged or older-format cache only costs a full read.

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { isBlobId, type BlobId } from "../store/ids.js"
import type { EntryStat } from "./lstat.js"

export interface CachedBlob {
  id: BlobId
  /** stored (compressed) length in the repository; -1 when the writer did not know it */
  length: number
}

/** A directory's tree object, reusable while nothing below the directory changed. */
export interface CachedTree extends CachedBlob {
  /** logical bytes below the directory (what the parent's entry records) */
  size: number
  /** entries in the tree: a cheap guard against a changed set of names */
  entries: number
}

export interface CachedEntry {
  kind: "file" | "link" | "dir" | "symlink"
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  /** a regular file's chunks ("link", a hardlink group's later member, has none: its first member holds them) */
  chunks: CachedBlob[]
  /**
   * The mtime to record in trees when the entry is unchanged, when it differs
   * from the one on disk: a restore sets mtimes to the microsecond (libuv's
   * limit), so an unchanged restored file keeps the nanoseconds it was
   * snapshotted with, and its directory keeps its tree id.
   */
  treeMtime?: string
  tree?: CachedTree
  /**
   * A directory's: how many names its listing held when it was scanned
   * (absent: not known). When the cache holds exactly that many entries in
   * the directory, they are its listing, for as long as its stat is unchanged.
   */
  names?: number
}

/** A cache to save: what a snapshot or a restore saw. */
export interface StatCache {
  entries: Map<string, CachedEntry>
  /** the exclude patterns the trees were built with; undefined: unknown, trees not reusable */
  patterns?: string[]
  /** index files that listed every blob named here when the cache was saved; undefined: unknown */
  indexFiles?: string[]
  /** the stored bytes of the snapshot whose entries these are (its root tree's blobs); undefined: unknown */
  storedBytes?: number
}

/** A directory's names as the cache lists them, and their entries' numbers (for StatCacheView's `at`). */
export interface Listed {
  names: string[]
  at: number[]
}

/** A loaded cache: entries are decoded when asked for, so that an entry costs nothing until it is used. */
export interface StatCacheView {
  /**
   * Every method that takes a rel path takes too, as `at`, the number of its
   * entry when a listing gave it (Listed.at): found by it, rather than by a
   * lookup of the path (the path is checked against it all the same).
   */
  get(rel: string, at?: number): CachedEntry | undefined
  /** Whether rel's entry has this kind, size, mtime, ctime and inode; cheaper than get. */
  matches(rel: string, kind: CachedEntry["kind"], stat: Pick<CachedEntry, "size" | "mtimeNs" | "ctimeNs" | "ino">, at?: number): boolean
  /** every blob the cache names: files' chunks and directories' trees */
  blobs(): Iterable<CachedBlob>
  /**
   * Copies rel's entry as it is into w, without decoding it; false (nothing
   * copied) when there is none or one of its blobs' lengths is unknown.
   */
  copyTo(rel: string, w: StatCacheWriter, at?: number): boolean
  /**
   * The names in directory rel, from the cache instead of a readdir, when
   * its stat is as cached (kind, mtime, ctime, inode: an entry made, removed
   * or renamed in it changes its mtime and ctime) and the cache holds every
   * name its listing had; else undefined.
   */
  listing(rel: string, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">, at?: number): Listed | undefined
  /** Settles directories (see Settler), checking each entry below them with `probe`'s lstat. */
  settler(probe: SettleProbe): Settler
  /** Copies rel's entry and every entry below it into w, as copyTo does each; false (nothing copied) as copyTo. */
  copySubtreeTo(rel: string, w: StatCacheWriter, at?: number): boolean
  /** the blobs of every entry below directory rel (files' chunks, directories' trees) */
  blobsBelow(rel: string, at?: number): Iterable<CachedBlob>
  /** whether some blob's stored length is unknown (-1) */
  readonly someLengthUnknown: boolean
  readonly patterns?: string[]
  readonly indexFiles?: string[]
  readonly storedBytes?: number
}

/** What the scan counts below a directory: for a settled one, taken from the cache. */
export interface SubtreeCounts {
  files: number
  dirs: number
  symlinks: number
  /** its files' bytes */
  bytes: number
}

/** The scan's side of settling: its lstat, the directories it leaves out, and a pause now and then. */
export interface SettleProbe {
  /** an entry's stat; undefined (or a throw) when it cannot be had, which settles nothing above it */
  lstat(full: string): EntryStat | undefined
  /** whether the scan leaves this directory out (ScanOptions.skipDirs) */
  skips(st: EntryStat): boolean
  /** called after each entry checked: a promise to wait for before the next one (the walk yielding), or undefined */
  tick(): Promise<void> | undefined
}

/**
 * Whether directory rel (at `abs` on disk, with the stat the walk found) is
 * settled, and if so what lies below it. Settled: the directory's stat is as
 * cached, the cache holds every name of its listing, and its tree with a
 * known stored length, as many entries as names; and each entry below is as
 * cached (kind, mtime, ctime, inode, and for a file its size and one link:
 * a hardlinked file's group may reach outside the directory), each directory
 * below settled in turn, none of them one the scan leaves out. Then the
 * directory's tree and everything below it are the cache's, and the scan
 * need not list it: an unchanged workspace costs one lstat per entry and no
 * object per entry (the scan's nodes, kept to the end of a snapshot, were
 * most of an unchanged snapshot's collection work). Each entry is looked at
 * once per scan (a directory's verdict is kept), but for the entries of the
 * directories above a change, which the walk then lists and looks at again.
 */
export type Settler = (rel: string, at: number | undefined, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">, abs: string) => Promise<SubtreeCounts | undefined>

/**
 * On disk (little-endian), for n entries naming m blobs in all:
 *
 *   MAGIC, then u32 each: format version, n, m, head bytes, text length in
 *   UTF-16 units, text bytes; then columns of n values (m for blob lengths
 *   and ids): f64 size, i64 mtimeNs, i64 ctimeNs, u64 ino, f64 tree size,
 *   f64 blob length, 32 bytes blob id; u32 rel length, u32 treeMtime length
 *   (0: same as mtimeNs), u32 blob count, u32 tree entries, u32 listed (1 +
 *   a directory's names, 0: unknown); u8 kind (KIND_CODES); then the head
 *   (JSON {patterns, index, stored}: StatCache's patterns, indexFiles and
 *   storedBytes) and the text (UTF-8); last, the sha256 of all the rest.
 *
 * The text holds, entry after entry, its rel path and treeMtime. A file's
 * blobs are its chunks; a directory's one blob is its tree, whose size and
 * entry count are in the tree columns. Blob ids are bytes, made hex only
 * when asked for: as hex in the text they were a third of the file, and
 * reading, hashing and decoding the file cost ~15 ms per MB here (most of
 * it the first touch of the memory that holds it).
 *
 * Loading keeps the file: numbers are read in place from aligned typed
 * arrays and strings sliced from the text only when an entry is asked for.
 * An entry is found by its number where a listing of its directory gave it
 * (the walk passes it on), else by a map of paths, made when first needed.
 * Objects that live through the snapshot cost young-generation GC copies,
 * and for an unchanged workspace the cache is the largest thing alive:
 * decoding it whole (format 2, JSON with BigInt strings) cost more than the
 * scan's lstat calls. A file holds each path once (a snapshot writes each
 * entry once). Any other version, a
 * checksum that does not match (a flipped bit in a blob id would otherwise
 * put a wrong chunk into a snapshot without a read), or columns that do not
 * add up to the file's length, read as no cache.
 */
const MAGIC = Buffer.from("cairn-statcache\n", "latin1")
const FORMAT = 6
const SUM_BYTES = 32
/** Bytes of text encoded at a time when a cache is written. */
const TEXT_PIECE = 256 * 1024
const HEAD_BYTES = MAGIC.length + 6 * 4
const KINDS = ["file", "link", "dir", "symlink"] as const
const KIND_CODES = { file: 0, link: 1, dir: 2, symlink: 3 } as const
/** The writer's per-entry columns (EntryColumns), by name. */
const COLUMN_NAMES = ["kind", "size", "mtime", "ctime", "ino", "treeSize", "treeEntries", "listed", "relChars", "mtimeChars", "blobCount"] as const
const ID_BYTES = 32
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IFDIR = 0o040000
const S_IFLNK = 0o120000
/** A directory's verdict while a Settler runs (see settle). */
const UNKNOWN = 0
const SETTLED = 1
const UNSETTLED = 2

function cacheFile(cacheDir: string, key: string, ext = "bin"): string {
  if (!/^[A-Za-z0-9_-]+$/.test(key)) throw new Error(`invalid cache key ${JSON.stringify(key)}`)
  return path.join(cacheDir, "statcache", `${key}.${ext}`)
}

/**
 * Whether a file's stat is too recent to vouch for its content: racy git's
 * problem. File-system timestamps advance by ticks (a few ms on Linux, 1 or
 * 2 s on some file systems), so a file changed again within the tick of its
 * last change keeps its mtime and ctime, and the snapshot that read it in
 * between would take the bytes it read for the file's. A file is cached only
 * when its times lie safely before `sinceNs`, when the snapshot (or restore)
 * began: any change after that has a later time. The next snapshot reads a
 * file left out again. Times in whole seconds suggest a file system of second
 * granularity, which gets a wider margin. Without ctimeNs (a restore's
 * files, whose ctime is the restore's own), the mtime alone.
 */
export function tooRecent(st: { mtimeNs: bigint; ctimeNs?: bigint }, sinceNs: bigint): boolean {
  const seconds = st.mtimeNs % NS_PER_S === 0n && (st.ctimeNs === undefined || st.ctimeNs % NS_PER_S === 0n)
  const limit = sinceNs - (seconds ? COARSE_TICK_NS : FINE_TICK_NS)
  return st.mtimeNs >= limit || (st.ctimeNs !== undefined && st.ctimeNs >= limit)
}
const NS_PER_S = 1_000_000_000n
/** a timestamp tick on Linux (HZ 100-1000), with room to spare */
const FINE_TICK_NS = 20_000_000n
/** FAT's 2 s mtime granularity */
const COARSE_TICK_NS = 2n * NS_PER_S

/** Now, in ns since the epoch, as tooRecent takes it. */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n
}

export function dirCacheKey(absDir: string): string {
  return `dir-${createHash("sha256").update(absDir).digest("hex").slice(0, 32)}`
}

/** Cuts consecutive typed-array columns out of an 8-byte aligned buffer. */
class Columns {
  constructor(
    private readonly buf: Buffer,
    public at: number,
  ) {}
  private take<T>(make: (b: ArrayBufferLike, offset: number, n: number) => T, n: number, width: number): T {
    if (this.at + n * width > this.buf.length) throw new RangeError("column past the end")
    const col = make(this.buf.buffer, this.buf.byteOffset + this.at, n)
    this.at += n * width
    return col
  }
  f64 = (n: number) => this.take((b, o, k) => new Float64Array(b, o, k), n, 8)
  i64 = (n: number) => this.take((b, o, k) => new BigInt64Array(b, o, k), n, 8)
  u64 = (n: number) => this.take((b, o, k) => new BigUint64Array(b, o, k), n, 8)
  u32 = (n: number) => this.take((b, o, k) => new Uint32Array(b, o, k), n, 4)
  u8 = (n: number) => this.take((b, o, k) => new Uint8Array(b, o, k), n, 1)
  bytes = (n: number) => this.take((b, o, k) => Buffer.from(b, o, k), n, 1)
}

class LoadedStatCache implements StatCacheView {
  private readonly size: Float64Array
  private readonly mtime: BigInt64Array
  private readonly ctime: BigInt64Array
  private readonly ino: BigUint64Array
  private readonly treeSize: Float64Array
  private readonly blobLength: Float64Array
  /** ID_BYTES per blob */
  private readonly ids: Buffer
  private readonly relChars: Uint32Array
  private readonly mtimeChars: Uint32Array
  private readonly blobCount: Uint32Array
  private readonly treeEntries: Uint32Array
  /** per entry: 1 + a directory's names (CachedEntry.names), 0: not known */
  private readonly listed: Uint32Array
  private readonly kind: Uint8Array
  private readonly text: string
  /** per entry: where its strings start in the text, and its first blob */
  private readonly textAt: Uint32Array
  private readonly blobAt: Uint32Array
  /** entry numbers by rel path: made when first needed (an entry asked for by its number needs none) */
  private byRel?: Map<string, number>
  /** the root's entry (rel ""), -1: none */
  private readonly rootAt: number = -1
  /** per entry: its first child's number and its next sibling's (-1: none); made when first asked for */
  private family?: { first: Int32Array; next: Int32Array }
  readonly someLengthUnknown: boolean
  readonly patterns?: string[]
  readonly indexFiles?: string[]
  readonly storedBytes?: number

  /** Throws on any inconsistency. */
  constructor(buf: Buffer) {
    const [n, m, headBytes, textChars, textBytes] = [1, 2, 3, 4, 5].map((k) => buf.readUInt32LE(MAGIC.length + 4 * k)) as [number, number, number, number, number]
    const col = new Columns(buf, HEAD_BYTES)
    ;[this.size, this.mtime, this.ctime, this.ino, this.treeSize] = [col.f64(n), col.i64(n), col.i64(n), col.u64(n), col.f64(n)]
    this.blobLength = col.f64(m)
    this.ids = col.bytes(m * ID_BYTES)
    ;[this.relChars, this.mtimeChars, this.blobCount, this.treeEntries, this.listed] = [col.u32(n), col.u32(n), col.u32(n), col.u32(n), col.u32(n)]
    this.kind = col.u8(n)
    const head = JSON.parse(buf.toString("utf8", col.at, (col.at += headBytes))) as { patterns: string[] | null; index: string[] | null; stored?: number }
    if (Array.isArray(head.patterns)) this.patterns = head.patterns
    if (Array.isArray(head.index)) this.indexFiles = head.index
    if (typeof head.stored === "number") this.storedBytes = head.stored
    if (col.at + textBytes !== buf.length) throw new RangeError("sections do not add up to the file")
    // as many UTF-8 bytes as UTF-16 units: all ASCII, which latin1 decodes to the same string in half the time
    this.text = buf.toString(textBytes === textChars ? "latin1" : "utf8", col.at)
    if (this.text.length !== textChars) throw new RangeError("text does not decode to its length")
    this.textAt = new Uint32Array(n)
    this.blobAt = new Uint32Array(n)
    let t = 0
    let b = 0
    for (let i = 0; i < n; i++) {
      const kind = KINDS[this.kind[i]!]
      const blobs = this.blobCount[i]!
      if (kind === undefined || (kind !== "file" && blobs > (kind === "dir" ? 1 : 0))) throw new Error("bad entry")
      if (this.relChars[i] === 0 && this.rootAt < 0) this.rootAt = i
      this.textAt[i] = t
      this.blobAt[i] = b
      t += this.relChars[i]! + this.mtimeChars[i]!
      b += blobs
    }
    if (t !== textChars || b !== m) throw new RangeError("columns do not add up")
    this.someLengthUnknown = this.blobLength.some((l) => l < 0)
  }

  /**
   * rel's entry number: `at` when that is its number (the scan passes what
   * the cache's listing of its directory said), else looked up by path.
   * Asking by number spares a map of every path (slicing them out of the
   * text and hashing them cost more than the walk's use of them).
   */
  private find(rel: string, at: number | undefined): number | undefined {
    if (at !== undefined && at >= 0 && at < this.kind.length && this.relChars[at] === rel.length && this.text.startsWith(rel, this.textAt[at])) return at
    if (rel === "" && this.rootAt >= 0) return this.rootAt
    if (this.byRel === undefined) {
      this.byRel = new Map()
      for (let i = 0; i < this.kind.length; i++) this.byRel.set(this.relOf(i), i)
    }
    return this.byRel.get(rel)
  }

  private relOf(i: number): string {
    return this.text.slice(this.textAt[i]!, this.textAt[i]! + this.relChars[i]!)
  }

  get(rel: string, at?: number): CachedEntry | undefined {
    const i = this.find(rel, at)
    return i === undefined ? undefined : this.entry(i)
  }

  matches(rel: string, kind: CachedEntry["kind"], stat: Pick<CachedEntry, "size" | "mtimeNs" | "ctimeNs" | "ino">, at?: number): boolean {
    const i = this.find(rel, at)
    return i !== undefined && this.size[i] === stat.size && this.sameStat(i, stat) && this.kind[i] === KIND_CODES[kind]
  }

  /** Whether entry i's mtime, ctime and inode are these. */
  private sameStat(i: number, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">): boolean {
    return this.mtime[i] === stat.mtimeNs && this.ctime[i] === stat.ctimeNs && this.ino[i] === stat.ino
  }

  listing(rel: string, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">, at?: number): Listed | undefined {
    const i = this.find(rel, at)
    if (i === undefined || this.listed[i] === 0 || this.kind[i] !== KIND_CODES.dir || !this.sameStat(i, stat)) return undefined
    const { first, next } = (this.family ??= this.families())
    const names: string[] = []
    const entries: number[] = []
    const skip = rel === "" ? 0 : rel.length + 1
    for (let c = first[i]!; c >= 0; c = next[c]!) {
      names.push(this.text.slice(this.textAt[c]! + skip, this.textAt[c]! + this.relChars[c]!))
      entries.push(c)
    }
    return names.length + 1 === this.listed[i] ? { names, at: entries } : undefined
  }

  /**
   * Every entry's first child and next sibling, from its path, whatever
   * order the cache was written in. A snapshot writes it in walk order (a
   * directory, then what is in it), where an entry's parent is one of the
   * directories above the one before it, found without a lookup; else the
   * parent is looked up by its path.
   */
  private families(): { first: Int32Array; next: Int32Array } {
    const n = this.kind.length
    const first = new Int32Array(n).fill(-1)
    const next = new Int32Array(n).fill(-1)
    const last = new Int32Array(n).fill(-1)
    // the directories above the entry before, with their paths
    const above: number[] = []
    const aboveRels: string[] = []
    for (let c = 0; c < n; c++) {
      const start = this.textAt[c]!
      const chars = this.relChars[c]!
      if (chars === 0) {
        above.length = aboveRels.length = 0
        above.push(c)
        aboveRels.push("")
        continue
      }
      const slash = this.text.lastIndexOf("/", start + chars - 1)
      const parentChars = slash < start ? 0 : slash - start
      while (above.length > 0 && !(this.relChars[above[above.length - 1]!] === parentChars && this.text.startsWith(aboveRels[aboveRels.length - 1]!, start))) {
        above.pop()
        aboveRels.pop()
      }
      const p = above.length > 0 ? above[above.length - 1]! : this.find(this.text.slice(start, start + parentChars), undefined)
      if (p !== undefined) {
        if (last[p]! < 0) first[p] = c
        else next[last[p]!] = c
        last[p] = c
      }
      if (this.kind[c] === KIND_CODES.dir) {
        above.push(c)
        aboveRels.push(this.relOf(c))
      }
    }
    return { first, next }
  }

  settler(probe: SettleProbe): Settler {
    const n = this.kind.length
    // per entry: a directory's verdict, and a settled one's counts below it (files, dirs, symlinks, bytes):
    // 33 bytes an entry (~0.5 MB for the bench's workspace), beside the ~150 of the cache itself
    const verdict = new Uint8Array(n)
    const below = new Float64Array(4 * n)
    return async (rel, at, stat, abs) => {
      const i = this.find(rel, at)
      if (i === undefined) return undefined
      if (verdict[i] === UNKNOWN) await this.settle(i, stat, abs, probe, verdict, below)
      if (verdict[i] !== SETTLED) return undefined
      return { files: below[4 * i]!, dirs: below[4 * i + 1]!, symlinks: below[4 * i + 2]!, bytes: below[4 * i + 3]! }
    }
  }

  /** Whether directory i's own facts allow settling it: stat as cached, every name of its listing held, its tree known. */
  private settleable(i: number, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">): boolean {
    if (this.kind[i] !== KIND_CODES.dir || this.listed[i] === 0 || this.blobCount[i] !== 1 || this.blobLength[this.blobAt[i]!]! < 0 || !this.sameStat(i, stat)) return false
    const { first, next } = (this.family ??= this.families())
    let k = 0
    for (let c = first[i]!; c >= 0; c = next[c]!) k++
    return k + 1 === this.listed[i] && k === this.treeEntries[i]
  }

  /** Whether entry c is as cached by `st`: kind, times and inode, and a file's size and single link. */
  private sameEntry(c: number, st: EntryStat): boolean {
    const type = st.mode & S_IFMT
    const kind = this.kind[c]
    const sameKind =
      kind === KIND_CODES.file ? type === S_IFREG && st.nlink === 1 && this.size[c] === st.size
      : kind === KIND_CODES.dir ? type === S_IFDIR
      : kind === KIND_CODES.symlink && type === S_IFLNK
    return sameKind && this.sameStat(c, st)
  }

  /**
   * Settles directory `top` or finds it unsettled, depth-first with a stack
   * of its own (a tree may be deeper than the call stack). A directory
   * whose every entry checked out is settled as the walk leaves it; at the
   * first entry that does not, every directory being checked is unsettled
   * and the rest is left to the walk, which asks again of the directories
   * below it that it comes to (those found settled already are not looked
   * at again).
   */
  private async settle(top: number, stat: Pick<CachedEntry, "mtimeNs" | "ctimeNs" | "ino">, abs: string, probe: SettleProbe, verdict: Uint8Array, below: Float64Array): Promise<void> {
    if (!this.settleable(top, stat)) {
      verdict[top] = UNSETTLED
      return
    }
    const { first, next } = this.family!
    // the directories being checked, outermost first: their numbers, paths, and the next entry in each
    const dirs = [top]
    const paths = [abs]
    const cursor = [first[top]!]
    below.fill(0, 4 * top, 4 * top + 4)
    const addBelow = (to: number, from: number) => {
      for (let k = 0; k < 4; k++) below[4 * to + k]! += below[4 * from + k]!
      below[4 * to + 1]!++
    }
    while (dirs.length > 0) {
      const d = dirs.length - 1
      const i = dirs[d]!
      const c = cursor[d]!
      if (c < 0) {
        verdict[i] = SETTLED
        dirs.pop()
        paths.pop()
        cursor.pop()
        if (d > 0) addBelow(dirs[d - 1]!, i)
        continue
      }
      cursor[d] = next[c]!
      if (verdict[c] === SETTLED) {
        addBelow(i, c)
        continue
      }
      const skip = this.relChars[i] === 0 ? 0 : this.relChars[i]! + 1
      const full = `${paths[d]}/${this.text.slice(this.textAt[c]! + skip, this.textAt[c]! + this.relChars[c]!)}`
      let st: EntryStat | undefined
      try {
        st = probe.lstat(full)
      } catch {
        st = undefined // the walk finds out why
      }
      let ok = st !== undefined && this.sameEntry(c, st)
      if (ok && this.kind[c] === KIND_CODES.dir) {
        ok = verdict[c] !== UNSETTLED && !probe.skips(st!) && this.settleable(c, st!)
        if (ok) {
          dirs.push(c)
          paths.push(full)
          cursor.push(first[c]!)
          below.fill(0, 4 * c, 4 * c + 4)
        }
      } else if (ok && this.kind[c] === KIND_CODES.file) {
        below[4 * i]!++
        below[4 * i + 3]! += this.size[c]!
      } else if (ok) {
        below[4 * i + 2]!++
      }
      if (!ok) {
        for (const u of dirs) verdict[u] = UNSETTLED
        return
      }
      const wait = probe.tick()
      if (wait) await wait
    }
  }

  /** Entry i and every entry below it, in the walk's order (a directory, then what is in it). */
  private subtree(i: number): number[] {
    const { first, next } = (this.family ??= this.families())
    const out: number[] = []
    const visit = (x: number) => {
      out.push(x)
      for (let c = first[x]!; c >= 0; c = next[c]!) visit(c)
    }
    visit(i)
    return out
  }

  copySubtreeTo(rel: string, w: StatCacheWriter, at?: number): boolean {
    const i = this.find(rel, at)
    if (i === undefined) return false
    const rows = this.subtree(i)
    for (const r of rows) for (let b = this.blobAt[r]!, end = b + this.blobCount[r]!; b < end; b++) if (this.blobLength[b]! < 0) return false
    for (const r of rows) w.copyRow(this, r)
    return true
  }

  *blobsBelow(rel: string, at?: number): Iterable<CachedBlob> {
    const i = this.find(rel, at)
    if (i === undefined) return
    for (const r of this.subtree(i)) if (r !== i) yield* this.blobsOf(r)
  }

  *blobs(): Iterable<CachedBlob> {
    for (let i = 0; i < this.kind.length; i++) yield* this.blobsOf(i)
  }

  copyTo(rel: string, w: StatCacheWriter, at?: number): boolean {
    const i = this.find(rel, at)
    if (i === undefined) return false
    for (let b = this.blobAt[i]!, end = b + this.blobCount[i]!; b < end; b++) if (this.blobLength[b]! < 0) return false
    w.copyRow(this, i)
    return true
  }

  /** Appends entries [start, end) to w as they are: a slice of each column and one of the text. */
  copyRowsTo(w: StatCacheWriter, start: number, end: number): void {
    const n = this.kind.length
    const blobStart = this.blobAt[start]!
    const blobEnd = end < n ? this.blobAt[end]! : this.blobLength.length
    const textEnd = end < n ? this.textAt[end]! : this.text.length
    const cut = <T extends { subarray(a: number, b: number): T }>(c: T) => c.subarray(start, end)
    w.rows(
      { kind: cut(this.kind), size: cut(this.size), mtime: cut(this.mtime), ctime: cut(this.ctime), ino: cut(this.ino), treeSize: cut(this.treeSize), treeEntries: cut(this.treeEntries), listed: cut(this.listed), relChars: cut(this.relChars), mtimeChars: cut(this.mtimeChars), blobCount: cut(this.blobCount) },
      this.blobLength.subarray(blobStart, blobEnd),
      this.ids.subarray(blobStart * ID_BYTES, blobEnd * ID_BYTES),
      this.text.slice(this.textAt[start]!, textEnd),
    )
  }

  private blobsOf(i: number): CachedBlob[] {
    const out: CachedBlob[] = new Array(this.blobCount[i]!)
    for (let k = 0, b = this.blobAt[i]!; k < out.length; k++, b++) out[k] = { id: this.ids.toString("hex", b * ID_BYTES, (b + 1) * ID_BYTES) as BlobId, length: this.blobLength[b]! }
    return out
  }

  /** Entry i; a file's chunks are decoded when read (most lookups only compare the stat fields). */
  private entry(i: number): CachedEntry {
    const kind = KINDS[this.kind[i]!]!
    const view = this
    const entry: CachedEntry =
      kind === "file" && this.blobCount[i]! > 0
        ? { kind, size: this.size[i]!, mtimeNs: this.mtime[i]!, ctimeNs: this.ctime[i]!, ino: this.ino[i]!, get chunks() { return view.blobsOf(i) } }
        : { kind, size: this.size[i]!, mtimeNs: this.mtime[i]!, ctimeNs: this.ctime[i]!, ino: this.ino[i]!, chunks: [] }
    if (this.mtimeChars[i]! > 0) {
      const t = this.textAt[i]! + this.relChars[i]!
      entry.treeMtime = this.text.slice(t, t + this.mtimeChars[i]!)
    }
    if (this.listed[i]! > 0) entry.names = this.listed[i]! - 1
    if (kind === "dir" && this.blobCount[i] === 1) {
      // a literal: a spread of the blob, then more properties, gives every object made so a hidden class of its own in V8
      const { id, length } = this.blobsOf(i)[0]!
      entry.tree = { id, length, size: this.treeSize[i]!, entries: this.treeEntries[i]! }
    }
    return entry
  }
}

export function emptyStatCache(): StatCacheView {
  return {
    get: () => undefined,
    matches: () => false,
    blobs: () => [],
    copyTo: () => false,
    copySubtreeTo: () => false,
    blobsBelow: () => [],
    listing: () => undefined,
    settler: () => async () => undefined,
    someLengthUnknown: false,
  }
}

export async function loadStatCache(cacheDir: string, key: string): Promise<StatCacheView> {
  let buf: Buffer
  try {
    buf = await fsp.readFile(cacheFile(cacheDir, key))
  } catch {
    return emptyStatCache()
  }
  try {
    if (buf.length < HEAD_BYTES + SUM_BYTES || !buf.subarray(0, MAGIC.length).equals(MAGIC) || buf.readUInt32LE(MAGIC.length) !== FORMAT) return emptyStatCache()
    const body = buf.subarray(0, buf.length - SUM_BYTES)
    if (!createHash("sha256").update(body).digest().equals(buf.subarray(body.length))) return emptyStatCache()
    return new LoadedStatCache(body.byteOffset % 8 === 0 ? body : Buffer.from(body)) // typed-array columns need alignment
  } catch {
    return emptyStatCache() // a damaged cache is no cache
  }
}

/** An entry's columns, one value each; `rows` takes them for many entries at once. */
interface EntryColumns {
  kind: Uint8Array
  size: Float64Array
  mtime: BigInt64Array
  ctime: BigInt64Array
  ino: BigUint64Array
  treeSize: Float64Array
  treeEntries: Uint32Array
  listed: Uint32Array
  relChars: Uint32Array
  mtimeChars: Uint32Array
  blobCount: Uint32Array
}

/**
 * Builds a cache file entry by entry, straight into its columns: no entry
 * objects, no per-column arrays. Entries unchanged since the loaded cache are
 * copied from it (StatCacheView.copyTo), and consecutive ones (the next
 * snapshot walks the tree in the order the cache was written, so an
 * unchanged stretch of the tree is one run) as one run: a slice of each
 * column and one substring per run, not per entry. Building entries anew
 * cost a snapshot of a workspace with one changed file ~0.2 s on its
 * critical path; copying them one by one, ~70 ms for 15,000 entries.
 * Entries may come in any order.
 */
export class StatCacheWriter {
  private n = 0
  private m = 0
  private cap = 0
  private blobCap = 0
  private size = new Float64Array(0)
  private mtime = new BigInt64Array(0)
  private ctime = new BigInt64Array(0)
  private ino = new BigUint64Array(0)
  private treeSize = new Float64Array(0)
  private relChars = new Uint32Array(0)
  private mtimeChars = new Uint32Array(0)
  private blobCount = new Uint32Array(0)
  private treeEntries = new Uint32Array(0)
  private listed = new Uint32Array(0)
  private kind = new Uint8Array(0)
  private blobLength = new Float64Array(0)
  private ids = Buffer.alloc(0)
  private readonly text: string[] = []
  private textChars = 0
  /** entries [start, end) of a loaded cache, to be copied as one run */
  private run?: { from: LoadedStatCache; start: number; end: number }

  constructor(capacity = 256) {
    this.grow(Math.max(16, capacity), Math.max(16, capacity))
  }

  get entries(): number {
    return this.n + (this.run ? this.run.end - this.run.start : 0)
  }

  /** Copies entry i of a loaded cache (LoadedStatCache.copyTo), extending the pending run when it follows it. */
  copyRow(from: LoadedStatCache, i: number): void {
    if (this.run?.from === from && this.run.end === i) {
      this.run.end++
      return
    }
    this.flushRun()
    this.run = { from, start: i, end: i + 1 }
  }

  /** Appends many entries' columns, their blobs' lengths and ids, and their text at once. */
  rows(cols: EntryColumns, lengths: Float64Array, ids: Uint8Array, text: string): void {
    const k = cols.kind.length
    if (this.n + k > this.cap || this.m + lengths.length > this.blobCap) this.grow(Math.max(this.cap * 2, this.n + k), Math.max(this.blobCap * 2, this.m + lengths.length))
    for (const name of COLUMN_NAMES) this[name].set(cols[name] as never, this.n)
    this.blobLength.set(lengths, this.m)
    this.ids.set(ids, this.m * ID_BYTES)
    this.n += k
    this.m += lengths.length
    this.text.push(text)
    this.textChars += text.length
  }

  private flushRun(): void {
    const run = this.run
    if (!run) return
    this.run = undefined
    run.from.copyRowsTo(this, run.start, run.end)
  }

  add(rel: string, e: CachedEntry): void {
    const blobs = e.tree ? [e.tree] : e.chunks
    for (const b of blobs) if (!isBlobId(b.id)) throw new Error(`not a blob id: ${b.id}`)
    const mtimeField = treeMtimeField(e)
    this.row(KIND_CODES[e.kind], e.size, e.mtimeNs, e.ctimeNs, e.ino, e.tree?.size ?? 0, e.tree?.entries ?? 0, e.names === undefined ? 0 : e.names + 1, rel.length, mtimeField.length, rel + mtimeField, blobs)
  }

  /** One entry's columns; `text` is its rel path and treeMtime field, one after the other. */
  private row(kind: number, size: number, mtimeNs: bigint, ctimeNs: bigint, ino: bigint, treeSize: number, treeEntries: number, listed: number, relChars: number, mtimeChars: number, text: string, blobs: readonly CachedBlob[]): void {
    this.flushRun()
    if (this.n === this.cap || this.m + blobs.length > this.blobCap) this.grow(this.cap * 2, Math.max(this.blobCap * 2, this.m + blobs.length))
    const i = this.n++
    this.kind[i] = kind
    this.size[i] = size
    this.mtime[i] = mtimeNs
    this.ctime[i] = ctimeNs
    this.ino[i] = ino
    this.treeSize[i] = treeSize
    this.treeEntries[i] = treeEntries
    this.listed[i] = listed
    this.relChars[i] = relChars
    this.mtimeChars[i] = mtimeChars
    this.blobCount[i] = blobs.length
    for (const b of blobs) {
      this.ids.write(b.id, this.m * ID_BYTES, "hex")
      this.blobLength[this.m++] = b.length
    }
    this.text.push(text)
    this.textChars += text.length
  }

  /**
   * The file's bytes, checksum last, as pieces to write one after another:
   * the columns as they are (views, not copies) and the text through one
   * small buffer that each piece reuses, so that writing the cache of a
   * large workspace (megabytes) takes no buffer of its size. A piece is only
   * valid until the next one is asked for.
   */
  *encode(meta: Omit<StatCache, "entries">): Generator<Uint8Array> {
    this.flushRun()
    const n = this.n
    let textBytes = 0
    for (const piece of this.text) textBytes += Buffer.byteLength(piece, "utf8")
    const head = Buffer.from(JSON.stringify({ patterns: meta.patterns ?? null, index: meta.indexFiles ?? null, stored: meta.storedBytes }), "utf8")
    const columns: ArrayBufferView[] = [
      ...[this.size, this.mtime, this.ctime, this.ino, this.treeSize].map((c) => c.subarray(0, n)),
      this.blobLength.subarray(0, this.m),
      this.ids.subarray(0, this.m * ID_BYTES),
      ...[this.relChars, this.mtimeChars, this.blobCount, this.treeEntries, this.listed, this.kind].map((c) => c.subarray(0, n)),
    ]
    const length = HEAD_BYTES + columns.reduce((sum, c) => sum + c.byteLength, 0) + head.length + textBytes
    const hash = createHash("sha256")
    let written = 0
    const out = (bytes: Uint8Array): Uint8Array => {
      hash.update(bytes)
      written += bytes.length
      return bytes
    }
    const start = Buffer.allocUnsafe(HEAD_BYTES)
    let at = MAGIC.copy(start, 0)
    for (const v of [FORMAT, n, this.m, head.length, this.textChars, textBytes]) at = start.writeUInt32LE(v, at)
    yield out(start)
    for (const c of columns) yield out(new Uint8Array(c.buffer, c.byteOffset, c.byteLength))
    yield out(head)
    // as many UTF-8 bytes as UTF-16 units: all ASCII, which latin1 writes the same, faster
    const encoding = textBytes === this.textChars ? "latin1" : "utf8"
    const buf = Buffer.allocUnsafe(TEXT_PIECE)
    let used = 0
    for (const piece of this.text) {
      const bytes = Buffer.byteLength(piece, encoding)
      if (used + bytes > buf.length && used > 0) {
        yield out(buf.subarray(0, used))
        used = 0
      }
      if (bytes > buf.length) yield out(Buffer.from(piece, encoding))
      else used += buf.write(piece, used, encoding)
    }
    if (used > 0) yield out(buf.subarray(0, used))
    if (written !== length) throw new Error(`stat cache encoding wrote ${written} bytes, not ${length}`) // never leave unwritten bytes in the file
    yield hash.digest()
  }

  private grow(cap: number, blobCap: number): void {
    const more = <T extends Float64Array | BigInt64Array | BigUint64Array | Uint32Array | Uint8Array>(old: T, make: new (n: number) => T, n: number): T => {
      const next = new make(n)
      next.set(old as never)
      return next
    }
    this.size = more(this.size, Float64Array, cap)
    this.mtime = more(this.mtime, BigInt64Array, cap)
    this.ctime = more(this.ctime, BigInt64Array, cap)
    this.ino = more(this.ino, BigUint64Array, cap)
    this.treeSize = more(this.treeSize, Float64Array, cap)
    this.relChars = more(this.relChars, Uint32Array, cap)
    this.mtimeChars = more(this.mtimeChars, Uint32Array, cap)
    this.blobCount = more(this.blobCount, Uint32Array, cap)
    this.treeEntries = more(this.treeEntries, Uint32Array, cap)
    this.listed = more(this.listed, Uint32Array, cap)
    this.kind = more(this.kind, Uint8Array, cap)
    this.blobLength = more(this.blobLength, Float64Array, blobCap)
    const ids = Buffer.alloc(blobCap * ID_BYTES)
    this.ids.copy(ids)
    this.ids = ids
    this.cap = cap
    this.blobCap = blobCap
  }
}

export async function saveStatCache(cacheDir: string, key: string, cache: StatCache): Promise<void> {
  const w = new StatCacheWriter(cache.entries.size)
  for (const [rel, e] of cache.entries) w.add(rel, e)
  await writeStatCache(cacheDir, key, w, cache)
}

/** Writes w's entries, with meta, as the cache named key (atomically: a temp file renamed into place). */
export async function writeStatCache(cacheDir: string, key: string, w: StatCacheWriter, meta: Omit<StatCache, "entries">): Promise<void> {
  const file = cacheFile(cacheDir, key)
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.tmp-${process.pid}`
  // writeFile writes each piece whole before it asks for the next (encode reuses its text buffer)
  await fsp.writeFile(temp, w.encode(meta), { mode: 0o600 }).catch(async (err: unknown) => {
    await fsp.rm(temp, { force: true })
    throw err
  })
  await fsp.rename(temp, file)
  await fsp.rm(cacheFile(cacheDir, key, "json"), { force: true }) // the JSON cache of format 2 and before
}

/** An entry's treeMtime as stored: "" when it equals the mtime on disk. */
function treeMtimeField(e: CachedEntry): string {
  return e.treeMtime !== undefined && e.treeMtime !== String(e.mtimeNs) ? e.treeMtime : ""
}

export async function dropStatCache(cacheDir: string, key: string): Promise<void> {
  await fsp.rm(cacheFile(cacheDir, key), { force: true })
  await fsp.rm(cacheFile(cacheDir, key, "json"), { force: true })
}
