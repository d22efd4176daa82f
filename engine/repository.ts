// Repository: the library's entry point to a cairn repository.
//
// It opens the backend named by a path or an s3:// URL, owns the Store, and
// offers snapshots, boxes and maintenance. Within one process, opening the
// same location twice returns the same Repository (reference-counted), so
// that every Box and every parallel operation shares one store, one pack
// writer and one LevelDB index. Arguments are checked here; the engine
// modules below trust their inputs.

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import type { Readable } from "node:stream"
import type { ObjectStore } from "../store/backend.js"
import { FsObjectStore } from "../store/backends/fs.js"
import { makeDirs } from "../store/dirs.js"
import { BadInputError, CairnError, NotFoundError } from "../store/errors.js"
import type { BlobId } from "../store/ids.js"
import type { LockInfo } from "../store/lock.js"
import { Store } from "../store/store.js"
import type { DuRow, RepositoryStats } from "./accounting.js"
import type { DiffResult } from "./diff.js"
import { forgetSnapshots, type ForgetPlan, type KeepPolicy } from "./forget.js"
import type { GcOptions, GcReport } from "./gc.js"
import type { VerifyOptions, VerifyReport } from "./verify.js"
import type { importTar } from "./tar.js"
import type { RestoreOptions, RestoreResult, RestoreTarget, SharedRestoreOptions } from "./restore.js"
import { createSnapshot, type SnapshotOptions, type SnapshotResult } from "./snapshot.js"
import type { SnapshotRecord } from "./types.js"
import { flattenTree, loadTree, resolvePath } from "./walk.js"
import { checkRecordFields, creationOrder, listSnapshots, newestSnapshot, readSnapshot } from "./records.js"

export interface OpenOptions {
  /** Local repository directory; default $CAIRN_REPO, else ~/.cairn. */
  path?: string
  /** "s3://bucket/prefix" for a repository on S3-compatible storage. */
  url?: string
  endpoint?: string
  region?: string
  forcePathStyle?: boolean
  /** Host-local cache (index, incremental and restore caches). */
  cacheDir?: string
  /** Create the repository if the location is new or empty (default true). */
  create?: boolean
  /** How long to wait for another process's lock (default 60 s). */
  lockWaitMs?: number
  /** Told once per operation that must wait for another process's lock, with that lock's holder. */
  onLockWait?: (holder: LockInfo) => void
}

export interface FileInfo {
  name: string
  path: string
  size: number
  isDir: boolean
  type: "file" | "dir" | "symlink"
  mode: number
  /** ISO-8601 */
  modTime: string
  target?: string
}

export interface SnapshotFilter {
  boxId?: string
  name?: string
  /** "key" or "key=value" */
  label?: string
}

const open = new Map<string, { repo: Promise<Repository>; refs: number }>()

export function defaultRepoPath(): string {
  return process.env.CAIRN_REPO || path.join(os.homedir(), ".cairn")
}

export class Repository {
  readonly snapshots: SnapshotApi

  /** this handle's entry in the per-process table of open repositories */
  private shareKey = ""

  private constructor(
    readonly store: Store,
    readonly location: string,
    /** where boxes' workspaces are created by default */
    readonly workspaceRoot: string,
  ) {
    this.snapshots = new SnapshotApi(this)
  }

  /** Opens (and by default creates) a repository; shared within the process. */
  static async open(opts: OpenOptions = {}): Promise<Repository> {
    const location = opts.url ?? path.resolve(opts.path ?? defaultRepoPath())
    const key = shareKey(location, opts)
    const entry = open.get(key)
    if (entry) {
      entry.refs++
      return entry.repo
    }
    return Repository.share(key, Repository.openFresh(location, opts))
  }

  /** Creates a repository; fails if one exists. */
  static async init(opts: OpenOptions = {}): Promise<Repository> {
    const location = opts.url ?? path.resolve(opts.path ?? defaultRepoPath())
    const key = shareKey(location, opts)
    if (open.has(key)) throw new CairnError("ALREADY_EXISTS", `a repository already exists at ${location}`)
    return Repository.share(key, Repository.openFresh(location, { ...opts, create: true }, true))
  }

  private static share(key: string, opening: Promise<Repository>): Promise<Repository> {
    const repo = opening.then((r) => {
      r.shareKey = key
      return r
    })
    open.set(key, { repo, refs: 1 })
    repo.catch(() => open.delete(key))
    return repo
  }

  private static async openFresh(location: string, opts: OpenOptions, mustInit = false): Promise<Repository> {
    const { backend, cacheDir, workspaceRoot } = await makeBackend(location, opts)
    const storeOpts = { backend, cacheDir, lockWaitMs: opts.lockWaitMs, onLockWait: opts.onLockWait }
    let store: Store
    if (mustInit) store = await Store.init(storeOpts)
    else {
      try {
        store = await Store.open(storeOpts)
      } catch (err) {
        if (!(err instanceof CairnError && err.code === "NOT_A_REPOSITORY") || opts.create === false) throw err
        store = await Store.init(storeOpts) // refuses non-empty foreign locations
      }
    }
    return new Repository(store, location, workspaceRoot)
  }

  /** Releases this handle; the last one closes the store. */
  async close(): Promise<void> {
    const entry = open.get(this.shareKey)
    if (entry && --entry.refs > 0) return
    open.delete(this.shareKey)
    await this.store.close()
  }

  get config() {
    return this.store.config
  }

  // ---- maintenance (implemented in their own modules) -----------------
  // Modules a command may not need are imported when first used: each module
  // loaded costs every cairn process startup time (tar-stream alone ~20 ms).

  async rebuildIndex() {
    return this.store.withLock(true, "rebuild-index", () => this.store.rebuildIndex())
  }

  /** Checks that every snapshot can be restored; see engine/verify.ts. */
  verify(opts: VerifyOptions = {}): Promise<VerifyReport> {
    return import("./verify.js").then(({ verifyRepository }) => verifyRepository(this.store, opts))
  }

  /** Snapshots, logical and physical bytes, dedup ratio. */
  stats(): Promise<RepositoryStats> {
    return this.store.withLock(false, "stats", async () => (await import("./accounting.js")).repositoryStats(this.store))
  }

  /** Applies a keep policy: removes the records of snapshots no rule keeps (gc reclaims their data). */
  forget(policy: KeepPolicy, opts: { dryRun?: boolean; filter?: (s: SnapshotRecord) => boolean; now?: Date } = {}): Promise<ForgetPlan> {
    return forgetSnapshots(this.store, policy, opts)
  }

  /** Deletes what no snapshot references; see engine/gc.ts for the protocol. */
  gc(opts: GcOptions = {}): Promise<GcReport> {
    if (opts.repackThreshold !== undefined && !(opts.repackThreshold >= 0 && opts.repackThreshold <= 1)) {
      throw new BadInputError(`repackThreshold must be between 0 and 1, not ${opts.repackThreshold}`)
    }
    return import("./gc.js").then(({ collectGarbage }) => collectGarbage(this.store, opts))
  }
}

interface RestoreBatch {
  members: Array<{ idOrName: string; target: RestoreTarget; resolve: (r: RestoreResult) => void; reject: (err: unknown) => void }>
}

class SnapshotApi {
  constructor(private readonly repo: Repository) {}

  private get store(): Store {
    return this.repo.store
  }

  async list(filter: SnapshotFilter = {}): Promise<SnapshotRecord[]> {
    const { records } = await listSnapshots(this.store)
    const [lk, lv] = filter.label?.split("=", 2) ?? []
    return records
      .filter((s) => filter.boxId === undefined || s.boxId === filter.boxId)
      .filter((s) => filter.name === undefined || s.name === filter.name)
      .filter((s) => lk === undefined || (lk in (s.labels ?? {}) && (lv === undefined || s.labels[lk] === lv)))
      .sort(creationOrder)
  }

  /** By id, name (the newest snapshot of that name), "latest" (the newest of all), or unique id prefix. */
  async get(idOrName: string): Promise<SnapshotRecord> {
    if (typeof idOrName !== "string" || idOrName === "") throw new BadInputError("a snapshot id or name is required")
    if (/^snap_[0-9a-f]{16}$/.test(idOrName)) {
      try {
        return await readSnapshot(this.store, idOrName)
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err
        throw new NotFoundError(`no snapshot ${idOrName}; "cairn ls" lists the snapshots`, { snapshot: idOrName })
      }
    }
    const all = await this.list()
    const byName = all.filter((s) => s.name === idOrName)
    if (byName.length > 0) return byName[byName.length - 1]!
    if (idOrName === "latest") {
      if (all.length === 0) throw new NotFoundError(`no snapshots yet; "latest" names the newest one`, { snapshot: idOrName })
      return all[all.length - 1]!
    }
    const byPrefix = all.filter((s) => s.id.startsWith(idOrName) || s.id.startsWith(`snap_${idOrName}`))
    if (byPrefix.length === 1) return byPrefix[0]!
    if (byPrefix.length > 1) throw new BadInputError(`${idOrName} matches ${byPrefix.length} snapshots; give more of the id`)
    throw new NotFoundError(`no snapshot with id or name ${JSON.stringify(idOrName)}; "cairn ls" lists the snapshots`, {
      snapshot: idOrName,
    })
  }

  /** Snapshots a directory. The previous snapshot of the same box or directory is its parent. */
  async create(dir: string, opts: SnapshotOptions = {}): Promise<SnapshotResult> {
    const root = path.resolve(dir)
    // looked for while the snapshot is taken: only its record names it
    const parent = opts.parent ?? newestSnapshot(this.store, (o) => (opts.boxId ? o.boxId === opts.boxId : o.source === root))
    // a snapshot that fails before its record awaits the search leaves no rejection unhandled
    if (parent instanceof Promise) parent.catch(() => {})
    return createSnapshot(this.store, root, { ...opts, parent, cacheKey: opts.cacheKey ?? opts.boxId })
  }

  /**
   * Restores a snapshot into a new or empty directory. Restores of one
   * snapshot asked for together, with the same options (Promise.all over
   * several destinations, several Box.fromSnapshot at once), are done in one
   * pass: each chunk is read, decoded and checked once and written into every
   * destination (result.sharedWith says with how many others). Each still
   * settles on its own. A restore given an abort signal runs alone.
   */
  async restore(idOrName: string, dest: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    const { statCacheKey, onProgress, ...shared } = opts
    if (shared.signal) {
      const snapshot = await this.get(idOrName)
      const { restoreSnapshot } = await import("./restore.js")
      return restoreSnapshot(this.store, snapshot, dest, opts)
    }
    const key = JSON.stringify([shared.subPath ?? "/", Boolean(shared.overwrite), shared.owners ?? null, shared.cache ?? true, Boolean(shared.link), shared.writers ?? true])
    let batch = this.batches.get(key)
    if (!batch) {
      const opened: RestoreBatch = { members: [] }
      this.batches.set(key, (batch = opened))
      void this.runBatch(key, shared, opened)
    }
    const members = batch.members
    return new Promise((resolve, reject) => members.push({ idOrName, target: { dest, statCacheKey, onProgress }, resolve, reject }))
  }

  /**
   * Restores a snapshot into several destinations in one pass (each chunk
   * read, decoded and checked once); each destination settles on its own, in
   * the order given.
   */
  async restoreMany(idOrName: string, targets: readonly RestoreTarget[], opts: SharedRestoreOptions = {}): Promise<Array<PromiseSettledResult<RestoreResult>>> {
    const snapshot = await this.get(idOrName)
    const { restoreSnapshotMany } = await import("./restore.js")
    return restoreSnapshotMany(this.store, snapshot, targets, opts)
  }

  /** Restores asked for together, by their options; one is open until its members' snapshot records are read. */
  private readonly batches = new Map<string, RestoreBatch>()

  /**
   * Runs a batch: its members' snapshots are looked up (a name, an id and
   * "latest" naming one snapshot are one), then each snapshot is restored in
   * one pass into all of its members' destinations.
   */
  private async runBatch(key: string, opts: SharedRestoreOptions, batch: RestoreBatch): Promise<void> {
    const close = () => {
      if (this.batches.get(key) === batch) this.batches.delete(key)
    }
    try {
      const { restoreSnapshotMany } = await import("./restore.js")
      // restores asked for in this turn of the event loop, or while the records are read, join this one
      await new Promise((resolve) => setImmediate(resolve))
      const records = new Map<string, Promise<SnapshotRecord>>()
      while (batch.members.some((m) => !records.has(m.idOrName))) {
        for (const m of batch.members) if (!records.has(m.idOrName)) records.set(m.idOrName, this.get(m.idOrName))
        await Promise.allSettled(records.values())
      }
      close()
      const bySnapshot = new Map<string, { snapshot: SnapshotRecord; members: RestoreBatch["members"] }>()
      for (const m of batch.members) {
        const found = await records.get(m.idOrName)!.catch((err: unknown) => void m.reject(err))
        if (!found) continue
        const group = bySnapshot.get(found.id) ?? { snapshot: found, members: [] }
        bySnapshot.set(found.id, group)
        group.members.push(m)
      }
      await Promise.all(
        [...bySnapshot.values()].map(async ({ snapshot, members }) => {
          try {
            const outcomes = await restoreSnapshotMany(this.store, snapshot, members.map((m) => m.target), opts)
            outcomes.forEach((o, i) => (o.status === "fulfilled" ? members[i]!.resolve(o.value) : members[i]!.reject(o.reason)))
          } catch (err) {
            for (const m of members) m.reject(err)
          }
        }),
      )
    } catch (err) {
      close()
      for (const m of batch.members) m.reject(err)
    }
  }

  /** Changes a snapshot's name, labels, pin or expiry (its contents never change). */
  async update(
    idOrName: string,
    changes: { name?: string; labels?: Record<string, string>; pinned?: boolean; expiresAt?: string | null },
  ): Promise<SnapshotRecord> {
    const s = await this.get(idOrName)
    checkRecordFields({ name: changes.name, labels: changes.labels, expiresAt: changes.expiresAt })
    const next: SnapshotRecord = { ...s }
    if (changes.name !== undefined) next.name = changes.name
    if (changes.labels !== undefined) next.labels = changes.labels
    if (changes.pinned !== undefined) {
      if (changes.pinned) next.pinned = true
      else delete next.pinned
    }
    if (changes.expiresAt === null) delete next.expiresAt
    else if (changes.expiresAt !== undefined) next.expiresAt = new Date(changes.expiresAt).toISOString()
    await this.store.putRecord("snapshots", s.id, next)
    return next
  }

  /** Removes snapshot records; their data becomes reclaimable by gc. */
  async delete(ids: string | string[]): Promise<string[]> {
    const list = Array.isArray(ids) ? ids : [ids]
    const records = await Promise.all(list.map((id) => this.get(id)))
    for (const s of records) await this.store.deleteRecord("snapshots", s.id)
    return records.map((s) => s.id)
  }

  /** Lists a directory inside a snapshot without restoring it. */
  async listFiles(idOrName: string, dirPath = "/"): Promise<FileInfo[]> {
    const snapshot = await this.get(idOrName)
    const entry = await resolvePath(this.store, snapshot.tree, dirPath)
    const prefix = dirPath.split("/").filter((n) => n && n !== ".").join("/")
    const join = (name: string) => `/${prefix ? `${prefix}/` : ""}${name}`
    if (entry.type !== "dir") {
      return [toInfo(entry.name, `/${prefix}`, entry)]
    }
    const tree = await loadTree(this.store, entry.tree)
    return tree.entries.map((e) => toInfo(e.name, join(e.name), e))
  }

  /** Every path of a snapshot (for `cairn show -r` and tests). */
  async walk(idOrName: string): Promise<FileInfo[]> {
    const snapshot = await this.get(idOrName)
    return (await flattenTree(this.store, snapshot.tree)).map((p) => toInfo(p.entry.name, `/${p.rel}`, p.entry))
  }

  /** Added, removed and modified paths between snapshot a and snapshot b, or a live directory b (live: true). */
  async diff(a: string, b: string, opts: { live?: boolean } = {}): Promise<DiffResult> {
    const left = await this.get(a)
    const { diffLive, diffTrees } = await import("./diff.js")
    if (opts.live) return this.store.withLock(false, "diff", () => diffLive(this.store, left.tree, b, { exclude: left.exclude }))
    const right = await this.get(b)
    return this.store.withLock(false, "diff", () => diffTrees(this.store, left.tree, right.tree))
  }

  /** Per-directory logical, stored and unique bytes of one snapshot. */
  async du(idOrName: string, opts: { maxDepth?: number } = {}): Promise<DuRow[]> {
    const snapshot = await this.get(idOrName)
    const { diskUsage } = await import("./accounting.js")
    return this.store.withLock(false, "du", () => diskUsage(this.store, snapshot, opts))
  }

  /** What deleting each snapshot would free now (stored bytes only it references). */
  async uniqueBytes(ids: string[]): Promise<Map<string, number>> {
    const records = await Promise.all(ids.map((id) => this.get(id)))
    const { uniqueBytes } = await import("./accounting.js")
    return this.store.withLock(false, "accounting", () => uniqueBytes(this.store, records.map((r) => r.id)))
  }

  /** Writes a snapshot (or a sub-path) as a tar stream. */
  async exportTar(idOrName: string, out: NodeJS.WritableStream, opts: { subPath?: string; signal?: AbortSignal } = {}) {
    const { exportTar } = await import("./tar.js")
    return exportTar(this.store, await this.get(idOrName), out, opts)
  }

  /** Makes a snapshot straight from a tar stream; hostile entries are refused (BAD_INPUT). */
  async importTar(input: NodeJS.ReadableStream, opts: Parameters<typeof importTar>[2] = {}) {
    return (await import("./tar.js")).importTar(this.store, input, opts)
  }

  /** Reads one file of a snapshot as a stream, each chunk hash-checked. */
  async readFile(idOrName: string, filePath: string): Promise<Readable> {
    const snapshot = await this.get(idOrName)
    let entry = await resolvePath(this.store, snapshot.tree, filePath)
    if (entry.type === "file" && entry.link !== undefined) entry = await resolvePath(this.store, snapshot.tree, entry.link)
    if (entry.type === "symlink") {
      throw new BadInputError(`${filePath} is a symlink in the snapshot (to ${JSON.stringify(entry.target)}), not a file; read the file it points to`)
    }
    if (entry.type !== "file") throw new BadInputError(`${filePath} is a directory in the snapshot, not a file; list it instead (cairn show SNAP PATH)`)
    const chunks = entry.chunks ?? []
    const store = this.store
    const { Readable } = await import("node:stream")
    return Readable.from(
      (async function* () {
        for (const id of chunks) yield Buffer.from(await store.getBlob(id as BlobId))
      })(),
      { objectMode: false },
    )
  }
}

/**
 * Handles are shared within a process only when they name the same
 * repository the same way: one location, endpoint, region and cache.
 */
function shareKey(location: string, opts: OpenOptions): string {
  const s3 = location.startsWith("s3://")
  return JSON.stringify([
    location,
    s3 ? (opts.endpoint ?? process.env.CAIRN_S3_ENDPOINT ?? "") : "",
    s3 ? (opts.region ?? process.env.AWS_REGION ?? "") : "",
    opts.cacheDir ?? process.env.CAIRN_CACHE_DIR ?? "",
  ])
}

function toInfo(name: string, p: string, e: import("./tree.js").TreeEntry): FileInfo {
  const ms = Number(BigInt(e.mtime) / 1_000_000n)
  return {
    name,
    path: p,
    size: e.type === "symlink" ? 0 : e.size,
    isDir: e.type === "dir",
    type: e.type,
    mode: e.mode,
    modTime: new Date(ms).toISOString(),
    ...(e.type === "symlink" ? { target: e.target } : {}),
  }
}

async function makeBackend(location: string, opts: OpenOptions): Promise<{ backend: ObjectStore; cacheDir: string; workspaceRoot: string }> {
  const envCache = process.env.CAIRN_CACHE_DIR
  if (location.startsWith("s3://")) {
    const { S3ObjectStore, parseS3Url } = await import("../store/backends/s3.js")
    const { bucket, prefix } = parseS3Url(location)
    const backend = new S3ObjectStore({ bucket, prefix, endpoint: opts.endpoint ?? process.env.CAIRN_S3_ENDPOINT, region: opts.region, forcePathStyle: opts.forcePathStyle })
    const base = opts.cacheDir ?? envCache ?? path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "cairn")
    const key = createHash("sha256").update(`${opts.endpoint ?? process.env.CAIRN_S3_ENDPOINT ?? ""}|${location}`).digest("hex").slice(0, 16)
    return {
      backend,
      cacheDir: opts.cacheDir ?? path.join(base, key),
      workspaceRoot: path.join(os.homedir(), ".cairn-workspaces"),
    }
  }
  const st = await fsp.stat(location).catch(() => undefined)
  if (st && !st.isDirectory()) throw new BadInputError(`${location} is not a directory; give a repository directory`)
  if (!st) {
    if (opts.create === false) throw new CairnError("NOT_A_REPOSITORY", `no repository at ${location}; run "cairn init" first`)
    await makeDirs(location, { what: "repository directory", fix: "choose a location you can write to (--repo, or $CAIRN_REPO)" })
  }
  return {
    backend: new FsObjectStore(location),
    cacheDir: opts.cacheDir ?? (envCache ? path.join(envCache, createHash("sha256").update(location).digest("hex").slice(0, 16)) : path.join(location, "cache")),
    workspaceRoot: path.join(location, "workspaces"),
  }
}
