// Snapshot: scan a directory, store its files and one tree per directory,
// then commit a snapshot record.
//
// Phases: (1) scan the whole tree (metadata only; gives totals for progress
// and a deterministic hardlink order); (2) store file contents, FILE_SLOTS
// files at a time, reusing the parent snapshot's chunk lists for files whose
// size, mtime, ctime and inode are unchanged; (3) build trees bottom-up;
// (4) flush the store (packs and index durable) and only then write the
// record, so a listed snapshot never references missing data.
// A file that changes while it is read is read again once; if it changes
// again, what was read is kept and the path is reported. A file that vanishes
// is left out and reported. Either way the snapshot is consistent.

import fs, { constants as fsConstants, promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { Semaphore } from "../store/concurrency.js"
import { BadInputError, throwIfAborted } from "../store/errors.js"
import { randomId, type BlobId } from "../store/ids.js"
import type { Store } from "../store/store.js"
import { compileIgnore, parseIgnoreFile, type IgnoreRules } from "./ignore.js"
import { Ingestor } from "./ingest.js"
import { scanTree, type ScanNode, type Warning } from "./scan.js"
import { dirCacheKey, loadStatCache, saveStatCache, type StatCache } from "./statcache.js"
import { nsToString, type TreeEntry } from "./tree.js"
import type { Progress, SnapshotRecord, SnapshotStats } from "./types.js"

export interface SnapshotOptions {
  name?: string
  boxId?: string
  /** the snapshot this one follows (recorded for lineage) */
  parent?: SnapshotRecord
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
  /** files whose chunk lists came from the parent without reading */
  reusedFiles: number
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
export const IGNORE_FILE = ".cairnignore"

export async function createSnapshot(store: Store, dir: string, opts: SnapshotOptions = {}): Promise<SnapshotResult> {
  const root = path.resolve(dir)
  const st = await fsp.stat(root).catch(() => undefined)
  if (!st?.isDirectory()) throw new BadInputError(`cannot snapshot ${dir}: it is not a directory`)
  const exclude = [...(opts.exclude ?? [])]
  const ignoreText = await fsp.readFile(path.join(root, IGNORE_FILE), "utf8").catch(() => undefined)
  const patterns = [...(ignoreText === undefined ? [] : parseIgnoreFile(ignoreText)), ...exclude]
  let ignore: IgnoreRules
  try {
    ignore = compileIgnore(patterns)
  } catch (err) {
    throw new BadInputError(`${(err as Error).message}; fix the pattern in --exclude or ${IGNORE_FILE}`)
  }

  return store.withLock(false, "snapshot", async () => {
    const scan = await scanTree(root, { ignore, signal: opts.signal })
    const cacheKey = opts.cacheKey ?? dirCacheKey(root)
    const cache = opts.full ? new Map() : await loadStatCache(store.cacheDir, cacheKey)
    const run = new SnapshotRun(store, root, cache, scan.files, scan.bytes, opts)
    run.warnings.push(...scan.warnings)
    await run.storeFiles(scan.root)
    const rootTree = await run.buildTree(scan.root)
    await store.flush()
    throwIfAborted(opts.signal)
    const totals = run.ingest.totals()
    const stats: SnapshotStats = {
      files: scan.files,
      dirs: scan.dirs,
      symlinks: scan.symlinks,
      logicalBytes: rootTree.size,
      storedBytes: totals.storedBytes,
      addedBytes: totals.addedBytes,
    }
    const snapshot: SnapshotRecord = {
      id: randomId("snap"),
      name: opts.name,
      boxId: opts.boxId,
      tree: rootTree.id,
      parent: opts.parent?.id,
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
    }
    await store.createRecord("snapshots", snapshot.id, snapshot)
    await saveStatCache(store.cacheDir, cacheKey, run.newCache).catch(() => {})
    return { snapshot, warnings: run.warnings, reusedFiles: run.reusedFiles, readBytes: run.readBytes }
  })
}

/** Reads a small file whole; reads one byte past the expected size to notice growth. */
function readSmallFileSync(abs: string, expected: number): Buffer {
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
    return buf.subarray(0, size)
  } finally {
    fs.closeSync(fd)
  }
}

class SnapshotRun {
  readonly ingest: Ingestor
  readonly warnings: Warning[] = []
  readonly newCache: StatCache = new Map()
  private readonly chunksOf = new Map<string, BlobId[]>()
  private readonly vanished = new Set<string>()
  private readonly treeMtimes = new Map<string, string>()
  private readonly smallSlots = new Semaphore(SMALL_SLOTS)
  private readonly largeSlots = new Semaphore(LARGE_SLOTS)
  reusedFiles = 0
  readBytes = 0
  private filesDone = 0
  private bytesDone = 0

  constructor(
    readonly store: Store,
    readonly root: string,
    readonly cache: StatCache,
    readonly filesTotal: number,
    readonly bytesTotal: number,
    readonly opts: SnapshotOptions,
  ) {
    this.ingest = new Ingestor(store, opts.signal)
  }

  async storeFiles(dir: ScanNode): Promise<void> {
    const jobs: Promise<void>[] = []
    const visit = (node: ScanNode) => {
      for (const child of node.children ?? []) {
        if (child.type === "dir") visit(child)
        else if (child.type === "file" && child.linkTo === undefined) jobs.push((child.size <= SMALL_FILE ? this.smallSlots : this.largeSlots).run(() => this.storeFile(child)))
      }
    }
    visit(dir)
    await Promise.all(jobs)
  }

  private async storeFile(node: ScanNode): Promise<void> {
    throwIfAborted(this.opts.signal)
    const cached = this.cache.get(node.rel)
    if (
      cached &&
      cached.size === node.size &&
      cached.mtimeNs === node.mtimeNs &&
      cached.ctimeNs === node.ctimeNs &&
      cached.ino === node.ino &&
      (await this.ingest.reuse(cached.chunks))
    ) {
      this.reusedFiles++
      this.record(node, cached.chunks, false, cached.treeMtime)
      return
    }
    // O_NOFOLLOW: a file swapped for a symlink between scan and read is not followed
    const abs = path.join(this.root, node.rel)
    for (let attempt = 0; ; attempt++) {
      let chunks: BlobId[]
      let size: number
      try {
        ;({ chunks, size } = await this.readFile(abs, node.size))
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
      const after = await fsp.lstat(abs, { bigint: true }).catch(() => undefined)
      const changed = !after || after.mtimeNs !== node.mtimeNs || Number(after.size) !== size || size !== node.size
      if (changed && attempt === 0 && after?.isFile()) {
        Object.assign(node, { size: Number(after.size), mtimeNs: after.mtimeNs, ctimeNs: after.ctimeNs, mode: Number(after.mode & 0o7777n) })
        continue
      }
      if (changed) {
        this.warnings.push({ path: node.rel, reason: "changed while it was read; the snapshot holds the bytes that were read" })
        node.size = size
      }
      this.record(node, chunks, changed)
      return
    }
  }

  private async readFile(abs: string, expected: number): Promise<{ chunks: BlobId[]; size: number }> {
    const onBytes = (n: number) => {
      this.readBytes += n
      this.progress(n)
    }
    if (expected <= SYNC_READ) {
      const data = readSmallFileSync(abs, expected)
      onBytes(data.length)
      return { chunks: await this.ingest.ingestBuffer(data), size: data.length }
    }
    const handle = await fsp.open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
    try {
      if (expected <= SMALL_FILE) {
        const data = await handle.readFile()
        onBytes(data.length)
        return { chunks: await this.ingest.ingestBuffer(data), size: data.length }
      }
      const stream = handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false })
      return await this.ingest.ingestStream(stream as AsyncIterable<Buffer>, onBytes)
    } finally {
      await handle.close()
    }
  }

  private record(node: ScanNode, chunks: BlobId[], changed = false, treeMtime?: string): void {
    this.chunksOf.set(node.rel, chunks)
    if (treeMtime !== undefined) this.treeMtimes.set(node.rel, treeMtime)
    if (!changed) {
      this.newCache.set(node.rel, { size: node.size, mtimeNs: node.mtimeNs, ctimeNs: node.ctimeNs, ino: node.ino, chunks, ...(treeMtime ? { treeMtime } : {}) })
    }
    this.filesDone++
    this.progress(0)
  }

  private progress(bytes: number): void {
    this.bytesDone += bytes
    this.opts.onProgress?.({
      phase: "snapshot",
      filesDone: this.filesDone,
      filesTotal: this.filesTotal,
      bytesDone: Math.min(this.bytesDone, this.bytesTotal),
      bytesTotal: this.bytesTotal,
    })
  }

  /**
   * The mtime a directory or symlink is recorded with: the one the cache
   * knows when the entry is unchanged since cairn restored or saw it.
   */
  private metaMtime(node: ScanNode): string {
    const cached = this.cache.get(node.rel)
    const same = cached && cached.mtimeNs === node.mtimeNs && cached.ctimeNs === node.ctimeNs && cached.ino === node.ino && cached.size === node.size
    const mtime = same && cached.treeMtime ? cached.treeMtime : nsToString(node.mtimeNs)
    if (node.type !== "file") {
      this.newCache.set(node.rel, { size: node.size, mtimeNs: node.mtimeNs, ctimeNs: node.ctimeNs, ino: node.ino, chunks: [], treeMtime: mtime })
    }
    return mtime
  }

  /** Writes the trees of dir and everything below it; returns its id and logical size. */
  async buildTree(dir: ScanNode): Promise<{ id: BlobId; size: number }> {
    const entries: TreeEntry[] = []
    let size = 0
    const subtrees = await Promise.all(
      (dir.children ?? []).map((c) => (c.type === "dir" ? this.buildTree(c) : undefined)),
    )
    ;(dir.children ?? []).forEach((child, i) => {
      const mtime = this.treeMtimes.get(child.rel) ?? this.metaMtime(child)
      const base = { name: child.name, mode: child.mode, mtime, uid: child.uid, gid: child.gid }
      if (child.type === "dir") {
        const sub = subtrees[i]!
        entries.push({ ...base, type: "dir", size: sub.size, tree: sub.id })
        size += sub.size
      } else if (child.type === "symlink") {
        entries.push({ ...base, type: "symlink", target: child.target! })
      } else if (child.linkTo !== undefined) {
        if (!this.vanished.has(child.linkTo) && this.chunksOf.has(child.linkTo)) {
          entries.push({ ...base, type: "file", size: child.size, link: child.linkTo })
        }
      } else if (!this.vanished.has(child.rel)) {
        entries.push({ ...base, type: "file", size: child.size, chunks: this.chunksOf.get(child.rel) ?? [] })
        size += child.size
      }
    })
    return { id: await this.ingest.putTree(entries), size }
  }
}

