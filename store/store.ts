// The content-addressed store: blobs in packs, an index, named records.
//
// Write path (the commit protocol, see FORMAT.md):
//   1. storeBlob compresses a blob (thread pool) and appends it to the open
//      pack: in memory, or, where the backend can write an object in parts
//      (a local directory), into a temp file as the pack fills (open-pack.ts).
//      Until its pack is durable a blob lives in `pending`, where reads and
//      dedup checks of this process find it.
//   2. A pack that reaches the target size is sealed and put (temp + fsync +
//      rename, the temp file named for its header's hash only then); only then do its
//      blobs move to `unindexed`.
//   3. flush() seals the last pack, waits for every pack, writes one index
//      file listing them (atomically, named by its hash) and resolves; only
//      then are they added to the local index cache, while the caller goes
//      on (they stay in `unindexed` until that is done; syncs and close wait
//      for it). Callers write a record that references blobs (a snapshot)
//      only after flush() resolved.
// A crash at any point leaves packs without an index file at worst: their
// blobs are invisible, nothing references them, gc reclaims them.
//
// Read path: index lookup -> ranged get of the pack -> decode -> sha256 check.
// A blob whose bytes do not hash to its id is an IntegrityError naming the
// blob and the pack; wrong bytes are never returned.

import { promises as fsp } from "node:fs"
import path from "node:path"
import type { ObjectStore } from "./backend.js"
import { SMALL_BLOB, codecFromName, decode, encode, encodeInline, warmCompressor, type Codec, type CodecName } from "./codec.js"
import {
  BadInputError,
  CairnError,
  FormatVersionError,
  IntegrityError,
  NotFoundError,
} from "./errors.js"
import { makeDirs } from "./dirs.js"
import { decodeIndexFile, encodeIndexFile, type PackListing } from "./index-file.js"
import { hashBytes, randomId, type BlobId } from "./ids.js"
import { LevelIndex, MemoryIndex, type BlobIndex, type BlobLocation } from "./local-index.js"
import { acquireLock, type Lock, type LockInfo } from "./lock.js"
import { PackBuffers, type FillingPack } from "./open-pack.js"
import { BLOB_TREE, packKey, parsePack, type PackEntry } from "./pack.js"
import { Semaphore, mapLimit } from "./concurrency.js"

export const FORMAT_VERSION = 1

export interface ChunkerConfig {
  minSize: number
  avgSize: number
  maxSize: number
  /** hex; derives the gear table, so chunk boundaries differ per repository */
  seed: string
}

export interface RepoConfig {
  version: number
  id: string
  hash: "sha256"
  codec: CodecName
  packSize: number
  chunker: ChunkerConfig
  createdAt: string
}

export interface StoreOptions {
  backend: ObjectStore
  /** Host-local cache directory (LevelDB index); not part of the repository. */
  cacheDir: string
  /** How long to wait for another process's lock; default 60 s. */
  lockWaitMs?: number
  /** Told once per lock when it must wait for another process's (see LockOptions.onWait). */
  onLockWait?: (holder: LockInfo) => void
}

export interface PutResult {
  id: BlobId
  /** true if this call added the blob to the store */
  added: boolean
  /** stored (compressed) length in its pack */
  storedLength: number
}

interface PendingBlob {
  entry: PackEntry
  /** the pack it is in, which reads it back until the pack is written */
  pack: FillingPack
}

export const DEFAULT_PACK_SIZE = 8 * 1024 * 1024
/** FastCDC sizes of a new repository: why 128 KiB, see FORMAT.md ("Why 128 KiB average"). */
export const DEFAULT_CHUNKER = { minSize: 32 * 1024, avgSize: 128 * 1024, maxSize: 512 * 1024 }

/** Names what is wrong with a parsed record, or returns undefined when it is well formed. */
export type RecordCheck = (value: unknown, name: string) => string | undefined

export class Store {
  private pending = new Map<BlobId, PendingBlob>()
  private inflight = new Map<BlobId, Promise<PutResult>>()
  private unindexed = new Map<BlobId, BlobLocation>()
  private written: PackListing[] = []
  private readonly packBuffers: PackBuffers
  private open: FillingPack
  private packWrites = new Set<Promise<void>>()
  /** The open pack's sealing, while it waits for the previous pack's write (sealPack). */
  private sealing?: Promise<void>
  private writeError: unknown
  private readonly codec: Codec
  /** Compressions in flight: few large blobs (memory), many small ones (they go to the workers in batches; see codec-pool.ts). */
  private readonly encodeSlots = new Semaphore(8)
  private readonly smallEncodeSlots = new Semaphore(64)
  private closed = false
  private lastSync = 0
  /** The local index, opened and synced on first use (see openIndex). */
  private indexReady?: Promise<BlobIndex>
  /** Flushed blobs being added to the local index (see flush); they stay in `unindexed` until added. */
  private readonly indexAdds = new Set<Promise<void>>()
  /** Index files that failed to decode: skipped (their blobs look absent) until rebuild-index replaces them. */
  private readonly damagedIndex = new Set<string>()

  private constructor(
    readonly backend: ObjectStore,
    readonly config: RepoConfig,
    readonly cacheDir: string,
    private readonly lockWaitMs: number,
    private readonly onLockWait?: (holder: LockInfo) => void,
  ) {
    this.codec = codecFromName(config.codec)
    // packs are written as they fill where the backend can (a local directory), else held whole until sealed
    this.packBuffers = new PackBuffers(config.packSize, backend.createWriter ? () => backend.createWriter!() : undefined)
    this.open = this.packBuffers.open()
  }

  /** Creates a repository in an empty location and opens it. */
  static async init(
    opts: StoreOptions & { config?: Partial<Pick<RepoConfig, "codec" | "packSize">> & { chunker?: Partial<ChunkerConfig> } },
  ): Promise<Store> {
    const existing = await opts.backend.list("")
    if (existing.some((o) => o.key === "config")) {
      throw new CairnError("ALREADY_EXISTS", `a repository already exists at ${opts.backend.location}`)
    }
    const foreign = existing.filter((o) => !o.key.startsWith("cache/"))
    if (foreign.length > 0) {
      throw new CairnError(
        "NOT_A_REPOSITORY",
        `${opts.backend.location} is not empty and holds no cairn repository; choose an empty or new location`,
      )
    }
    const config: RepoConfig = {
      version: FORMAT_VERSION,
      id: randomId("repo"),
      hash: "sha256",
      codec: opts.config?.codec ?? "brotli",
      packSize: opts.config?.packSize ?? DEFAULT_PACK_SIZE,
      chunker: {
        ...DEFAULT_CHUNKER,
        seed: (await import("node:crypto")).randomBytes(16).toString("hex"),
        ...opts.config?.chunker,
      },
      createdAt: new Date().toISOString(),
    }
    validateConfig(config, opts.backend.location)
    const created = await opts.backend.putIfAbsent("config", Buffer.from(JSON.stringify(config, null, 2) + "\n"))
    if (!created) throw new CairnError("ALREADY_EXISTS", `a repository already exists at ${opts.backend.location}`)
    return Store.open(opts)
  }

  static async open(opts: StoreOptions): Promise<Store> {
    let raw: Uint8Array
    try {
      raw = await opts.backend.get("config")
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new CairnError(
          "NOT_A_REPOSITORY",
          `${opts.backend.location} is not a cairn repository (no config); run "cairn init" there or pass the right --repo`,
          { data: { location: opts.backend.location } },
        )
      }
      throw err
    }
    let config: RepoConfig
    try {
      config = JSON.parse(Buffer.from(raw).toString("utf8")) as RepoConfig
    } catch {
      throw new IntegrityError(`the config of the repository at ${opts.backend.location} is not valid JSON`)
    }
    validateConfig(config, opts.backend.location)
    await makeDirs(opts.cacheDir, { what: "cache directory", fix: "set CAIRN_CACHE_DIR (or the cacheDir option) to a writable directory" })
    return new Store(opts.backend, config, opts.cacheDir, opts.lockWaitMs ?? 60_000, opts.onLockWait)
  }

  /**
   * The local index, opened and synced with the repository's index files on
   * first use: what needs no lookup (a snapshot of an unchanged tree, whose
   * incremental cache vouches for its blobs) costs neither loading LevelDB
   * (~40 ms of module loading) nor its lock.
   */
  openIndex(): Promise<BlobIndex> {
    this.indexReady ??= this.startIndex().catch((err: unknown) => {
      this.indexReady = undefined
      throw err
    })
    return this.indexReady
  }

  private async startIndex(): Promise<BlobIndex> {
    const index = (await LevelIndex.open(`${this.cacheDir}/index`)) ?? new MemoryIndex()
    try {
      await this.syncInto(index)
    } catch (err) {
      await index.close()
      throw err
    }
    return index
  }

  /**
   * Loads index files this host has not seen; rebuilds the cache if any it
   * knew vanished (gc or rebuild-index replaced them). A damaged index file is
   * skipped, not fatal: its blobs look absent (a snapshot stores them again,
   * a restore reports them missing), verify reports it, and rebuild-index
   * replaces it from the packs' own headers.
   */
  async syncIndex(): Promise<{ loaded: number; rebuilt: boolean; damaged: string[] }> {
    return this.syncInto(await this.settledIndex())
  }

  /**
   * The local index once the additions flush left running have settled: for
   * whatever reads it whole or changes more than its own entries (a sync
   * would load a file still being added a second time; a clear could be
   * followed by the rest of an addition). Lookups need not wait: what is
   * being added is still in `unindexed`.
   */
  private async settledIndex(): Promise<BlobIndex> {
    await Promise.allSettled(this.indexAdds)
    return this.openIndex()
  }

  private async syncInto(index: BlobIndex): Promise<{ loaded: number; rebuilt: boolean; damaged: string[] }> {
    this.lastSync = Date.now()
    const present = await this.indexFileNames()
    for (const name of this.damagedIndex) if (!present.has(name)) this.damagedIndex.delete(name)
    let known = await index.loadedFiles()
    let rebuilt = false
    if ([...known].some((f) => !present.has(f))) {
      await index.clear()
      known = new Set()
      rebuilt = true
    }
    const missing = [...present].filter((f) => !known.has(f))
    await mapLimit(missing, 8, async (name) => {
      let listing
      try {
        listing = decodeIndexFile(await this.backend.get(`index/${name}`), name)
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err
        this.damagedIndex.add(name)
        return
      }
      await index.add(locations(listing), name)
    })
    return { loaded: missing.length, rebuilt, damaged: [...this.damagedIndex].sort() }
  }

  /** Index files whose blobs this host's index holds (as of the last sync or flush). */
  async loadedIndexFiles(): Promise<Set<string>> {
    return (await this.settledIndex()).loadedFiles()
  }

  /**
   * The repository's index files, as listed now. While the files that listed
   * some blobs are all listed, no pack holding those blobs was deleted (gc
   * replaces an index file before it deletes a pack the file names).
   */
  async indexFileNames(): Promise<Set<string>> {
    return new Set((await this.backend.list("index/")).map((o) => o.key.slice("index/".length)))
  }

  /**
   * Brings the local cache up to date after gc replaced the index files
   * `replaced` by the single file `name`, by applying the difference gc knows
   * (`remove`: blobs the new file does not list; `put`: the blobs whose
   * location may differ from the cached one) instead of clearing the cache
   * and loading every entry again. That is only right if the cache holds the
   * replaced files and nothing else (the new one aside); otherwise the cache
   * is rebuilt from the index files.
   */
  async replaceIndexFiles(
    name: string,
    replaced: readonly string[],
    delta: { remove: readonly BlobId[]; put: ReadonlyArray<readonly [BlobId, BlobLocation]> },
  ): Promise<void> {
    const index = await this.settledIndex()
    const known = await index.loadedFiles()
    known.delete(name)
    const same = known.size === replaced.length && replaced.every((f) => known.has(f))
    if (same && this.damagedIndex.size === 0) {
      await index.replace({ ...delta, dropFiles: replaced, addFile: name })
    } else {
      await index.clear()
    }
    await this.syncIndex()
  }

  /** Index files this store found damaged (see syncIndex). */
  damagedIndexFiles(): string[] {
    return [...this.damagedIndex].sort()
  }

  /**
   * Decodes every index file of the repository, whether or not this host has
   * loaded it already, and returns those that fail: verify's check of the
   * shared index, which other hosts rebuild their caches from.
   */
  async checkIndexFiles(): Promise<{ files: number; damaged: Array<{ file: string; reason: string }> }> {
    const files = await this.backend.list("index/")
    const damaged: Array<{ file: string; reason: string }> = []
    await mapLimit(files, 8, async (obj) => {
      const name = obj.key.slice("index/".length)
      try {
        decodeIndexFile(await this.backend.get(obj.key), name)
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err
        damaged.push({ file: obj.key, reason: (err as Error).message })
      }
    })
    damaged.sort((a, b) => (a.file < b.file ? -1 : 1))
    return { files: files.length, damaged }
  }

  /** Drops the local index and rebuilds it from the packs' own headers; writes a fresh index file. */
  async rebuildIndex(): Promise<{ packs: number; blobs: number; damaged: string[] }> {
    const packs = await this.backend.list("data/")
    const listings: PackListing[] = []
    const damaged: string[] = []
    await mapLimit(packs, 4, async (obj) => {
      const pack = obj.key.slice(obj.key.lastIndexOf("/") + 1)
      try {
        listings.push({ pack, entries: parsePack(await this.backend.get(obj.key), pack) })
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err
        damaged.push(pack)
      }
    })
    listings.sort((a, b) => (a.pack < b.pack ? -1 : 1))
    const oldFiles = await this.backend.list("index/")
    const { name, bytes } = encodeIndexFile(listings)
    await this.backend.put(`index/${name}`, bytes)
    for (const old of oldFiles) if (old.key !== `index/${name}`) await this.backend.delete(old.key)
    const index = await this.settledIndex()
    await index.clear()
    await index.add(locations(listings), name)
    return { packs: listings.length, blobs: listings.reduce((n, l) => n + l.entries.length, 0), damaged }
  }

  // ---- locks ----------------------------------------------------------

  lock(exclusive: boolean, what: string): Promise<Lock> {
    return acquireLock(this.backend, { exclusive, what, waitMs: this.lockWaitMs, onWait: this.onLockWait })
  }

  /**
   * Runs fn under a repository lock. The index is synced first: a gc that ran
   * since this store last looked may have deleted packs its cache still
   * names, and dedup against those would commit snapshots that cannot restore.
   * A failure to release the lock does not hide fn's result or error (a lock
   * left behind goes stale and is removed by the next acquirer).
   */
  async withLock<T>(exclusive: boolean, what: string, fn: () => Promise<T>): Promise<T> {
    const lock = await this.lock(exclusive, what)
    try {
      if (this.indexReady) await this.syncIndex() // else it syncs when first opened, under this lock or a later one
      return await fn()
    } finally {
      await lock.release().catch(() => {})
    }
  }

  // ---- blobs ----------------------------------------------------------

  /** Where each blob is stored, or undefined; blobs of this process not yet durable count as present. */
  async locateMany(ids: readonly BlobId[]): Promise<(BlobLocation | "pending" | undefined)[]> {
    const out: (BlobLocation | "pending" | undefined)[] = new Array(ids.length)
    const ask: BlobId[] = []
    const at: number[] = []
    ids.forEach((id, i) => {
      if (this.pending.has(id) || this.inflight.has(id)) out[i] = "pending"
      else {
        const loc = this.unindexed.get(id)
        if (loc) out[i] = loc
        else {
          ask.push(id)
          at.push(i)
        }
      }
    })
    if (ask.length === 0) return out
    const found = await (await this.openIndex()).getMany(ask)
    found.forEach((loc, j) => (out[at[j]!] = loc))
    return out
  }

  /**
   * locateMany for readers: a blob another process wrote after this store
   * synced its index is found by syncing once more (at most every second).
   */
  async locateForRead(ids: readonly BlobId[]): Promise<(BlobLocation | "pending" | undefined)[]> {
    const found = await this.locateMany(ids)
    if (found.every((l) => l !== undefined) || Date.now() - this.lastSync < 1000) return found
    await this.syncIndex()
    const missing = ids.filter((_, i) => found[i] === undefined)
    const again = await this.locateMany(missing)
    let k = 0
    return found.map((l) => (l === undefined ? again[k++] : l))
  }

  async hasMany(ids: readonly BlobId[]): Promise<boolean[]> {
    return (await this.locateMany(ids)).map((l) => l !== undefined)
  }

  /** Stored length of a blob already known to the store (pending or indexed). */
  storedLengthOf(loc: BlobLocation | "pending" | undefined, id: BlobId): number {
    if (loc === undefined) return 0
    if (loc === "pending") return this.pending.get(id)?.entry.length ?? 0
    return loc.length
  }

  /**
   * The result for a blob this process is adding already (pending in the
   * open pack, or in flight), as a second add of it gets it; undefined if it
   * is adding no such blob.
   */
  adding(id: BlobId): Promise<PutResult> | undefined {
    const pending = this.pending.get(id)
    if (pending) return Promise.resolve({ id, added: false, storedLength: pending.entry.length })
    return this.inflight.get(id)?.then((r) => ({ ...r, added: false }))
  }

  /**
   * Tells the store that many new blobs will come soon (a snapshot that found
   * many bytes it has not stored before): their compressors start now, while
   * the caller prepares them (codec.ts, warmCompressor).
   */
  expectBlobs(): void {
    warmCompressor(this.codec)
  }

  /** Adds a blob unless the store has it; checks the index (prefer batching with locateMany). */
  async putBlob(kind: number, data: Uint8Array): Promise<PutResult> {
    const id = hashBytes(data)
    const [loc] = await this.locateMany([id])
    if (loc !== undefined && loc !== "pending") return { id, added: false, storedLength: loc.length }
    return this.storeBlob(kind, id, data)
  }

  /**
   * Adds a blob the caller found missing with locateMany. Concurrent calls for
   * one id are merged; a blob already pending in this process is not added twice.
   * `opts.here`: compressed on the calling thread, not sent to the codec
   * pool (for small blobs made in a burst, whose round trips would hold
   * their bytes, a batch buffer each 256 KiB, and the promises of each).
   */
  storeBlob(kind: number, id: BlobId, data: Uint8Array, opts: { here?: boolean } = {}): Promise<PutResult> {
    this.assertOpen()
    const already = this.adding(id)
    if (already) return already
    // in flight until it settles (encodeAndAppend leaves `inflight` itself: no promise more per blob)
    const work = this.encodeAndAppend(kind, id, data, opts.here === true)
    this.inflight.set(id, work)
    return work
  }

  /** The adding of a blob, as the one in flight for its id until it settles (see adding and locateMany). */
  private inFlight(id: BlobId, work: Promise<PutResult>): Promise<PutResult> {
    const tracked = work.finally(() => this.inflight.delete(id))
    this.inflight.set(id, tracked)
    return tracked
  }

  /** storeBlob's work; it leaves `inflight` when it settles (after its first pause: storeBlob has entered it by then). */
  private async encodeAndAppend(kind: number, id: BlobId, data: Uint8Array, here: boolean): Promise<PutResult> {
    try {
      // compressed here needs no slot; a free slot is taken without a pause (a first snapshot of many small files takes one per blob)
      const slots = data.length <= SMALL_BLOB ? this.smallEncodeSlots : this.encodeSlots
      const release = here ? undefined : (slots.tryAcquire() ?? (await slots.acquire()))
      let encoded
      try {
        // a pause on either path, even when the encoding is done already: storeBlob enters the blob in `inflight`
        // once this returns, and the finally below takes it out
        encoded = await (here ? encodeInline(data, this.codec) : encode(data, this.codec))
      } finally {
        release?.()
      }
      // raw bytes may be a view into a caller's buffer: append copies them, and a compressor's buffer is given back
      const blob = { id, kind, codec: encoded.codec, rawLength: data.length }
      try {
        return this.appendNow(blob, encoded.bytes) ?? (await this.append(blob, encoded.bytes))
      } finally {
        encoded.release?.()
      }
    } finally {
      this.inflight.delete(id)
    }
  }

  /**
   * Copies a blob's stored bytes into the open pack (pending until its pack
   * is written); seals a full pack. While the open pack is full and waits
   * for the previous pack's write, a blob waits with its stored bytes rather
   * than fill another pack: at most two packs (one filling, one being
   * written) are in memory.
   */
  private async append(blob: { id: BlobId; kind: number; codec: number; rawLength: number }, stored: Uint8Array): Promise<PutResult> {
    for (;;) {
      // from the check on without a pause: blobs that waited together fill the pack in turn, not all at once
      const added = this.appendNow(blob, stored)
      if (added) return added
      if (this.writeError) throw this.writeError
      await this.sealPack()
    }
  }

  /**
   * append without a pause, when the open pack has room (a blob's usual
   * case: no promise for it); undefined when it must wait. The blob that
   * fills the pack starts its sealing and does not wait for it: the blobs
   * after it do.
   */
  private appendNow(blob: { id: BlobId; kind: number; codec: number; rawLength: number }, stored: Uint8Array): PutResult | undefined {
    if (this.writeError || this.open.size >= this.config.packSize) return undefined
    // only the entry's own fields: a caller may pass a location from another pack
    const { entry } = this.open.append({ id: blob.id, kind: blob.kind, codec: blob.codec, rawLength: blob.rawLength }, stored)
    this.pending.set(blob.id, { entry, pack: this.open })
    if (this.open.size >= this.config.packSize) this.sealPack().catch((err: unknown) => (this.writeError ??= err))
    return { id: blob.id, added: true, storedLength: entry.length }
  }

  /**
   * Seals the open pack and starts writing it, once the pack before it is
   * written; one sealing at a time, which every caller meanwhile shares.
   */
  private sealPack(): Promise<void> {
    if (this.sealing) return this.sealing
    if (this.packWrites.size === 0) {
      this.sealNow()
      return Promise.resolve()
    }
    this.sealing = (async () => {
      while (this.packWrites.size > 0) await Promise.race(this.packWrites)
      // from here to the swap without a pause: a later call seals the next pack
      this.sealing = undefined
      this.sealNow()
    })()
    return this.sealing
  }

  private sealNow(): void {
    const pack = this.open
    if (pack.entries.length === 0) return
    this.open = this.packBuffers.open()
    const write = this.writePack(pack).catch((err) => {
      // the blobs are not stored: forget them, so that a retry stores them again
      // instead of trusting a pending copy that no pack will ever hold
      for (const e of pack.entries) this.pending.delete(e.id)
      this.writeError ??= err
    }).finally(() => pack.release())
    this.packWrites.add(write)
    void write.finally(() => this.packWrites.delete(write))
  }

  private async writePack(pack: FillingPack): Promise<void> {
    const packId = await pack.write((key, bytes) => this.backend.put(key, bytes))
    for (const e of pack.entries) {
      this.unindexed.set(e.id, { pack: packId, kind: e.kind, codec: e.codec, offset: e.offset, length: e.length, rawLength: e.rawLength })
      this.pending.delete(e.id)
    }
    this.written.push({ pack: packId, entries: pack.entries })
  }

  /**
   * Makes every blob stored so far durable and indexed (see the commit
   * protocol above). Records that reference those blobs may be written after.
   */
  async flush(): Promise<{ packs: number }> {
    this.assertOpen()
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight.values()])
    while (this.open.entries.length > 0) await this.sealPack()
    while (this.packWrites.size > 0) await Promise.all([...this.packWrites])
    this.packBuffers.trim() // an idle store holds no pack memory
    if (this.writeError) {
      const err = this.writeError
      this.writeError = undefined
      throw err
    }
    const written = this.written
    if (written.length === 0) return { packs: 0 }
    this.written = []
    const { name, bytes } = encodeIndexFile(written)
    try {
      await this.backend.put(`index/${name}`, bytes)
    } catch (err) {
      this.written = written.concat(this.written)
      throw err
    }
    // Durable and committed: the index file lists them. The local index takes them in after this
    // resolves (a first snapshot of the bench's workspace: ~17,000 entries, ~140 ms, of which
    // LevelDB's own write goes on while the caller writes its record); until then they are found in
    // `unindexed`. Should it fail, they stay there, and the file, which the local index then does
    // not mark as loaded, is loaded from the repository at the next sync.
    const adding = this.openIndex()
      .then((index) => index.add(locations(written), name))
      .then(
        () => {
          for (const listing of written) for (const e of listing.entries) this.unindexed.delete(e.id)
        },
        () => {},
      )
    this.indexAdds.add(adding)
    void adding.finally(() => this.indexAdds.delete(adding))
    return { packs: written.length }
  }

  async getBlob(id: BlobId): Promise<Uint8Array> {
    const pending = this.pending.get(id)
    // a copy (read gives one): pending bytes live in a pack buffer that is reused once the pack is written
    if (pending) return this.decodeChecked(id, pending.entry.codec, await pending.pack.read(pending.entry), pending.entry.rawLength, "(pending)")
    const [loc] = await this.locateForRead([id])
    if (loc === undefined || loc === "pending") {
      if (loc === "pending") {
        await this.inflight.get(id)
        return this.getBlob(id)
      }
      throw new NotFoundError(`blob ${id} is not in the repository`, { blob: id })
    }
    if (loc.kind === BLOB_TREE && this.backend.remote) return this.readTreeCached(id, loc)
    return this.readBlob(id, loc)
  }

  /**
   * A tree blob of a remote repository, through the host's tree cache:
   * listing, diffing and restoring walk the same trees again and again, and
   * each is a round trip otherwise.
   */
  private async readTreeCached(id: BlobId, loc: BlobLocation): Promise<Uint8Array> {
    const cached = await this.cachedTree(id)
    if (cached) return cached
    const raw = await this.readBlob(id, loc)
    await this.keepTree(id, raw)
    return raw
  }

  /**
   * A tree's raw bytes from the host's tree cache (<cacheDir>/trees/<xx>/<id>),
   * used only if they hash to its id; undefined if absent or damaged.
   */
  async cachedTree(id: BlobId): Promise<Uint8Array | undefined> {
    const cached = await fsp.readFile(this.treeFile(id)).catch(() => undefined)
    return cached && hashBytes(cached) === id ? cached : undefined
  }

  /** Adds checked raw tree bytes to the host's tree cache; best effort. */
  keepTree(id: BlobId, raw: Uint8Array): Promise<void> {
    return this.keepCacheFile(treeName(id), raw)
  }

  /**
   * Writes a file of the host's cache directory (`name` below it) whole: a
   * temp file of its own renamed into place, so that a reader never sees
   * half of it. Best effort: a cache that cannot be written is only a cache.
   */
  async keepCacheFile(name: string, data: Uint8Array | string): Promise<void> {
    const file = path.join(this.cacheDir, name)
    const temp = `${file}.tmp-${randomId("t")}`
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
      await fsp.writeFile(temp, data, { mode: 0o600 })
      await fsp.rename(temp, file)
    } catch {
      await fsp.rm(temp, { force: true }).catch(() => {})
    }
  }

  private treeFile(id: BlobId): string {
    return path.join(this.cacheDir, treeName(id))
  }

  /** Reads one blob from its pack and checks its hash. */
  async readBlob(id: BlobId, loc: BlobLocation): Promise<Uint8Array> {
    const stored = await this.readPackRange(loc.pack, loc.offset, loc.length, id)
    return this.decodeChecked(id, loc.codec, stored, loc.rawLength, loc.pack, loc.kind === BLOB_TREE)
  }

  /**
   * Reads a byte range of a pack (into `into`, when the backend can: see
   * ByteRange); a missing or short pack is an IntegrityError.
   */
  async readPackRange(pack: string, offset: number, length: number, blob?: BlobId, into?: Uint8Array): Promise<Uint8Array> {
    let bytes: Uint8Array
    try {
      bytes = await this.backend.get(packKey(pack), { offset, length, ...(into ? { into } : {}) })
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new IntegrityError(`pack ${pack} is missing from the repository${blob ? ` (it holds blob ${blob})` : ""}`, {
          pack,
          blob,
        })
      }
      throw err
    }
    if (bytes.length !== length) {
      throw new IntegrityError(`pack ${pack} is truncated${blob ? ` (it holds blob ${blob})` : ""}`, { pack, blob })
    }
    return bytes
  }

  /**
   * Decodes stored bytes and checks that they hash to the id. `inline`
   * decodes on this thread whatever the size: for trees, which are small and
   * read before any chunk, so that no pool thread starts just for them.
   */
  async decodeChecked(id: BlobId, codec: number, stored: Uint8Array, rawLength: number, pack: string, inline = false): Promise<Uint8Array> {
    let raw: Uint8Array
    try {
      raw = await decode(codec, stored, rawLength, inline)
    } catch (err) {
      throw new IntegrityError(`blob ${id} in pack ${pack} does not decode: the pack is damaged`, { blob: id, pack }, err)
    }
    if (raw.length !== rawLength || hashBytes(raw) !== id) {
      throw new IntegrityError(`blob ${id} in pack ${pack} does not match its hash: the pack is damaged`, {
        blob: id,
        pack,
      })
    }
    return raw
  }

  // ---- records --------------------------------------------------------

  async putRecord(kind: string, name: string, value: unknown): Promise<void> {
    checkRecordName(kind, name)
    await this.backend.put(`${kind}/${name}`, Buffer.from(JSON.stringify(value, null, 1) + "\n"))
  }

  async createRecord(kind: string, name: string, value: unknown): Promise<boolean> {
    checkRecordName(kind, name)
    return this.backend.putIfAbsent(`${kind}/${name}`, Buffer.from(JSON.stringify(value, null, 1) + "\n"))
  }

  /**
   * Reads a record. `problem` checks the parsed value's shape (the store
   * knows none) and names what is wrong; a record that is not JSON or that
   * fails the check is an IntegrityError.
   */
  async getRecord<T>(kind: string, name: string, problem?: RecordCheck): Promise<T> {
    checkRecordName(kind, name)
    const bytes = await this.backend.get(`${kind}/${name}`)
    let value: unknown
    try {
      value = JSON.parse(Buffer.from(bytes).toString("utf8"))
    } catch (err) {
      throw new IntegrityError(`record ${kind}/${name} is damaged (not valid JSON)`, { record: `${kind}/${name}` }, err)
    }
    const wrong = problem?.(value, name)
    if (wrong !== undefined) throw new IntegrityError(`record ${kind}/${name} is damaged: ${wrong}`, { record: `${kind}/${name}` })
    return value as T
  }

  async listRecordNames(kind: string): Promise<string[]> {
    return (await this.backend.list(`${kind}/`)).map((o) => o.key.slice(kind.length + 1))
  }

  /** Reads every record of a kind; damaged ones are reported, not thrown. */
  async listRecords<T>(kind: string, problem?: RecordCheck): Promise<{ records: T[]; damaged: string[] }> {
    const names = await this.listRecordNames(kind)
    const records: T[] = []
    const damaged: string[] = []
    await mapLimit(names, 32, async (name) => {
      try {
        records.push(await this.getRecord<T>(kind, name, problem))
      } catch (err) {
        if (err instanceof NotFoundError) return
        if (err instanceof IntegrityError) damaged.push(name)
        else throw err
      }
    })
    return { records, damaged: damaged.sort() }
  }

  async deleteRecord(kind: string, name: string): Promise<void> {
    checkRecordName(kind, name)
    await this.backend.delete(`${kind}/${name}`)
  }

  async close(): Promise<void> {
    if (this.closed) return
    await this.flush()
    this.closed = true
    await this.releaseIndex()
    await this.backend.close()
  }

  /** Closes the local index if it was opened (releasing LevelDB's lock), without flushing: what a store whose close failed still holds. */
  async releaseIndex(): Promise<void> {
    await Promise.allSettled(this.indexAdds)
    const index = await this.indexReady?.catch(() => undefined)
    this.indexReady = undefined
    await index?.close()
  }

  private assertOpen(): void {
    if (this.closed) throw new CairnError("BAD_INPUT", "the repository was closed; open it again")
  }

  /**
   * Adds a blob whose stored (encoded) bytes are already known, as gc does
   * when it copies live blobs out of a sparse pack: no decoding, no
   * recompression. Same commit protocol as storeBlob: durable and indexed
   * after flush(). The caller has checked the bytes (decodeChecked).
   */
  async storeEncoded(blob: { id: BlobId; kind: number; codec: number; rawLength: number }, stored: Uint8Array): Promise<PutResult> {
    this.assertOpen()
    const pending = this.pending.get(blob.id)
    if (pending || this.inflight.has(blob.id)) return { id: blob.id, added: false, storedLength: pending?.entry.length ?? stored.length }
    // in flight like storeBlob's (it may wait for room in a pack): a second call meanwhile is not added twice
    return this.inFlight(blob.id, this.append(blob, stored))
  }
}

function locations(listings: readonly PackListing[]): Array<[BlobId, BlobLocation]> {
  const out: Array<[BlobId, BlobLocation]> = []
  for (const { pack, entries } of listings) {
    for (const e of entries) {
      out.push([e.id, { pack, kind: e.kind, codec: e.codec, offset: e.offset, length: e.length, rawLength: e.rawLength }])
    }
  }
  return out
}

function checkRecordName(kind: string, name: string): void {
  if (!/^[a-z]+$/.test(kind) || !/^[A-Za-z0-9_-]{1,128}$/.test(name)) {
    throw new BadInputError(`invalid record name ${kind}/${name}`)
  }
}

function validateConfig(config: RepoConfig, location: string): void {
  if (typeof config !== "object" || config === null || typeof config.version !== "number") {
    throw new IntegrityError(`the config of the repository at ${location} is damaged`)
  }
  if (config.version > FORMAT_VERSION) {
    throw new FormatVersionError(
      `the repository at ${location} has format version ${config.version}, newer than this cairn reads (${FORMAT_VERSION}); upgrade cairn`,
      { version: config.version },
    )
  }
  if (config.version < 1 || config.hash !== "sha256") {
    throw new FormatVersionError(`the repository at ${location} has an unknown format (version ${config.version}, hash ${config.hash})`)
  }
  const c = config.chunker
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
  if (!c || !pow2(c.avgSize) || !(c.minSize > 0 && c.minSize < c.avgSize && c.avgSize < c.maxSize) || c.maxSize > 64 << 20 || !/^[0-9a-f]{32}$/.test(c.seed)) {
    throw new IntegrityError(`the chunker settings in the config at ${location} are invalid`)
  }
  if (!(config.packSize >= 4096 && config.packSize <= 1 << 30)) {
    throw new IntegrityError(`the pack size in the config at ${location} is invalid`)
  }
  codecFromName(config.codec)
}

/** A tree's file in the host's tree cache, below the cache directory. */
function treeName(id: BlobId): string {
  return path.join("trees", id.slice(0, 2), id)
}
