// Snapshot: scan a directory, store its files and one tree per directory,
// then commit a snapshot record.
//
// Phases: (1) scan the whole tree (metadata only; gives totals for progress
// and a deterministic hardlink order), reading each large file the cache
// does not vouch for as soon as the scan finds it, and settling each directory
// the cache vouches for with everything below it (statcache.ts, Settler): it is
// not walked, and its tree is the cache's; (2) store file contents, a bounded
// number of files at a time, reusing the incremental cache's chunk lists
// (statcache.ts) for files whose size, mtime, ctime and inode are unchanged,
// synchronously and without index lookups while the cache can vouch for its
// blobs; (3) build trees bottom-up, reusing the cached tree of every
// directory with nothing changed below it; (4) flush the store (packs and
// index durable) and only then write the record, so a listed snapshot never
// references missing data. An unchanged workspace costs its scan and nothing more.
// A file that changes while it is read is read again once; if it changes
// again, what was read is kept and the path is reported. A file that vanishes
// is left out and reported. Either way the snapshot is consistent.

import fs, { constants as fsConstants, promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { mapLimit, Semaphore } from "../store/concurrency.js"
import { BadInputError, throwIfAborted } from "../store/errors.js"
import { randomId, type BlobId } from "../store/ids.js"
import type { Store } from "../store/store.js"
import { checkRecordFields } from "./records.js"
import { compileIgnore, parseIgnoreFile, type IgnoreRules } from "./ignore.js"
import { chunkFile, readSmallFiles, SMALL_BATCH_BYTES, SPAN, type FileStat } from "./chunk-reader.js"
import { Ingestor, KnownChunkMissing } from "./ingest.js"
import type { EntryStat } from "./lstat.js"
import { scanTree, type ScanNode, type ScanResult, type Warning } from "./scan.js"
import {
  dirCacheKey,
  emptyStatCache,
  loadStatCache,
  nowNs,
  StatCacheWriter,
  tooRecent,
  writeStatCache,
  type CachedBlob,
  type CachedEntry,
  type CachedTree,
  type SettleProbe,
  type Settler,
  type StatCacheView,
} from "./statcache.js"
import { nsToString, type TreeEntry } from "./tree.js"
import type { Progress, SnapshotRecord, SnapshotStats } from "./types.js"

export interface SnapshotOptions {
  name?: string
  boxId?: string
  /**
   * the snapshot this one follows (recorded for lineage); or a promise of
   * it, still being looked for (awaited when the record is written, and its
   * failure then the snapshot's)
   */
  parent?: SnapshotRecord | Promise<SnapshotRecord | undefined>
  /**
   * Names this workspace's incremental cache (a box id); default: derived from
   * the directory's absolute path. Unchanged files are not read again.
   */
  cacheKey?: string
  /** re-read every file, ignoring the incremental cache */
  full?: boolean
  exclude?: string[]
  labels?: Record<string, string>
  /** retention (cairn forget) never removes a pinned snapshot */
  pinned?: boolean
  /** ISO-8601; after it, retention removes the snapshot even if no rule asks */
  expiresAt?: string
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface SnapshotResult {
  snapshot: SnapshotRecord
  warnings: Warning[]
  /** files whose chunk lists came from the incremental cache without reading */
  reusedFiles: number
  /** directories whose tree object came from the incremental cache (nothing below them changed) */
  reusedTrees: number
  readBytes: number
}

/** Files read at once: many small ones (their cost is syscalls), few large ones (their cost is bytes). */
const SMALL_SLOTS = 32
const LARGE_SLOTS = 2
const SMALL_FILE = 256 * 1024
/**
 * Files up to this size are read with synchronous calls: open, read and
 * close of a cached small file take a few microseconds inline but ~30 us each
 * as thread-pool round trips, which would dominate a tree of small files.
 */
const SYNC_READ = 64 * 1024
/**
 * From this many small files on, they are read by the chunk readers in
 * batches (storeSmallBatches) of at most SMALL_BATCH_BYTES (the readers'
 * reply buffers' size) and SMALL_BATCH_FILES, SMALL_BATCHES at a time (one per reader; four at a time
 * were no faster, and a first snapshot of the bench's workspace peaked ~15
 * MiB higher). Fewer are read on this thread: a reader's start (~80 ms of
 * CPU, ~10 MiB) would cost more than their system calls.
 */
const SMALL_BATCHED_FROM = 256
const SMALL_BATCH_FILES = 128
const SMALL_BATCHES = 2
/**
 * Once the scan has found this many bytes of large files the cache does not
 * know, the store is told that many blobs will come (Store.expectBlobs): its
 * compressor starts while the scan goes on.
 */
const WARM_AT = 16 << 20
/** Cached blob ids looked up per index call when the cache cannot vouch for them. */
const LOOKUP_BATCH = 8192
export const IGNORE_FILE = ".cairnignore"

export async function createSnapshot(store: Store, dir: string, opts: SnapshotOptions = {}): Promise<SnapshotResult> {
  // before any work: a record that could not be written would waste the snapshot
  checkRecordFields({ name: opts.name, labels: opts.labels, boxId: opts.boxId, expiresAt: opts.expiresAt })
  if (opts.exclude !== undefined && (!Array.isArray(opts.exclude) || opts.exclude.some((p) => typeof p !== "string"))) {
    throw new BadInputError("exclude must be a list of glob patterns (strings)")
  }
  const root = path.resolve(dir)
  // read at once: the directory's stat and ignore file, the cache (read while the lock is taken; loadStatCache
  // never rejects: whether its blobs are still held is decided under the lock, by cacheTrusted, where no gc can
  // remove them), and the repository's own directories
  const cacheKey = opts.cacheKey ?? dirCacheKey(root)
  const cacheLoad = opts.full ? Promise.resolve(emptyStatCache()) : loadStatCache(store.cacheDir, cacheKey)
  const skipDirs = ownDirs(store)
  const [st, ignoreText] = await Promise.all([fsp.stat(root).catch(() => undefined), fsp.readFile(path.join(root, IGNORE_FILE), "utf8").catch(() => undefined)])
  if (!st?.isDirectory()) throw new BadInputError(`cannot snapshot ${dir}: it is not a directory`)
  const exclude = [...(opts.exclude ?? [])]
  const patterns = [...(ignoreText === undefined ? [] : parseIgnoreFile(ignoreText)), ...exclude]
  let ignore: IgnoreRules
  try {
    ignore = compileIgnore(patterns)
  } catch (err) {
    throw new BadInputError(`${(err as Error).message}; fix the pattern in --exclude or ${IGNORE_FILE}`)
  }

  return store.withLock(false, "snapshot", async () => {
    // files changed since a tick before this are not cached (tooRecent)
    const began = nowNs()
    const ready = cacheLoad.then(async (cache) => new SnapshotRun(store, root, cache, await cacheTrusted(store, cache), patterns, opts))
    // a large file that changed is read while the scan goes on (the reader thread would idle until the scan ends)
    const onLargeFile = { size: SMALL_FILE + 1, fn: (node: ScanNode) => void ready.then((run) => run.readEarly(node)) }
    let scan: ScanResult
    try {
      // the cache before the walk: a directory it lists as it is on disk is not read again
      const cache = await cacheLoad
      const listed = (rel: string, st: EntryStat, at: number | undefined) => cache.listing(rel, st, at)
      // and a directory it settles (nothing below it changed) is not walked at all
      const settle = (probe: SettleProbe): Settler => {
        const settler = cache.settler(probe)
        return async (...dir) => ((await ready).settles ? settler(...dir) : undefined)
      }
      scan = await scanTree(root, { ...(patterns.length > 0 ? { ignore } : {}), signal: opts.signal, onLargeFile, listed, settle, skipDirs: await skipDirs })
    } catch (err) {
      await (await ready).settleEarly() // nothing may still write once the lock is released
      throw err
    }
    const run = await ready
    run.scanned(scan.files, scan.bytes)
    run.warnings.push(...scan.warnings)
    await run.resolveCachedBlobs()
    await run.storeFiles(scan.root)
    const rootTree = run.buildTree(scan.root)
    await run.ingest.drain()
    // every blob is stored and its length known: the next cache is made once the flush is under way, while
    // the packs sealed before it finish their writes and syncs (its ~50 ms of work shortened the flush that
    // followed by ~35 in a first snapshot of the bench's workspace), and written beside the record below
    const flushing = store.flush()
    const next = run.changedCache() ? run.nextCache(scan.root, scan.files + scan.dirs + scan.symlinks + 1, began) : undefined
    await flushing
    throwIfAborted(opts.signal)
    const totals = run.ingest.totals()
    const stats: SnapshotStats = {
      files: scan.files,
      dirs: scan.dirs,
      symlinks: scan.symlinks,
      logicalBytes: rootTree.size,
      storedBytes: run.storedBytes(rootTree),
      addedBytes: totals.addedBytes,
    }
    const snapshot: SnapshotRecord = {
      id: randomId("snap"),
      name: opts.name,
      boxId: opts.boxId,
      tree: rootTree.id,
      parent: (await opts.parent)?.id,
      createdAt: new Date().toISOString(),
      host: os.hostname(),
      source: root,
      exclude: patterns,
      labels: opts.labels ?? {},
      ...(opts.pinned ? { pinned: true } : {}),
      ...(opts.expiresAt ? { expiresAt: new Date(opts.expiresAt).toISOString() } : {}),
      sizeBytes: rootTree.size,
      status: "ready",
      stats,
      root: { mode: scan.root.mode, mtime: String(scan.root.mtimeNs), uid: scan.root.uid, gid: scan.root.gid },
    }
    // the cache is written beside the record: it vouches only for blobs the index file just made durable
    const cached = next && store.indexFileNames().then((names) => writeStatCache(store.cacheDir, cacheKey, next, { patterns, indexFiles: [...names], storedBytes: stats.storedBytes }))
    // the cache's own failure only costs the next snapshot a full read: the record's is the one reported
    const [recorded] = await Promise.allSettled([store.createRecord("snapshots", snapshot.id, snapshot), cached])
    if (recorded.status === "rejected") throw recorded.reason
    return { snapshot, warnings: run.warnings, reusedFiles: run.reusedFiles, reusedTrees: run.reusedTrees, readBytes: run.readBytes }
  })
}

/**
 * The repository's own directory (when it is on this host) and its cache
 * directory, by "dev:ino": a tree that contains them is snapshotted without
 * them (they change while the snapshot is written, and would hold every
 * earlier snapshot again), as borg leaves its repository out.
 */
async function ownDirs(store: Store): Promise<{ ids: Set<string>; reason: string }> {
  const ids = new Set<string>()
  for (const dir of [store.backend.localRoot, store.cacheDir]) {
    const st = dir === undefined ? undefined : await fsp.lstat(dir, { bigint: true }).catch(() => undefined)
    if (st?.isDirectory()) ids.add(`${st.dev}:${st.ino}`)
  }
  return { ids, reason: "skipped: it is the repository being written to, or its cache" }
}

/**
 * Whether the repository still holds every blob the cache names, with the
 * lengths it recorded: while each index file the cache lists exists, no pack
 * holding them was deleted (see statcache.ts). Decided once, when the cache
 * is loaded: gc cannot run while the snapshot holds the repository's lock.
 * Never rejects: when the index files cannot be listed, the cache is not
 * trusted and its blobs are looked up (the backend's error, if it lasts,
 * fails the snapshot where it is needed).
 */
async function cacheTrusted(store: Store, cache: StatCacheView): Promise<boolean> {
  const names = cache.indexFiles
  if (names === undefined) return false
  const present = await store.indexFileNames().catch(() => undefined)
  return present !== undefined && names.every((n) => present.has(n))
}

/**
 * Reads a small file whole, reading one byte past the expected size to
 * notice growth, and returns it with the file's stat taken after the read
 * (fstat: a thread-pool lstat costs the main thread more than the read).
 */
function readSmallFileSync(abs: string, expected: number): { data: Buffer; after: fs.BigIntStats } {
  const fd = fs.openSync(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
  try {
    let buf = Buffer.allocUnsafe(expected + 1)
    let size = 0
    for (;;) {
      const n = fs.readSync(fd, buf, size, buf.length - size, null)
      if (n === 0) break
      size += n
      if (size === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2)
        buf.copy(bigger)
        buf = bigger
      }
    }
    return { data: buf.subarray(0, size), after: fs.fstatSync(fd, { bigint: true }) }
  } finally {
    fs.closeSync(fd)
  }
}

/** What reading a file gave: its chunks, the bytes read, the file as seen after reading (undefined: gone), and whether it looked the same throughout. */
interface FileRead {
  chunks: BlobId[]
  size: number
  after: FileStat | undefined
  steady: boolean
}

/** Whether a whole read of node's file (`size` bytes, then `after`) saw it as the scan did: same inode, mtime and size. */
function asScanned(node: ScanNode, size: number, after: FileStat | undefined): boolean {
  return after !== undefined && after.ino === node.ino && after.mtimeNs === node.mtimeNs && Number(after.size) === size && size === node.size
}

const seen = (st: fs.BigIntStats): FileStat => ({ size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, mode: Number(st.mode), isFile: st.isFile() })

class SnapshotRun {
  readonly ingest: Ingestor
  readonly warnings: Warning[] = []
  /** blobs of the cache looked up in the index (see resolveCachedBlobs), with their stored lengths */
  private readonly known = new Map<BlobId, number>()
  private readonly chunksOf = new Map<string, BlobId[]>()
  private readonly vanished = new Set<string>()
  /** files whose bytes changed while they were read: not cached, so the next snapshot reads them again */
  private readonly unstable = new Set<string>()
  /**
   * Files reused from the cache without reading (their chunks are the
   * cache's), as nodes: a node's hash is its identity, where a path's is its
   * characters, and a path the walk joined is a chain of pieces that hashing
   * first copies into one string (an unchanged snapshot of the workspace
   * spent ~30 ms making 14,800 of them, and its collector moving them).
   */
  private readonly reused = new Set<ScanNode>()
  /** paths of reused files with more than one link: a hardlink group's first member is named by path (ScanNode.linkTo) */
  private readonly reusedLinked = new Set<string>()
  /**
   * Reused files whose chunks are not yet accounted for: while the cache's
   * lengths can be trusted and nothing is read, accounting waits for the
   * trees; a reused root tree takes the cached total instead (storedBytes).
   */
  private deferred: ScanNode[] = []
  /** settled directories (ScanNode.settled) whose blobs below are not yet accounted for, as `deferred` */
  private deferredBelow: ScanNode[] = []
  private readonly trees = new Map<string, { id: BlobId; size: number; entries: number }>()
  /** directories whose cached tree was reused */
  private readonly reusedDirs = new Set<ScanNode>()
  private readonly samePatterns: boolean
  /** whether the scan may settle directories (ScanOptions.settle): their trees and blobs are then the cache's, without a lookup */
  readonly settles: boolean
  reusedFiles = 0
  reusedTrees = 0
  readBytes = 0
  private treesBuilt = 0
  private filesDone = 0
  private bytesDone = 0
  private filesTotal = 0
  private bytesTotal = 0
  private scanDone = false
  /** large files, read LARGE_SLOTS at a time (readLarge) */
  private readonly largeSlots = new Semaphore(LARGE_SLOTS)
  /** files of more than one reader span, read one at a time (readLarge) */
  private readonly multiSpan = new Semaphore(1)
  /** large files whose reading started during the scan */
  private readonly early = new Map<string, Promise<void>>()
  /** bytes of the large files read early that the cache did not know (see WARM_AT) */
  private newBytes = 0

  constructor(
    readonly store: Store,
    readonly root: string,
    readonly cache: StatCacheView,
    /** whether the cache's index files all still exist (cacheTrusted) */
    private readonly trusted: boolean,
    readonly patterns: string[],
    readonly opts: SnapshotOptions,
  ) {
    this.ingest = new Ingestor(store, opts.signal)
    this.samePatterns = cache.patterns !== undefined && cache.patterns.length === patterns.length && cache.patterns.every((p, i) => p === patterns[i])
    this.settles = trusted && this.samePatterns && !cache.someLengthUnknown
  }

  /** The scan's totals, for progress. */
  scanned(files: number, bytes: number): void {
    this.filesTotal = files
    this.bytesTotal = bytes
    this.scanDone = true
  }

  /** Starts reading a large file the scan just found, unless the cache says it is unchanged. */
  readEarly(node: ScanNode): void {
    if (this.isUnchanged(node) || this.early.has(node.rel)) return
    // files the cache has never seen: their blobs will need compressing (an edited one's are mostly known)
    if (this.newBytes < WARM_AT && this.cache.get(node.rel, node.cacheAt) === undefined && (this.newBytes += node.size) >= WARM_AT) this.store.expectBlobs()
    const reading = this.readLarge(node)
    reading.catch(() => {}) // awaited in storeFiles, or settled by settleEarly
    this.early.set(node.rel, reading)
  }

  /**
   * Reads a large file: LARGE_SLOTS at a time, and of those at most one
   * that takes more than one reader span (chunk-reader.ts). Such a file
   * keeps the readers busy on its own (its next span is asked for while one
   * is cut), and holds up to four span buffers (two being read, two whose
   * chunks are being stored): two of them at once held twice the memory in
   * the same time (a first snapshot of the bench's workspace peaked ~20 MiB
   * higher). Files of one span each still go two at a time.
   */
  private readLarge(node: ScanNode): Promise<void> {
    if (node.size <= SPAN) return this.largeSlots.run(() => this.storeFile(node))
    return this.multiSpan.run(() => this.largeSlots.run(() => this.storeFile(node)))
  }

  /** Waits for the reads readEarly started (when the scan failed: their errors are not the one to report). */
  async settleEarly(): Promise<void> {
    await Promise.allSettled(this.early.values())
  }

  /**
   * Learns which of the cache's blobs the repository still holds: all of
   * them, with the lengths the cache recorded, while the index files that
   * listed them exist; otherwise (a gc ran, or the cache came from a
   * restore) by one bulk lookup.
   */
  async resolveCachedBlobs(): Promise<void> {
    const unknown = new Set<BlobId>()
    if (!this.trusted || this.cache.someLengthUnknown) {
      for (const b of this.cache.blobs()) if (!this.trusted || b.length < 0) unknown.add(b.id)
    }
    const ids = [...unknown]
    for (let i = 0; i < ids.length; i += LOOKUP_BATCH) {
      throwIfAborted(this.opts.signal)
      const batch = ids.slice(i, i + LOOKUP_BATCH)
      const locs = await this.store.locateMany(batch)
      batch.forEach((id, k) => {
        const loc = locs[k]
        if (loc !== undefined && loc !== "pending") this.known.set(id, this.store.storedLengthOf(loc, id))
      })
    }
  }

  /** A cached blob's stored length if the repository holds it. */
  private lengthIfHeld(b: CachedBlob): number | undefined {
    return this.trusted && b.length >= 0 ? b.length : this.known.get(b.id)
  }

  /**
   * node's absolute path. Not path.join: root is absolute and normalized, rel
   * "/"-separated without dots, and join's normalizing allocated ~1 KiB per
   * call (a first snapshot of 100,000 small files: ~100 MB of garbage).
   */
  private abs(node: ScanNode): string {
    return this.root.endsWith("/") ? this.root + node.rel : `${this.root}/${node.rel}`
  }

  /** Whether node's kind, size, mtime, ctime and inode are all as the cache recorded them. */
  private isUnchanged(node: ScanNode): boolean {
    return this.cache.matches(node.rel, node.type === "file" && node.linkTo !== undefined ? "link" : node.type, node, node.cacheAt)
  }

  /** The cache's entry for node if node is unchanged. */
  private unchanged(node: ScanNode): CachedEntry | undefined {
    return this.isUnchanged(node) ? this.cache.get(node.rel, node.cacheAt) : undefined
  }

  /**
   * Unchanged files whose chunks the repository holds are recorded at once,
   * synchronously; the others are read: small ones in batches by the chunk
   * readers (storeSmallBatches), or SMALL_SLOTS at a time on this thread
   * when there are few; large ones LARGE_SLOTS at a time.
   */
  async storeFiles(dir: ScanNode): Promise<void> {
    const small: ScanNode[] = []
    const large: ScanNode[] = []
    const visit = (node: ScanNode) => {
      if (node.settled) return this.reuseBelow(node, node.settled.files)
      for (const child of node.children ?? []) {
        if (child.type === "dir") visit(child)
        else if (child.type === "file" && child.linkTo === undefined) {
          if (this.trusted && !this.cache.someLengthUnknown && this.isUnchanged(child)) {
            this.deferred.push(child)
            this.reuse(child)
            continue
          }
          const cached = this.unchanged(child)
          if (cached && cached.chunks.every((c) => this.lengthIfHeld(c) !== undefined)) {
            this.accountChunks(cached)
            this.reuse(child)
          } else {
            ;(child.size <= SMALL_FILE ? small : large).push(child)
          }
        }
      }
    }
    visit(dir)
    // files are read: what they share with reused ones is known to be held without a lookup
    if (small.length > 0 || large.length > 0) this.accountDeferred()
    // every read settles before an error propagates: nothing may still write after the lock is released
    const lanes = await Promise.allSettled([
      small.length >= SMALL_BATCHED_FROM ? this.storeSmallBatches(small) : mapLimit(small, SMALL_SLOTS, (n) => this.storeFile(n)),
      ...large.map((n) => this.early.get(n.rel) ?? this.readLarge(n)),
      this.settleEarly(), // every early read is in `large` as well; named again so that none can outlive the lock
    ])
    for (const lane of lanes) if (lane.status === "rejected") throw lane.reason
  }

  /**
   * Small files, read whole by the chunk readers in batches (readSmallFiles),
   * cut and hashed there: this thread only stores their chunks. A file the
   * batch could not read, or saw other than the scan did, goes to storeFile,
   * which reads it again and reports it as it would have.
   */
  private async storeSmallBatches(nodes: ScanNode[]): Promise<void> {
    const batches: ScanNode[][] = []
    let bytes = Infinity
    for (const node of nodes) {
      if (bytes + node.size > SMALL_BATCH_BYTES || batches.at(-1)!.length >= SMALL_BATCH_FILES) {
        batches.push([])
        bytes = 0
      }
      batches.at(-1)!.push(node)
      bytes += node.size
    }
    await mapLimit(batches, SMALL_BATCHES, async (batch) => {
      throwIfAborted(this.opts.signal)
      const read = await readSmallFiles(
        batch.map((node) => ({ path: this.abs(node), size: node.size })),
        this.ingest.params,
        this.ingest.gear,
      )
      await mapLimit(batch, batch.length, async (node, k) => {
        const file = read.files[k]!
        if ("error" in file || !asScanned(node, file.bytes.length, file.stat)) return this.storeFile(node)
        this.readBytes += file.bytes.length
        this.progress(file.bytes.length)
        this.record(node, await this.ingest.ingestChunks(file.bytes, file.lengths, file.ids))
      })
      // every chunk is stored (or failed): nothing uses the batch's bytes any more
      read.release()
    })
  }

  private async storeFile(node: ScanNode): Promise<void> {
    throwIfAborted(this.opts.signal)
    // O_NOFOLLOW: a file swapped for a symlink between scan and read is not followed
    const abs = this.abs(node)
    for (let attempt = 0; ; attempt++) {
      let read: FileRead
      try {
        read = await this.readFile(abs, node.size, node.rel)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === "ENOENT" || code === "EACCES" || code === "EPERM" || code === "EISDIR" || code === "ELOOP") {
          this.vanished.add(node.rel)
          this.warnings.push({ path: node.rel, reason: code === "ENOENT" ? "vanished before it was read" : `not readable (${code})` })
          this.progress(0)
          return
        }
        throw err
      }
      const { chunks, size, after } = read
      const changed = !read.steady || !asScanned(node, size, after)
      if (changed && attempt === 0 && after?.isFile) {
        Object.assign(node, { size: Number(after.size), mtimeNs: after.mtimeNs, ctimeNs: after.ctimeNs, ino: after.ino, mode: after.mode & 0o7777 })
        continue
      }
      if (changed) {
        this.warnings.push({ path: node.rel, reason: "changed while it was read; the snapshot holds the bytes that were read" })
        this.unstable.add(node.rel)
        node.size = size
      }
      this.record(node, chunks)
      return
    }
  }

  /**
   * Chunks and stores a file. Small files are read inline; large ones by a
   * chunk reader thread (chunk-reader.ts) while this thread stores their
   * chunks; files in between with one read on the thread pool. A large file
   * the cache knows sends the chunks its previous version had without their
   * bytes (most of a big file with a small edit); should one of them be gone
   * from the repository after all, the file is read again in full.
   */
  private async readFile(abs: string, expected: number, rel: string): Promise<FileRead> {
    const onBytes = (n: number) => {
      this.readBytes += n
      this.progress(n)
    }
    if (expected <= SYNC_READ) {
      const { data, after } = readSmallFileSync(abs, expected)
      onBytes(data.length)
      return { chunks: await this.ingest.ingestBuffer(data), size: data.length, after: seen(after), steady: true }
    }
    if (expected > SMALL_FILE) {
      const read = (known?: BlobId[]) => this.ingest.ingestBatches(chunkFile(abs, this.ingest.params, this.ingest.gear, { sizeHint: expected, known }), onBytes)
      const known = this.cachedChunks(rel)
      const { chunks, size, stat, steady } = await read(known).catch((err: unknown) => {
        if (!(err instanceof KnownChunkMissing)) throw err
        return read()
      })
      return { chunks, size, after: stat, steady }
    }
    const handle = await fsp.open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
    let data: Buffer
    try {
      data = await handle.readFile()
    } finally {
      await handle.close()
    }
    onBytes(data.length)
    const chunks = await this.ingest.ingestBuffer(data)
    const after = await fsp.lstat(abs, { bigint: true }).catch(() => undefined)
    return { chunks, size: data.length, after: after && seen(after), steady: true }
  }

  /**
   * The chunks the cache lists for a file at rel. While the cache is trusted
   * the repository holds them all, and the ingest is told so; otherwise each
   * one is looked up when it comes (most are held: the ones the cache's
   * snapshot holds).
   */
  private cachedChunks(rel: string): BlobId[] | undefined {
    const cached = this.cache.get(rel)
    if (cached?.kind !== "file" || cached.chunks.length === 0) return undefined
    if (this.trusted) for (const c of cached.chunks) if (c.length >= 0) this.ingest.hold(c.id, c.length)
    return cached.chunks.map((c) => c.id)
  }

  private record(node: ScanNode, chunks: BlobId[]): void {
    this.chunksOf.set(node.rel, chunks)
    this.filesDone++
    this.progress(0)
  }

  private reuse(node: ScanNode): void {
    this.reused.add(node)
    if (node.nlink > 1) this.reusedLinked.add(node.rel)
    this.reusedFiles++
    this.filesDone++
    this.progress(0)
  }

  /** Takes a settled directory's files as reused (their chunks are accounted for with the others: accountDeferred). */
  private reuseBelow(dir: ScanNode, files: number): void {
    this.deferredBelow.push(dir)
    this.reusedFiles += files
    this.filesDone += files
    this.progress(0)
  }

  private accountChunks(cached: CachedEntry): void {
    for (const c of cached.chunks) this.ingest.account(c.id, this.lengthIfHeld(c)!)
  }

  private accountDeferred(): void {
    for (const node of this.deferred) this.accountChunks(this.cache.get(node.rel, node.cacheAt)!)
    for (const dir of this.deferredBelow) for (const b of this.cache.blobsBelow(dir.rel, dir.cacheAt)) this.ingest.account(b.id, this.lengthIfHeld(b)!)
    this.deferred = []
    this.deferredBelow = []
  }

  /** A stored file's chunks: the cache's for a reused file (asked by node, not by its path: see `reused`), else as read. */
  private chunksFor(node: ScanNode): BlobId[] | undefined {
    return this.reused.has(node) ? this.cache.get(node.rel, node.cacheAt)!.chunks.map((c) => c.id) : this.chunksOf.get(node.rel)
  }

  /**
   * The stored bytes of every distinct blob the snapshot references. A
   * reused root tree references exactly the blobs of the snapshot the cache
   * was saved with, at the lengths the cache vouches for: its total is that
   * snapshot's, which the cache records.
   */
  storedBytes(root: { id: BlobId; reused: boolean }): number {
    const total = this.cache.storedBytes
    if (root.reused && this.trusted && total !== undefined) return total
    this.accountDeferred()
    return this.ingest.totals().storedBytes
  }

  private progress(bytes: number): void {
    this.bytesDone += bytes
    this.opts.onProgress?.({
      phase: "snapshot",
      filesDone: this.filesDone,
      filesTotal: this.filesTotal,
      // while the scan runs (a large file read early) the totals are not known yet: 0
      bytesDone: this.scanDone ? Math.min(this.bytesDone, this.bytesTotal) : this.bytesDone,
      bytesTotal: this.bytesTotal,
    })
  }

  /** The mtime recorded in trees: the one the cache knows when the entry is unchanged since cairn restored or saw it. */
  private treeMtime(node: ScanNode): string {
    const cached = this.unchanged(node)
    return cached?.treeMtime ?? nsToString(node.mtimeNs)
  }

  /**
   * The tree of dir and everything below it: the cached tree when nothing
   * below changed, else a new one (stored in the background; see
   * Ingestor.drain). Returns its id, its logical size and whether it was reused.
   */
  buildTree(dir: ScanNode): { id: BlobId; size: number; reused: boolean } {
    if (dir.settled) return this.reuseTree(dir, this.cache.get(dir.rel, dir.cacheAt)!.tree!, dir.settled.dirs)
    const children = dir.children ?? []
    const subtrees = children.map((c) => (c.type === "dir" ? this.buildTree(c) : undefined))
    const cached = this.samePatterns ? this.unchanged(dir)?.tree : undefined
    if (
      cached &&
      cached.entries === children.length &&
      this.lengthIfHeld(cached) !== undefined &&
      children.every((c, i) =>
        c.type === "dir" ? subtrees[i]!.reused : c.type === "file" && c.linkTo === undefined ? this.reused.has(c) : this.isUnchanged(c),
      )
    ) {
      return this.reuseTree(dir, cached, 0)
    }
    const entries: TreeEntry[] = []
    let size = 0
    children.forEach((child, i) => {
      // one literal per kind, no spread of a shared base (the idiom of tree.ts, where spreads cost 4x)
      const { name, mode, uid, gid } = child
      const mtime = this.treeMtime(child)
      if (child.type === "dir") {
        const sub = subtrees[i]!
        entries.push({ name, mode, mtime, uid, gid, type: "dir", size: sub.size, tree: sub.id })
        size += sub.size
      } else if (child.type === "symlink") {
        entries.push({ name, mode, mtime, uid, gid, type: "symlink", target: child.target! })
      } else if (child.linkTo !== undefined) {
        if (!this.vanished.has(child.linkTo) && (this.chunksOf.has(child.linkTo) || this.reusedLinked.has(child.linkTo))) {
          entries.push({ name, mode, mtime, uid, gid, type: "file", size: child.size, link: child.linkTo })
        }
      } else if (!this.vanished.has(child.rel)) {
        entries.push({ name, mode, mtime, uid, gid, type: "file", size: child.size, chunks: this.chunksFor(child) ?? [] })
        size += child.size
      }
    })
    const id = this.ingest.startTree(entries)
    this.treesBuilt++
    this.trees.set(dir.rel, { id, size, entries: entries.length })
    return { id, size, reused: false }
  }

  /** dir's cached tree, taken as it is, and `dirs` directories below it whose trees it holds. */
  private reuseTree(dir: ScanNode, cached: CachedTree, dirs: number): { id: BlobId; size: number; reused: true } {
    this.ingest.account(cached.id, this.lengthIfHeld(cached)!)
    this.trees.set(dir.rel, { id: cached.id, size: cached.size, entries: cached.entries })
    this.reusedDirs.add(dir)
    this.reusedTrees += 1 + dirs
    return { id: cached.id, size: cached.size, reused: true }
  }

  /** node's entry in the next cache: one literal, no spreads (as in buildTree), for it is made once per entry of the tree. */
  private cacheEntry(node: ScanNode, kind: CachedEntry["kind"], chunks: CachedBlob[], tree: CachedTree | undefined, names?: number): CachedEntry {
    return { kind, size: node.size, mtimeNs: node.mtimeNs, ctimeNs: node.ctimeNs, ino: node.ino, chunks, treeMtime: this.treeMtime(node), tree, names }
  }

  /** Whether the next snapshot needs a new cache: anything read or rebuilt, or the cache's blobs not yet vouched for. */
  changedCache(): boolean {
    return !this.trusted || !this.samePatterns || this.readBytes > 0 || this.chunksOf.size > 0 || this.treesBuilt > 0
  }

  /**
   * The cache for the next snapshot: every entry as scanned now, with what it
   * was stored as. An entry that is as the loaded cache has it (unchanged,
   * its blobs' lengths vouched for by trusted index files) is copied from it.
   * A file changed too shortly before `began` (tooRecent) is left out: the
   * next snapshot reads it again.
   */
  nextCache(root: ScanNode, capacity: number, began: bigint): StatCacheWriter {
    this.accountDeferred()
    const w = new StatCacheWriter(capacity)
    const blob = (id: BlobId): CachedBlob => ({ id, length: this.ingest.lengthOf(id) })
    const add = (node: ScanNode) => {
      const rel = node.rel
      const same =
        node.type === "dir" ? this.trusted && this.reusedDirs.has(node)
        : node.type === "file" && node.linkTo === undefined ? this.trusted && this.reused.has(node)
        : this.isUnchanged(node)
      // a settled directory: everything below it as well (the scan made no node of it)
      if (same && node.settled) {
        if (this.cache.copySubtreeTo(rel, w, node.cacheAt)) return
      } else if (same && this.cache.copyTo(rel, w, node.cacheAt)) {
        for (const child of node.children ?? []) add(child)
        return
      }
      if (node.type === "dir") {
        const tree = this.trees.get(rel)
        // its listing stands for the next scan's readdir only if no entry can have been made in it unseen (tooRecent)
        const names = tooRecent(node, began) ? undefined : node.names
        w.add(rel, this.cacheEntry(node, "dir", [], tree && { id: tree.id, length: this.ingest.lengthOf(tree.id), size: tree.size, entries: tree.entries }, names))
        for (const child of node.children ?? []) add(child)
      } else if (node.type === "symlink") {
        w.add(rel, this.cacheEntry(node, "symlink", [], undefined))
      } else if (node.linkTo !== undefined) {
        w.add(rel, this.cacheEntry(node, "link", [], undefined))
      } else {
        const chunks = this.chunksFor(node)
        if (chunks && !this.unstable.has(rel) && !tooRecent(node, began)) w.add(rel, this.cacheEntry(node, "file", chunks.map(blob), undefined))
      }
    }
    add(root)
    return w
  }
}
