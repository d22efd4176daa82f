// Restore: rebuild a snapshot (or a sub-path of it) into a fresh directory.
//
// Order of work: load and validate every tree; create directories top-down
// (owner-writable while we fill them); read the chunks pack by pack, each
// pack's needed ranges coalesced and read in offset order, decoded on the
// thread pool and hash-checked; write each chunk at its offset into the
// file; when a file's last chunk is written, set its mode and mtime. Files of
// one chunk (most of a workspace) are handed, a segment at a time, to writer
// threads that decode, check and write them the same way (file-writer.ts).
// Then symlinks, hardlinks, and finally directory modes and mtimes bottom-up.
//
// Where files are written until complete: a new or empty destination gets a
// stage (".cairn-<random>-<n>.stage" inside it) that takes the whole tree,
// each file under its own name; once the files, symlinks and hardlinks are
// in, the stage's entries are renamed into the destination (Dest.stage). A
// non-empty destination (overwrite) gets each file under a temporary name
// (".cairn-<random>-<n>.tmp" beside it), renamed into place when complete.
// A chunk of zeros is not written but left as a hole (the file is sized when
// it is finished), so sparse files stay sparse.
//
// Fan-out: one pass can fill several destinations (restoreSnapshotMany). A
// file is then one job per destination, and a chunk's targets are all of
// them, so each chunk is read, decoded and checked once and written into
// every destination's own file (large files too: see restoreFiles for why
// not from the materialization cache). Each destination keeps its own
// result, progress and failures: one refused or failing does not stop the
// others.
//
// Safety: names come from validated trees (no "", ".", "..", "/", NUL), the
// restore creates every directory it descends into (or, with overwrite,
// checks with lstat that an existing one is a real directory), and never
// follows a symlink it finds in the destination; so nothing is written
// outside the destination. A file whose chunk is missing or damaged never
// reaches its final name: its unfinished file is removed and the path is
// reported. A restore stopped part-way removes its unfinished files and
// moves its stage's finished ones into place.
// Once a write says the destination's file system is full (ENOSPC, EDQUOT),
// no further pack segment is read: the files not begun are reported as not
// restored instead of each failing the same way.
//
// mtimes are kept in nanoseconds but set through fs.utimes, which libuv
// truncates to microseconds; restores are exact to the microsecond.

import { randomBytes } from "node:crypto"
import fs, { promises as fsp } from "node:fs"
import path from "node:path"
import { mapLimit, Semaphore } from "../store/concurrency.js"
import { AlreadyExistsError, BadInputError, CairnError, IntegrityError, IoError, isCairnError, throwIfAborted } from "../store/errors.js"
import { makeDirs } from "../store/dirs.js"
import { SpareBuffers } from "../store/spare-buffers.js"
import type { BlobId } from "../store/ids.js"
import type { BlobLocation } from "../store/local-index.js"
import type { Store } from "../store/store.js"
import { fileWriterPool, isZeroChunk, type BlobOutcome, type FileWriterPool, type WholeFile, type WriteBlob, type WriteFile } from "./file-writer.js"
import { MaterializationCache, MIN_SIZE, placeEntry, type ExpectedContent } from "./matcache.js"
import { nowNs, saveStatCache, tooRecent, type StatCache } from "./statcache.js"
import type { FileEntry, TreeEntry } from "./tree.js"
import type { Progress, SnapshotRecord } from "./types.js"
import { placePart, type PlacedEntry, type SnapshotPart } from "./walk.js"

export interface RestoreOptions {
  /** restore only this path of the snapshot ("/" or omitted: everything) */
  subPath?: string
  /** allow a non-empty destination; entries in the way are replaced */
  overwrite?: boolean
  /** restore uid/gid; default: only when running as root */
  owners?: boolean
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
  /**
   * Seed the incremental cache of the restored workspace under this key (a
   * box id), so that its next snapshot reads only files changed since.
   */
  statCacheKey?: string
  /**
   * Use and fill this host's materialization cache (matcache.ts): large files
   * an earlier restore rebuilt are copied instead of decoded. Default true.
   */
  cache?: boolean
  /**
   * Hardlink large files from the cache instead of copying them: fastest, for
   * read-only use only. Linked files share one inode with the cache and with
   * every other box linked to it; cairn makes them read-only (mode & ~0222).
   */
  link?: boolean
  /**
   * Write single-chunk files in worker threads (file-writer.ts). Default
   * true; false keeps every write on the calling thread.
   */
  writers?: boolean
}

export interface RestoreFailure {
  path: string
  reason: string
  code: string
}

export interface RestoreResult {
  dest: string
  files: number
  dirs: number
  symlinks: number
  hardlinks: number
  bytes: number
  /** files copied (or linked) from the materialization cache */
  fromCache?: number
  /** how many other destinations this one was restored with, in one pass (a fan-out) */
  sharedWith?: number
  failed: RestoreFailure[]
}

/** Files from which a restore starts every writer thread before the first segment. */
const WARM_WRITERS = 256
const SEGMENT_GAP = 256 * 1024
const SEGMENT_MAX = 4 * 1024 * 1024
/** Segment buffers kept for reuse: one per writer in flight, and one being read, cover a restore. */
const SPARE_SEGMENTS = 4

/**
 * One destination of a restore pass. A pass can fill several destinations
 * with one snapshot (a fan-out): every chunk is read, decoded and checked
 * once and written into each of them; each keeps its own result, progress
 * and failures.
 */
interface Dest {
  root: string
  result: RestoreResult
  statCacheKey?: string
  onProgress?: (p: Progress) => void
  /** why this destination takes no further part (refused, or its directories could not be made) */
  error?: unknown
  filesTotal: number
  bytesTotal: number
  filesDone: number
  bytesDone: number
  /** the first failure that said this destination's file system is full: nothing more is written there */
  full?: string
  /**
   * A destination that was new or empty is filled through a stage: a
   * directory inside it (".cairn-<random>-<n>.stage") that takes the whole
   * tree, each file written under its own name, until the files, symlinks
   * and hardlinks are done; then its entries are renamed into the
   * destination (unstage). Nothing unfinished is ever seen under a final
   * name, without a temporary name and a rename per file (a temp file and a
   * rename cost ~3% of a restore and ~20% of a 4-box fan-out here).
   */
  stage?: string
}

/** A destination of restoreSnapshotMany, with what is its own. */
export interface RestoreTarget {
  dest: string
  statCacheKey?: string
  onProgress?: (p: Progress) => void
}

/** The options a fan-out's destinations share. */
export type SharedRestoreOptions = Omit<RestoreOptions, "statCacheKey" | "onProgress">

interface FileJob {
  dest: Dest
  rel: string
  entry: FileEntry
  /** its temporary name while it is being written; cleared once renamed into place or removed */
  temp?: string
  /** kept open for the chunks to come while an open-file slot is free (see openTemp) */
  handle?: fsp.FileHandle
  /** set once its temp file exists */
  created?: boolean
  opening?: Promise<fsp.FileHandle | undefined>
  /** gives back the open-file slot its handle holds */
  release?: () => void
  remaining: number
  failed?: RestoreFailure
  /** a chunk was all zeros and left as a hole: the file is sized when finished, and not cached (a copy would fill the holes) */
  sparse?: boolean
}

interface Target {
  job: FileJob
  offset: number
}

interface BlobRead {
  id: BlobId
  loc: BlobLocation
  targets: Target[]
}

export async function restoreSnapshot(store: Store, snapshot: SnapshotRecord, dest: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
  const { statCacheKey, onProgress, ...shared } = opts
  const [outcome] = await restoreSnapshotMany(store, snapshot, [{ dest, statCacheKey, onProgress }], shared)
  if (outcome!.status === "rejected") throw outcome!.reason
  return outcome!.value
}

/**
 * Restores one snapshot into several destinations in one pass: the trees
 * are loaded and every chunk read, decoded and checked once, then written
 * into each destination. Each destination settles on its own (a refused or
 * failed one does not stop the others), in the order given; a failure of
 * the pass itself (aborted, the repository unreadable) rejects them all.
 */
export async function restoreSnapshotMany(
  store: Store,
  snapshot: SnapshotRecord,
  targets: readonly RestoreTarget[],
  opts: SharedRestoreOptions = {},
): Promise<Array<PromiseSettledResult<RestoreResult>>> {
  const dests = targets.map((t) => newDest(t))
  for (const [i, d] of dests.entries()) {
    if (typeof targets[i]!.dest !== "string" || targets[i]!.dest === "") {
      d.error = new BadInputError(`a restore needs a destination directory, not ${JSON.stringify(targets[i]!.dest)}`)
      continue
    }
    // one destination inside another (or the same twice) would see the other's files as its own
    const other = dests.slice(0, i).find((o) => o.error === undefined && overlaps(o.root, d.root))
    if (other) d.error = new BadInputError(`cannot restore into ${d.root} and ${other.root} in one pass: one lies inside the other; choose separate directories`)
  }
  if (dests.every((d) => d.error !== undefined)) return dests.map((d) => ({ status: "rejected", reason: d.error }))
  try {
    await store.withLock(false, "restore", () => new Restorer(store, dests, opts).run(snapshot))
  } catch (err) {
    for (const d of dests) d.error ??= err
  }
  return dests.map((d) => (d.error !== undefined ? { status: "rejected", reason: d.error } : { status: "fulfilled", value: d.result }))
}

function newDest(t: RestoreTarget): Dest {
  const root = typeof t.dest === "string" && t.dest !== "" ? path.resolve(t.dest) : String(t.dest)
  return {
    root,
    result: { dest: root, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, fromCache: 0, failed: [] },
    ...(t.statCacheKey !== undefined ? { statCacheKey: t.statCacheKey } : {}),
    ...(t.onProgress ? { onProgress: t.onProgress } : {}),
    filesTotal: 0,
    bytesTotal: 0,
    filesDone: 0,
    bytesDone: 0,
  }
}

/** Whether a and b (resolved paths) are the same directory or one lies inside the other. */
function overlaps(a: string, b: string): boolean {
  const within = (x: string, y: string) => x === y || y.startsWith(x.endsWith("/") ? x : `${x}/`)
  return within(a, b) || within(b, a)
}

class Restorer {
  private readonly owners: boolean
  /** this process's uid and gid (undefined where there are none) */
  private readonly self: { uid: number | undefined; gid: number | undefined }
  private readonly decodeSlots = new Semaphore(4)
  /** when this restore began: files whose mtime is later than a tick before it are not seeded (tooRecent) */
  private readonly began = nowNs()
  private readonly openSlots = new Semaphore(64)

  constructor(
    private readonly store: Store,
    /** where the snapshot goes; a destination with an error takes no part */
    private readonly dests: readonly Dest[],
    private readonly opts: SharedRestoreOptions,
  ) {
    this.owners = opts.owners ?? process.getuid?.() === 0
    // asked once: each is a system call, and needsChown runs per file
    this.self = { uid: process.getuid?.(), gid: process.getgid?.() }
    this.cache = opts.cache === false && !opts.link ? undefined : new MaterializationCache(store.cacheDir)
    this.writers = opts.writers === false ? undefined : fileWriterPool()
    this.writerWindow = new Semaphore(this.writers?.size ?? 1)
  }

  private readonly cache: MaterializationCache | undefined
  /** writer threads for single-chunk files; off with opts.writers === false */
  private readonly writers: FileWriterPool | undefined
  /** segments in the writers */
  private readonly inWriters = new Set<Promise<void>>()
  /** one segment per writer thread at a time (see restorePack) */
  private readonly writerWindow: Semaphore
  /**
   * Segment buffers of SEGMENT_MAX bytes done with (back from the writers, or
   * used here), for later segments to be read into: a fresh buffer per
   * segment left the main thread's malloc heap fragmented by 4 MiB holes.
   */
  private readonly spareSegments = new SpareBuffers<ArrayBufferLike>(SPARE_SEGMENTS, (b) => b instanceof ArrayBuffer && b.byteLength === SEGMENT_MAX)

  /** A buffer to read a segment of `length` bytes into: a spare one, or a new one that can serve any later segment; none for a small one. */
  private segmentBuffer(length: number): Uint8Array | undefined {
    if (length < SEGMENT_MAX / 4) return undefined
    return new Uint8Array(this.spareSegments.take() ?? new ArrayBuffer(SEGMENT_MAX))
  }

  /** What a cached copy of this file must hold (undefined if a chunk is missing from the index): checked chunk by chunk before the copy is used. */
  private expected(e: FileEntry): ExpectedContent | undefined {
    const chunks = e.chunks ?? []
    const lengths: number[] = []
    for (const id of chunks) {
      const loc = this.locs.get(id)
      if (!loc) return undefined
      lengths.push(loc.rawLength)
    }
    return { size: e.size, chunks, lengths }
  }

  private cacheKey(e: FileEntry): string {
    const key = this.cache!.key(e.chunks ?? [])
    // linked files share their inode's metadata, so the entry must carry it
    return this.opts.link ? `${key}-${(e.mode & ~0o222).toString(8)}-${e.mtime}` : key
  }

  /**
   * Places the files the cache holds; returns the jobs still to be rebuilt
   * from packs. With writer threads, each file is copied, checked and
   * renamed in a writer (one at a time, so that the other writers keep on
   * with pack segments meanwhile); without, here. Equal files (one cache
   * entry) are copied from the cache and checked once, the others copied
   * from that checked copy before it is renamed into place.
   */
  private async fromCache(jobs: Array<[FileJob, ExpectedContent]>): Promise<FileJob[]> {
    const missed: FileJob[] = []
    const link = Boolean(this.opts.link)
    const groups = new Map<string, Array<[FileJob, ExpectedContent]>>()
    for (const pair of jobs) {
      // linked files are one inode already: each is placed (and checked) on its own
      const key = link ? `${groups.size}` : this.cacheKey(pair[0].entry)
      const group = groups.get(key)
      if (group) group.push(pair)
      else groups.set(key, [pair])
    }
    await mapLimit([...groups.values()], 1, async (group) => {
      throwIfAborted(this.opts.signal)
      const [first, expect] = group[0]!
      const src = this.cache!.file(this.cacheKey(first.entry))
      const files = group.map(([job]) => this.wholeFile(job, this.abs(job.dest, job.rel)))
      let placed: boolean[]
      try {
        if (this.opts.overwrite) for (const [job] of group) await this.clearWay(job.dest, job.rel, false)
        if (this.writers) {
          const [{ mode, mtime, owner, ...head }, ...copies] = files as [WholeFile, ...WholeFile[]]
          placed = await this.writers.place({ src, ...head, link, expect, ...(link ? {} : { meta: { mode, mtime, ...(owner ? { owner } : {}) }, copies }) })
        } else {
          placed = this.placeInline(src, link, expect, group.map(([job]) => job), files)
        }
      } catch {
        for (const f of files) await fsp.rm(writtenAt(f), { force: true })
        placed = files.map(() => false)
      }
      for (const [i, [job]] of group.entries()) {
        if (!placed[i]) {
          missed.push(job)
          continue
        }
        job.remaining = 0
        job.dest.bytesDone += job.entry.size
        job.dest.result.fromCache!++
        this.fileDone(job, false)
      }
    })
    return missed
  }

  /** fromCache without writer threads: the entry copied and checked into the first file's temp (or in the stage), the others copied from it. */
  private placeInline(src: string, link: boolean, expect: ExpectedContent, jobs: FileJob[], files: WholeFile[]): boolean[] {
    const [head, ...copies] = files as [WholeFile, ...WholeFile[]]
    if (!placeEntry(src, writtenAt(head), link, expect)) return files.map(() => false)
    const finish = (f: WholeFile, job: FileJob, from?: string): boolean => {
      const at = writtenAt(f)
      try {
        if (from !== undefined) fs.copyFileSync(from, at, fs.constants.COPYFILE_EXCL)
        if (!link) this.setMeta(at, job.entry, false)
        if (f.temp !== undefined) fs.renameSync(f.temp, f.final)
        return true
      } catch {
        fs.rmSync(at, { force: true })
        return false
      }
    }
    const copied = copies.map((f, i) => finish(f, jobs[i + 1]!, writtenAt(head)))
    return [finish(head, jobs[0]!), ...copied]
  }

  /**
   * Adds a large file just rebuilt from packs to the cache, in the
   * background (one copy at a time), so that the copying overlaps with the
   * rest of the restore; finishCache() waits for them all.
   */
  private cacheLater(job: FileJob): void {
    if (!this.cache || job.entry.size < MIN_SIZE || !job.entry.chunks || job.sparse) return
    // best effort: a file the cache cannot take is still restored (in link mode, as a private copy)
    this.caching.push(this.cacheSlot.run(() => this.addToCache(job)).catch(() => {}))
  }

  private async addToCache(job: FileJob): Promise<void> {
    const final = this.abs(job.dest, job.rel)
    const key = this.cacheKey(job.entry)
    await this.cache!.add(key, final, Boolean(this.opts.link))
    const expect = this.opts.link ? this.expected(job.entry) : undefined
    if (!expect) return
    // link mode: the cache entry becomes the file, replacing the private copy with a link
    const temp = tempName(final)
    if (this.cache!.place(key, temp, true, expect)) {
      await fsp.chmod(temp, job.entry.mode & ~0o222)
      const t = utimesSeconds(BigInt(job.entry.mtime))
      await fsp.utimes(temp, t, t)
      fs.renameSync(temp, final)
    }
  }

  /** Waits for the files being added to the cache, then trims it. */
  private async finishCache(): Promise<void> {
    if (this.caching.length === 0) return
    await Promise.all(this.caching)
    await this.cache!.trim()
  }

  private readonly caching: Promise<void>[] = []
  private readonly cacheSlot = new Semaphore(1)
  /** where every chunk of the files to restore is (located once, before any is placed or rebuilt) */
  private locs: ReadonlyMap<BlobId, BlobLocation> = new Map()

  /** The destinations still taking part. */
  private live(): Dest[] {
    return this.dests.filter((d) => d.error === undefined)
  }

  /** Restores into every destination; each one's outcome is left in it (its result, or its error). */
  async run(snapshot: SnapshotRecord): Promise<void> {
    // a part of the snapshot gets the content of hardlinks whose first member lies outside it
    const { top, base, placed } = await placePart(this.store, snapshot.tree, this.opts.subPath ?? "/")
    await this.eachLive((d) => this.checkPathLengths(d, placed))
    if (this.live().length === 0) return
    const files = placed.filter((p): p is PlacedEntry & { entry: FileEntry } => p.entry.type === "file" && p.entry.link === undefined)
    // a large restore's writer threads start up while the directories are made (a small one may never need both)
    if (files.length >= WARM_WRITERS) this.writers?.warm()
    // the chunks are located (on LevelDB's thread) while the directories are made
    const locating = this.locate(files)
    locating.catch(() => {}) // awaited below; not unhandled if every destination is refused first
    const made = new Map<Dest, boolean>()
    try {
      await this.eachLive(async (d) => void made.set(d, await this.prepareDest(d)))
      await this.fill(snapshot, { top, base, placed }, files, locating, made)
    } finally {
      // a destination refused, stopped or failed part-way keeps what was finished, as an unstaged one would
      for (const d of this.dests) {
        try {
          this.unstage(d)
        } catch (err) {
          d.error ??= err
        }
      }
    }
  }

  /** Makes the directories, restores the files, then finishes each destination. */
  private async fill(
    snapshot: SnapshotRecord,
    { top, base, placed }: SnapshotPart,
    files: Array<PlacedEntry & { entry: FileEntry }>,
    locating: Promise<Map<BlobId, BlobLocation>>,
    made: Map<Dest, boolean>,
  ): Promise<void> {
    throwIfAborted(this.opts.signal)
    const dirs = placed.filter((p) => p.entry.type === "dir")
    const bytesTotal = files.reduce((n, f) => n + f.entry.size, 0)
    await this.eachLive(async (d) => {
      d.filesTotal = files.length
      d.bytesTotal = bytesTotal
      if (d.stage === undefined) for (const dir of dirs) await this.makeDir(d, dir.rel)
    })
    // the staged directories are made while the chunks are located, and settle even if that fails: nothing may
    // still write in a stage once it is moved out of
    const making = this.makeStagedDirs(dirs)
    try {
      this.locs = await locating
    } finally {
      await making
    }
    if (this.live().length === 0) return
    const fanout = this.live()
    await this.restoreFiles(
      fanout.flatMap((d) => files.map((f) => ({ dest: d, rel: f.rel, entry: f.entry, remaining: f.entry.chunks?.length ?? 0 }))),
      fanout.length,
    )
    for (const d of fanout) {
      d.result.dirs = dirs.length
      if (fanout.length > 1) d.result.sharedWith = fanout.length - 1
      await this.finishDest(d, snapshot, top, base, placed, dirs, files, made.get(d) ?? false)
    }
  }

  /** Symlinks, hardlinks, directory metadata and the stat cache of one destination whose files are in place. */
  private async finishDest(
    d: Dest,
    snapshot: SnapshotRecord,
    top: TreeEntry,
    base: string,
    placed: PlacedEntry[],
    dirs: PlacedEntry[],
    files: PlacedEntry[],
    madeDest: boolean,
  ): Promise<void> {
    try {
      for (const p of placed) {
        if (p.entry.type === "symlink") await this.guard(d, p.rel, () => this.makeSymlink(d, p.rel, p.entry as TreeEntry & { type: "symlink" }))
      }
      const failed = new Set(d.result.failed.map((x) => x.path))
      const restored = new Set(files.filter((f) => !failed.has(f.rel)).map((f) => f.rel))
      const linkBase = top.type === "dir" ? base : undefined
      for (const p of placed) {
        const e = p.entry
        if (e.type === "file" && e.link !== undefined) await this.guard(d, p.rel, () => this.makeHardlink(d, p.rel, e, linkBase, restored))
      }
      // everything is in the stage and complete (what failed is gone from it): into place
      this.unstage(d)
      // directory metadata last, deepest first, so that read-only dirs do not block their children
      for (const dir of [...dirs].reverse()) await this.guard(d, dir.rel, async () => this.setMeta(this.abs(d, dir.rel), dir.entry, false))
      const whole = (this.opts.subPath ?? "/").replace(/\/+/g, "") === ""
      if (top.type === "dir" && !whole) {
        await this.guard(d, ".", async () => this.setMeta(d.root, top, false))
      } else if (top.type === "dir") {
        // the snapshotted directory's own metadata is in the record; older snapshots lack it: 0755, the mtime left as it is
        const root = snapshot.root
        await this.guard(d, ".", async () => (root ? this.setMeta(d.root, { ...top, ...root }, false) : fs.chmodSync(d.root, 0o755)))
      } else if (madeDest) {
        // a single entry's new directory: no longer owner-only, as mkdir would make it
        await this.guard(d, ".", async () => fs.chmodSync(d.root, 0o755))
      }
      if (d.statCacheKey !== undefined && d.result.failed.length === 0) await this.seedStatCache(d, placed, top, whole ? snapshot.exclude : undefined)
      if (d.result.failed.length > 0) d.error = restoreFailed(d.root, d.result)
    } catch (err) {
      if (isCairnError(err, "ABORTED")) throw err
      d.error = err
    }
  }

  /** Runs a step for each destination still taking part, in turn; what it throws becomes that destination's error (an abort stops them all). */
  private async eachLive(step: (d: Dest) => void | Promise<void>): Promise<void> {
    for (const d of this.live()) {
      try {
        await step(d)
      } catch (err) {
        if (isCairnError(err, "ABORTED")) throw err
        d.error = err
      }
    }
  }

  /**
   * Records what was restored so that the next snapshot of this workspace
   * reads nothing unchanged. A directory's tree is recorded too (so that the
   * next snapshot reuses it whole) when the restore reproduced it exactly:
   * every entry below it has the mode and owner its tree names, which a
   * restore without ownership or without the right to set some mode bits
   * does not give. The snapshot's exclude patterns go with the trees: a next
   * snapshot with other patterns builds its trees anew.
   */
  private async seedStatCache(d: Dest, placed: PlacedEntry[], top: TreeEntry, patterns: string[] | undefined): Promise<void> {
    const cache: StatCache = { entries: new Map(), ...(patterns ? { patterns } : {}) }
    const parentOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf("/")))
    /** dirs (by rel) with an entry below them not as its tree says; "" is the destination */
    const inexact = new Set<string>()
    const children = new Map<string, number>()
    // inline: an lstat from the inode cache is microseconds, a thread-pool round trip tens of them
    const stats = new Map(placed.map((p) => [p.rel, fs.lstatSync(this.abs(d, p.rel), { bigint: true })]))
    for (const p of placed) {
      const e = p.entry
      const st = stats.get(p.rel)!
      const parent = parentOf(p.rel)
      children.set(parent, (children.get(parent) ?? 0) + 1)
      if (Number(st.mode & 0o7777n) !== e.mode || Number(st.uid) !== e.uid || Number(st.gid) !== e.gid) inexact.add(parent)
      const kind = e.type === "file" ? (e.link !== undefined ? "link" : "file") : e.type
      // its ctime is this restore's own: only a change that keeps the mtime within its tick could go unseen
      if (kind === "file" && tooRecent({ mtimeNs: st.mtimeNs }, this.began)) continue
      const chunks = e.type === "file" && e.link === undefined ? (e.chunks ?? []).map((id) => ({ id, length: -1 })) : []
      cache.entries.set(p.rel, { kind, size: e.type === "file" ? Number(st.size) : 0, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, chunks, treeMtime: e.mtime })
    }
    // an inexact directory makes every directory above it inexact
    for (const rel of [...inexact]) for (let r = rel; r !== ""; ) inexact.add((r = parentOf(r)))
    const withTree = (rel: string, e: TreeEntry, size: number, st: fs.BigIntStats) => {
      if (e.type !== "dir" || inexact.has(rel)) return
      const entry = cache.entries.get(rel) ?? { kind: "dir" as const, size: 0, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, chunks: [] }
      const tree = { id: e.tree, length: -1, size, entries: children.get(rel) ?? 0 }
      // a literal, not { ...entry, tree }: such a spread gives every object it makes a hidden class of its own
      cache.entries.set(rel, { kind: entry.kind, size: entry.size, mtimeNs: entry.mtimeNs, ctimeNs: entry.ctimeNs, ino: entry.ino, chunks: entry.chunks, treeMtime: entry.treeMtime, tree })
    }
    for (const p of placed) if (p.entry.type === "dir") withTree(p.rel, p.entry, p.entry.size, stats.get(p.rel)!)
    if (top.type === "dir") {
      // the top entry of a whole-snapshot restore is synthetic (no size): sum its children as buildTree does
      const size = placed.reduce((n, p) => (parentOf(p.rel) !== "" ? n : p.entry.type === "dir" || (p.entry.type === "file" && p.entry.link === undefined) ? n + p.entry.size : n), 0)
      withTree("", top, size, await fsp.lstat(d.root, { bigint: true }))
    }
    await saveStatCache(this.store.cacheDir, d.statCacheKey!, cache)
  }

  /**
   * Refuses, before anything is written, a snapshot whose paths would be
   * longer under this destination than the kernel takes (a tree deeper than
   * PATH_MAX, which a tar import can hold): a restore that made the rest
   * would stop at the first such path with a partial tree.
   */
  private checkPathLengths(d: Dest, placed: PlacedEntry[]): void {
    const destBytes = Buffer.byteLength(d.root)
    let longest: PlacedEntry | undefined
    let most = 0
    for (const p of placed) {
      // inside the stage, when the destination gets one (it is not known yet: nothing is made before this check)
      let bytes = destBytes + 1 + STAGE_NAME_BYTES + 1 + Buffer.byteLength(p.rel)
      if (p.entry.type === "file") {
        // a file is written under a temporary name beside it first
        const slash = p.rel.lastIndexOf("/")
        bytes = Math.max(bytes, destBytes + (slash < 0 ? 0 : 1 + Buffer.byteLength(p.rel.slice(0, slash))) + 1 + TEMP_NAME_BYTES)
      }
      if (bytes > most) [most, longest] = [bytes, p]
    }
    if (longest && most > PATH_MAX_BYTES) {
      const shown = longest.rel.length > 120 ? `${longest.rel.slice(0, 60)}...${longest.rel.slice(-60)}` : longest.rel
      throw new BadInputError(
        `cannot restore into ${d.root}: the snapshot holds paths longer than this system allows there (${most} bytes, at most ${PATH_MAX_BYTES}), such as ${shown}; restore a part of the snapshot (a sub-path), or export it as a tar`,
        { path: longest.rel },
      )
    }
  }

  /**
   * rel's path in the destination (in its stage while it has one); rels are
   * names from validated trees joined by "/", so no join needs normalizing them.
   */
  private abs(d: Dest, rel: string): string {
    const base = d.stage ?? d.root
    return rel === "" || rel === "." ? base : base.endsWith("/") ? base + rel : `${base}/${rel}`
  }

  /** Where a file is written until it is complete: under its own name in a stage, else a temporary name beside it. */
  private writeAt(d: Dest, final: string): string {
    return d.stage !== undefined ? final : tempName(final)
  }

  /** A whole file as the writers take it: written at writeAt's place, with the entry's metadata. */
  private wholeFile(job: FileJob, final: string): WholeFile {
    const at = this.writeAt(job.dest, final)
    const e = job.entry
    return { ...(at !== final ? { temp: at } : {}), final, mode: e.mode, mtime: utimesSeconds(BigInt(e.mtime)), ...(this.needsChown(e) ? { owner: { uid: e.uid, gid: e.gid } } : {}) }
  }

  /**
   * Moves a staged destination's entries into it and removes the stage; from
   * then on its paths are the destination's own. Directories are still
   * owner-writable here (moving a directory rewrites its ".."), so this comes
   * before their metadata.
   */
  private unstage(d: Dest): void {
    const stage = d.stage
    if (stage === undefined) return
    for (const name of fs.readdirSync(stage)) fs.renameSync(`${stage}/${name}`, `${d.root}/${name}`)
    fs.rmdirSync(stage)
    d.stage = undefined
  }

  /**
   * Makes the destination (owner-only while it is filled; true) or checks the
   * one there (false). A new or empty one gets a stage (see Dest.stage); a
   * non-empty one (overwrite) is written file by file through temp names.
   */
  private async prepareDest(d: Dest): Promise<boolean> {
    const st = await fsp.lstat(d.root).catch(() => undefined)
    let made = false
    if (!st) {
      await makeDirs(d.root, { what: "destination", fix: "choose a destination you can write to" })
      made = true
    } else {
      if (!st.isDirectory()) throw new BadInputError(`cannot restore into ${d.root}: it exists and is not a directory`)
      if ((await fsp.readdir(d.root)).length > 0) {
        if (this.opts.overwrite) return false
        throw new AlreadyExistsError(`cannot restore into ${d.root}: it is not empty; choose an empty or new directory, or allow replacing its entries (overwrite: true; cairn restore --overwrite)`)
      }
    }
    const stage = `${d.root.endsWith("/") ? d.root : `${d.root}/`}${TEMP_PREFIX}${(tempCount++).toString(36)}.stage`
    fs.mkdirSync(stage, { mode: 0o700 })
    d.stage = stage
    return made
  }

  /** With overwrite, removes whatever is at rel unless it is a real directory and a directory is wanted. */
  private async clearWay(d: Dest, rel: string, wantDir: boolean): Promise<boolean> {
    if (!this.opts.overwrite) return false
    const st = await fsp.lstat(this.abs(d, rel)).catch(() => undefined)
    if (!st) return false
    if (wantDir && st.isDirectory()) return true
    if (!wantDir && st.isFile()) return false // rename/link replace files atomically
    await fsp.rm(this.abs(d, rel), { recursive: true, force: true })
    return false
  }

  private async makeDir(d: Dest, rel: string): Promise<void> {
    if (await this.clearWay(d, rel, true)) {
      await fsp.chmod(this.abs(d, rel), 0o700)
      return
    }
    fs.mkdirSync(this.abs(d, rel), { mode: 0o700 })
  }

  /**
   * Makes the directories of the staged destinations on the thread pool,
   * depth by depth, four at a time, while the chunks are located: a mkdir
   * costs ~60 us of file-system work here, ~0.1 s for a workspace's 1,600
   * directories, which on this thread held up all that comes after. A
   * destination whose directory cannot be made takes no further part.
   */
  private async makeStagedDirs(dirs: PlacedEntry[]): Promise<void> {
    const depths: string[][] = []
    for (const dir of dirs) (depths[dir.rel.split("/").length - 1] ??= []).push(dir.rel)
    for (const level of depths) {
      const staged = this.live().filter((d) => d.stage !== undefined)
      await mapLimit(
        staged.flatMap((d) => (level ?? []).map((rel) => [d, rel] as const)),
        4,
        async ([d, rel]) => {
          if (d.error === undefined) await fsp.mkdir(this.abs(d, rel), { mode: 0o700 }).catch((err: unknown) => void (d.error ??= err))
        },
      )
    }
  }

  /** Where every chunk of these files is (a chunk missing from the index is absent). */
  private async locate(files: ReadonlyArray<{ entry: FileEntry }>): Promise<Map<BlobId, BlobLocation>> {
    const ids = [...new Set(files.flatMap((f) => f.entry.chunks ?? []))]
    const locs = new Map<BlobId, BlobLocation>()
    for (let i = 0; i < ids.length; i += 10_000) {
      const batch = ids.slice(i, i + 10_000)
      const found = await this.store.locateForRead(batch)
      batch.forEach((id, k) => {
        const l = found[k]
        if (l && l !== "pending") locs.set(id, l)
      })
    }
    return locs
  }

  /** Restores the files, their chunks located first (the cache's copies are checked against the chunks' lengths). */
  private async restoreFiles(all: FileJob[], destinations: number): Promise<void> {
    // large files the cache holds are placed from it while the rest is rebuilt from packs
    // (the others are rebuilt with it: their chunks lie between the small files' in the packs,
    // and leaving them for later would cut each pack into many small reads). Not in a fan-out
    // that copies: there a large file's chunks are decoded once and written into every
    // destination by both writers, where its N copies out of the cache would queue in one
    // writer (4 boxes of the workspace: 4.5-5.2 s from packs, 6.8-10.8 s from the cache, 4 alternating pairs).
    const fromCache = this.cache && (destinations === 1 || this.opts.link)
    const cached: Array<[FileJob, ExpectedContent]> = []
    const direct: FileJob[] = []
    for (const job of all) {
      const expect = fromCache && job.entry.size >= MIN_SIZE && job.entry.chunks ? this.expected(job.entry) : undefined
      if (expect && fs.existsSync(this.cache!.file(this.cacheKey(job.entry)))) cached.push([job, expect])
      else direct.push(job)
    }
    const placing = this.fromCache(cached)
    placing.catch(() => {}) // awaited below, also when the rebuild fails first
    let stopped = true
    try {
      await this.fromPacks(direct)
      const missed = await placing
      await this.fromPacks(missed)
      const rebuilt = [...direct, ...missed]
      // files whose writes failed part-way
      for (const job of rebuilt) if (job.remaining > 0 && !job.failed) await this.fail(job, "not all chunks were written", "IO")
      stopped = false
    } finally {
      // nothing this restore started may still write once it returns or throws
      await Promise.allSettled([placing, ...this.caching])
      // stopped part-way (aborted, or a pack could not be read): no temp file stays behind
      if (stopped) await this.removeTemps(all)
    }
    await this.finishCache()
  }

  /** Rebuilds files from their chunks: per pack, in offset order. */
  private async fromPacks(jobs: FileJob[]): Promise<void> {
    if (jobs.length === 0) return
    const byPack = new Map<string, Map<BlobId, BlobRead>>()
    for (const job of jobs) {
      let offset = 0
      for (const id of job.entry.chunks ?? []) {
        const loc = this.locs.get(id)
        if (!loc) {
          job.failed ??= { path: job.rel, reason: `chunk ${id} is missing from the repository`, code: "INTEGRITY" }
          continue
        }
        let pack = byPack.get(loc.pack)
        if (!pack) byPack.set(loc.pack, (pack = new Map()))
        let read = pack.get(id)
        if (!read) pack.set(id, (read = { id, loc, targets: [] }))
        read.targets.push({ job, offset })
        offset += loc.rawLength
      }
      if (!job.failed && offset !== job.entry.size) {
        job.failed = { path: job.rel, reason: `its chunks add up to ${offset} bytes, not ${job.entry.size}`, code: "INTEGRITY" }
      }
    }
    for (const job of jobs) {
      if (job.failed) job.dest.result.failed.push(job.failed)
      else if (job.remaining === 0) await this.writeWhole(job, new Uint8Array(0))
    }
    const packs = [...byPack.entries()].sort(([a], [b]) => (a < b ? -1 : 1))
    // a local disk reads best as two sequential streams; S3 wants many requests in flight
    const parallel = Math.max(1, this.store.backend.readParallelism ?? 2)
    // a pack is done once its last segment is handed over: the next one is read while the writers finish it
    try {
      await mapLimit(packs, parallel, ([pack, reads]) => this.restorePack(pack, [...reads.values()]))
    } finally {
      await Promise.allSettled(this.inWriters) // also when a pack failed or the restore was aborted: nothing may write after it returns
    }
  }

  private async restorePack(pack: string, reads: BlobRead[]): Promise<void> {
    throwIfAborted(this.opts.signal)
    reads.sort((a, b) => a.loc.offset - b.loc.offset)
    let i = 0
    while (i < reads.length) {
      // one segment: neighbouring blobs read with one ranged get
      let j = i + 1
      const start = reads[i]!.loc.offset
      let end = start + reads[i]!.loc.length
      while (j < reads.length && reads[j]!.loc.offset - end <= SEGMENT_GAP && reads[j]!.loc.offset + reads[j]!.loc.length - start <= SEGMENT_MAX) {
        end = Math.max(end, reads[j]!.loc.offset + reads[j]!.loc.length)
        j++
      }
      const group = reads.slice(i, j)
      i = j
      throwIfAborted(this.opts.signal) // segment by segment: a pack can hold a whole small restore
      // a destination whose file system is full gets nothing more (each file would fail the same way, one by one),
      // and a segment no file still wants is not read
      for (const r of group) for (const t of r.targets) if (t.job.dest.full !== undefined) await this.failFull(t.job)
      if (group.every((r) => r.targets.every((t) => t.job.failed))) continue
      let segment: Uint8Array
      try {
        segment = await this.store.readPackRange(pack, start, end - start, undefined, this.segmentBuffer(end - start))
      } catch (err) {
        for (const r of group) for (const t of r.targets) await this.fail(t.job, describe(err), codeOf(err))
        continue
      }
      if (this.writers) {
        // chunks of larger files go to the writers too, into temp files created here
        const parts = group.flatMap((r) => r.targets.filter((t) => t.job.entry.chunks!.length > 1 && !t.job.failed && !t.job.created))
        await Promise.all(parts.map((t) => this.openTemp(t.job).catch((err: unknown) => this.fail(t.job, describe(err), codeOf(err)))))
      }
      const toWriters = this.writers ? group.filter((r) => r.targets.every((t) => this.offloadable(t.job))) : []
      const inline = toWriters.length === group.length ? [] : group.filter((r) => !toWriters.includes(r))
      if (toWriters.length > 0) {
        // the segment waits here, read, until a writer is free: queued behind a long job, it would leave another writer
        // idle. One the writers take whole is handed over, not copied.
        const release = await this.writerWindow.acquire()
        // (the segment's buffer, handed over or copied, comes back from the writer for a later segment)
        const written = this.writeInWorkers(pack, segment, start, toWriters, inline.length === 0).finally(release)
        this.inWriters.add(written)
        const forget = () => void this.inWriters.delete(written)
        written.then(forget, forget) // (a finally() would be a second promise, unhandled if written failed)
      }
      await Promise.all(
        inline.map(async (r) => {
          const stored = segment.subarray(r.loc.offset - start, r.loc.offset - start + r.loc.length)
          let raw: Uint8Array
          try {
            raw = await this.decodeSlots.run(() => this.store.decodeChecked(r.id, r.loc.codec, stored, r.loc.rawLength, pack))
          } catch (err) {
            for (const t of r.targets) await this.fail(t.job, describe(err), codeOf(err))
            return
          }
          await Promise.all(
            r.targets.map((t) => (t.job.entry.chunks!.length === 1 ? this.writeWhole(t.job, raw) : this.writeChunk(t, raw))),
          )
        }),
      )
      // done with here (a segment handed over to a writer is empty here, and comes back from it)
      this.spareSegments.give(segment.buffer)
    }
  }

  /**
   * A file the writers can take: one chunk with nothing in the way (they
   * finish it alone), or a chunk of a larger file whose temp file exists
   * (this thread finishes it); nothing failed yet.
   */
  private offloadable(job: FileJob): boolean {
    if (job.failed) return false
    return job.entry.chunks!.length === 1 ? !this.opts.overwrite : job.created === true
  }

  /** Hands single-chunk files to the writer threads (file-writer.ts); settles their jobs from the outcomes. */
  private async writeInWorkers(pack: string, segment: Uint8Array, start: number, reads: BlobRead[], handOver: boolean): Promise<void> {
    const blobs: WriteBlob[] = reads.map((r) => ({
      id: r.id,
      codec: r.loc.codec,
      offset: r.loc.offset - start,
      length: r.loc.length,
      rawLength: r.loc.rawLength,
      files: r.targets.map((t): WriteFile => {
        if (t.job.entry.chunks!.length > 1) return { part: t.job.temp!, offset: t.offset }
        const file = this.wholeFile(t.job, this.abs(t.job.dest, t.job.rel))
        t.job.temp = writtenAt(file)
        return file
      }),
    }))
    let outcomes: (BlobOutcome | undefined)[]
    try {
      const reply = await this.writers!.write(segment, blobs, handOver)
      outcomes = reply.outcomes
      this.spareSegments.give(reply.buffer)
    } catch (err) {
      for (const r of reads) for (const t of r.targets) await this.fail(t.job, describe(err), "IO")
      return
    }
    for (const [i, r] of reads.entries()) {
      const o = outcomes[i]
      for (const [k, t] of r.targets.entries()) {
        if (o?.zero) t.job.sparse = true
        const failed = o?.integrity !== undefined ? undefined : o?.failed?.[k]
        if (o?.integrity !== undefined) await this.fail(t.job, `blob ${r.id} in pack ${pack} ${o.integrity}`, "INTEGRITY")
        else if (failed) await this.fail(t.job, failed[1], "IO")
        else if (t.job.entry.chunks!.length > 1) {
          t.job.dest.bytesDone += r.loc.rawLength
          if (--t.job.remaining === 0) await this.finishFile(t.job).catch((err: unknown) => this.fail(t.job, describe(err), codeOf(err)))
        } else {
          t.job.remaining = 0
          t.job.dest.bytesDone += t.job.entry.size
          this.fileDone(t.job)
        }
      }
    }
  }

  /**
   * Writes a file that is one chunk (most files of a workspace) with
   * synchronous calls: create, write, chmod, set times, close, rename take a
   * few microseconds each inline but ~30 us as thread-pool round trips, and
   * they are all a small file costs. Large files take the async path.
   */
  private async writeWhole(job: FileJob, raw: Uint8Array): Promise<void> {
    if (job.failed) return
    try {
      if (this.opts.overwrite) await this.clearWay(job.dest, job.rel, false)
      const final = this.abs(job.dest, job.rel)
      job.temp = this.writeAt(job.dest, final)
      const fd = fs.openSync(job.temp, "wx", 0o600)
      try {
        if (isZeroChunk(raw)) {
          fs.ftruncateSync(fd, raw.length)
          job.sparse = true
        } else {
          for (let done = 0; done < raw.length; ) done += fs.writeSync(fd, raw, done, raw.length - done)
        }
        if (this.needsChown(job.entry)) fs.fchownSync(fd, job.entry.uid, job.entry.gid)
        fs.fchmodSync(fd, job.entry.mode)
        const t = utimesSeconds(BigInt(job.entry.mtime))
        fs.futimesSync(fd, t, t)
      } finally {
        fs.closeSync(fd)
      }
      if (job.temp !== final) fs.renameSync(job.temp, final)
      job.remaining = 0
      job.dest.bytesDone += raw.length
      this.fileDone(job)
    } catch (err) {
      await this.fail(job, describe(err), codeOf(err))
    }
  }

  private async writeChunk(t: Target, raw: Uint8Array): Promise<void> {
    const job = t.job
    if (job.failed) return
    try {
      const kept = await this.openTemp(job)
      if (isZeroChunk(raw)) job.sparse = true // a hole; finishFile sizes the file
      else {
        // a temp file not kept open (no slot was free when it was made) is opened for this chunk
        const handle = kept ?? (await fsp.open(job.temp!, "r+"))
        try {
          for (let done = 0; done < raw.length; ) done += (await handle.write(raw, done, raw.length - done, t.offset + done)).bytesWritten
        } finally {
          if (!kept) await handle.close()
        }
      }
      job.dest.bytesDone += raw.length
      if (--job.remaining === 0) await this.finishFile(job)
    } catch (err) {
      await this.fail(job, describe(err), codeOf(err))
    }
  }

  /**
   * Creates a file's temp file, kept open for its chunks to come while one
   * of the open-file slots is free; without one it is closed at once and
   * each chunk opens it. It never waits for a slot: the files holding them
   * may be waiting for chunks that lie behind this one in the packs (many
   * equal large files, or the destinations of a fan-out, open together).
   */
  private openTemp(job: FileJob): Promise<fsp.FileHandle | undefined> {
    if (job.created) return Promise.resolve(job.handle)
    job.opening ??= (async () => {
      const release = this.openSlots.tryAcquire()
      try {
        await this.clearWay(job.dest, job.rel, false)
        job.temp = this.writeAt(job.dest, this.abs(job.dest, job.rel))
        const handle = await fsp.open(job.temp, "wx", 0o600)
        if (release) {
          job.handle = handle
          job.release = release
        } else {
          await handle.close()
        }
        job.created = true
        return job.handle
      } catch (err) {
        release?.()
        throw err
      }
    })()
    return job.opening
  }

  /**
   * Removes the temp files of a restore stopped part-way, once every write
   * has settled: only files neither finished nor failed still have one.
   */
  private async removeTemps(jobs: FileJob[]): Promise<void> {
    await mapLimit(jobs.filter((job) => job.temp !== undefined), 16, async (job) => {
      await job.opening?.catch(() => {})
      await this.closeTemp(job)
      if (job.temp) await fsp.rm(job.temp, { force: true }).catch(() => {})
    })
  }

  private async closeTemp(job: FileJob): Promise<void> {
    const handle = job.handle
    job.handle = undefined
    if (handle) await handle.close().catch(() => {})
    const release = job.release
    job.release = undefined
    release?.()
  }

  private async finishFile(job: FileJob): Promise<void> {
    if (job.entry.size === 0 && !job.created) await this.openTemp(job)
    await this.closeTemp(job)
    // chunks left as holes may end the file: its size comes from the entry
    if (job.sparse) await fsp.truncate(job.temp!, job.entry.size)
    this.setMeta(job.temp!, job.entry, false)
    const final = this.abs(job.dest, job.rel)
    if (job.temp !== final) await fsp.rename(job.temp!, final)
    this.fileDone(job)
  }

  /** Counts a finished file; one rebuilt from packs goes to the cache too. */
  private fileDone(job: FileJob, rebuilt = true): void {
    job.temp = undefined // renamed into place
    if (rebuilt) this.cacheLater(job)
    const d = job.dest
    d.result.files++
    d.result.bytes += job.entry.size
    d.filesDone++
    d.onProgress?.({ phase: "restore", filesDone: d.filesDone, filesTotal: d.filesTotal, bytesDone: d.bytesDone, bytesTotal: d.bytesTotal })
  }

  private async fail(job: FileJob, reason: string, code: string): Promise<void> {
    if (job.failed) return
    job.failed = { path: job.rel, reason, code }
    job.dest.result.failed.push(job.failed)
    if (job.dest.full === undefined && DISK_FULL.test(reason)) job.dest.full = reason
    // another chunk of this file may be creating its temp file right now: removed only once it exists
    await job.opening?.catch(() => {})
    await this.closeTemp(job)
    if (job.temp) await fsp.rm(job.temp, { force: true })
    job.temp = undefined
  }

  /** Reports a file not begun because its destination's file system is full. */
  private failFull(job: FileJob): Promise<void> {
    return this.fail(job, `not restored: the destination's file system is full (${job.dest.full})`, "IO")
  }

  private async makeSymlink(d: Dest, rel: string, entry: TreeEntry & { type: "symlink" }): Promise<void> {
    await this.clearWay(d, rel, false)
    const abs = this.abs(d, rel)
    if (this.opts.overwrite) await fsp.rm(abs, { force: true })
    await fsp.symlink(entry.target, abs)
    this.setMeta(abs, entry, true)
    d.result.symlinks++
  }

  private async makeHardlink(d: Dest, rel: string, entry: FileEntry, base: string | undefined, restored: Set<string>): Promise<void> {
    const link = entry.link!
    const within = base === undefined ? undefined : base === "" ? link : link.startsWith(`${base}/`) ? link.slice(base.length + 1) : undefined
    if (within === undefined || !restored.has(within)) {
      throw new IntegrityError(`hardlink target ${link} is not part of this restore`)
    }
    await this.clearWay(d, rel, false)
    if (this.opts.overwrite) await fsp.rm(this.abs(d, rel), { force: true })
    await fsp.link(this.abs(d, within), this.abs(d, rel))
    d.result.hardlinks++
  }

  /** New files belong to this process already; chown only what differs. */
  private needsChown(e: TreeEntry): boolean {
    return this.owners && (e.uid !== this.self.uid || e.gid !== this.self.gid)
  }

  /** Owner, mode and mtime, inline: a thread-pool round trip costs more than the calls (1,600 directories: ~0.1 s). */
  private setMeta(abs: string, e: TreeEntry, isLink: boolean): void {
    if (this.needsChown(e)) fs.lchownSync(abs, e.uid, e.gid)
    if (!isLink) fs.chmodSync(abs, e.mode)
    const t = utimesSeconds(BigInt(e.mtime))
    if (isLink) fs.lutimesSync(abs, t, t)
    else fs.utimesSync(abs, t, t)
  }

  private async guard(d: Dest, rel: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn()
    } catch (err) {
      if (isCairnError(err, "ABORTED")) throw err
      d.result.failed.push({ path: rel, reason: describe(err), code: codeOf(err) })
    }
  }
}

/** Unique within this process by the counter, across processes by the random part; created with O_EXCL anyway. */
const TEMP_PREFIX = `.cairn-${randomBytes(4).toString("hex")}-`
let tempCount = 0
/** The longest temporary name (the counter in base 36 stays under 13 digits), and the longest stage's. */
const TEMP_NAME_BYTES = TEMP_PREFIX.length + 13 + ".tmp".length
const STAGE_NAME_BYTES = TEMP_PREFIX.length + 13 + ".stage".length
/** The longest path the kernel takes, without its terminating NUL (PATH_MAX: 4096 on Linux, 1024 on macOS). */
const PATH_MAX_BYTES = (process.platform === "darwin" ? 1024 : 4096) - 1

/** Where a WholeFile is written: its temp name, or (in a stage) its final one. */
function writtenAt(f: WholeFile): string {
  return f.temp ?? f.final
}

function tempName(final: string): string {
  return `${final.slice(0, final.lastIndexOf("/") + 1)}${TEMP_PREFIX}${(tempCount++).toString(36)}.tmp`
}

/** ns -> seconds for fs.utimes, nudged half a microsecond up so libuv's truncation lands on the right microsecond. */
export function utimesSeconds(ns: bigint): number {
  let sec = ns / 1_000_000_000n
  let rem = ns % 1_000_000_000n
  if (rem < 0n) {
    sec -= 1n
    rem += 1_000_000_000n
  }
  return Number(sec) + (Number(rem / 1000n) + 0.5) / 1e6
}

/** A failure's reason that says the destination's file system is full (or the user's quota on it used up). */
const DISK_FULL = /\b(ENOSPC|EDQUOT)\b/

/**
 * The error of a restore that left paths unrestored: damage in the
 * repository (INTEGRITY: verify names it), or a failure writing the
 * destination (a full disk, say), which says so and what to do; the first
 * failure shown is one of the kind reported.
 */
export function restoreFailed(dest: string, result: RestoreResult): CairnError {
  const damaged = result.failed.filter((f) => f.code === "INTEGRITY")
  const first = damaged[0] ?? result.failed[0]!
  const left = `restore into ${dest} left ${result.failed.length} path(s) unrestored (first: ${first.path}: ${first.reason})`
  const data = { failed: result.failed, result }
  if (damaged.length > 0) return new IntegrityError(`${left}; run "cairn verify --read-data" to see the damage`, data)
  const fix = DISK_FULL.test(first.reason) ? "the destination's disk is full: free some space" : "fix that"
  const err = new IoError(`${left}; ${fix}, then restore again into an empty directory (or with overwrite)`, data)
  if (first.code !== "IO") (err as { code: string }).code = first.code
  return err
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function codeOf(err: unknown): string {
  return isCairnError(err) ? err.code : "IO"
}
