// The local index: blob id -> location, answered in batches.
//
// It is a cache of the repository's index files, kept in LevelDB under the
// host's cache directory ("b" + id -> location, "f" + index file name -> 1 for
// every index file already loaded). Loading a large index file takes several
// batches; an "l" + name key marks it from the first batch to the last, so
// that a cache left by a process killed part-way is noticed when opened (its
// entries have no file record, and a gc elsewhere could delete their packs
// unseen) and rebuilt. LevelDB admits one process at a time; a
// second process that finds it locked falls back to an in-memory index built
// from the index files, so two processes on one repository both work. Lookups
// go through getMany: one awaited get per chunk would cap out near 22k/s,
// getMany does ~480k keys/s here.

import { promises as fsp } from "node:fs"
import path from "node:path"
import type { ChainedBatch, Level } from "level"
import type { BlobId } from "./ids.js"

export interface BlobLocation {
  pack: string
  kind: number
  codec: number
  offset: number
  length: number
  rawLength: number
}

export interface BlobIndex {
  /** "level" or "memory" (the fallback when another process holds the cache). */
  readonly kind: "level" | "memory"
  getMany(ids: readonly BlobId[]): Promise<(BlobLocation | undefined)[]>
  add(entries: ReadonlyArray<readonly [BlobId, BlobLocation]>, indexFile?: string): Promise<void>
  /**
   * Replaces the loaded index files `dropFiles` by `addFile`: deletes the
   * entries of `remove`, writes those of `put`, and only then changes the
   * file records, so that a crash part-way leaves a cache that still names
   * files which are gone, and the next sync rebuilds it.
   */
  replace(changes: IndexChanges): Promise<void>
  loadedFiles(): Promise<Set<string>>
  clear(): Promise<void>
  close(): Promise<void>
}

export interface IndexChanges {
  remove: readonly BlobId[]
  put: ReadonlyArray<readonly [BlobId, BlobLocation]>
  dropFiles: readonly string[]
  addFile: string
}

/** The value of an "f" key: the index file is loaded. */
const FILE_LOADED = new Uint8Array([1])

const LOC_BYTES = 32 + 2 + 12

/** Entries LevelIndex writes to LevelDB in one batch (~2 MB of LevelDB's memory for puts). */
export const ADD_SLICE = 16_384

/**
 * The values of many locations: views into one buffer, each pack's id decoded
 * once. A buffer of its own for each (and the id decoded for each) cost a
 * first snapshot's ~17,000 entries ~100 ms of collection and allocation.
 */
function encodeLocs(locs: readonly BlobLocation[]): Uint8Array[] {
  const all = Buffer.allocUnsafe(locs.length * LOC_BYTES)
  const packs = new Map<string, Buffer>()
  return locs.map((loc, i) => {
    let pack = packs.get(loc.pack)
    if (pack === undefined) packs.set(loc.pack, (pack = Buffer.from(loc.pack, "hex")))
    const at = i * LOC_BYTES
    pack.copy(all, at)
    all[at + 32] = loc.kind
    all[at + 33] = loc.codec
    all.writeUInt32LE(loc.offset, at + 34)
    all.writeUInt32LE(loc.length, at + 38)
    all.writeUInt32LE(loc.rawLength, at + 42)
    return all.subarray(at, at + LOC_BYTES)
  })
}

function decodeLoc(v: Uint8Array): BlobLocation {
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  return {
    pack: b.toString("hex", 0, 32),
    kind: b[32]!,
    codec: b[33]!,
    offset: b.readUInt32LE(34),
    length: b.readUInt32LE(38),
    rawLength: b.readUInt32LE(42),
  }
}

export class MemoryIndex implements BlobIndex {
  readonly kind = "memory" as const
  private readonly map = new Map<string, BlobLocation>()
  private readonly files = new Set<string>()

  async getMany(ids: readonly BlobId[]): Promise<(BlobLocation | undefined)[]> {
    return ids.map((id) => this.map.get(id))
  }
  async add(entries: ReadonlyArray<readonly [BlobId, BlobLocation]>, indexFile?: string): Promise<void> {
    for (const [id, loc] of entries) this.map.set(id, loc)
    if (indexFile) this.files.add(indexFile)
  }
  async replace(changes: IndexChanges): Promise<void> {
    for (const id of changes.remove) this.map.delete(id)
    await this.add(changes.put)
    for (const f of changes.dropFiles) this.files.delete(f)
    this.files.add(changes.addFile)
  }
  async loadedFiles(): Promise<Set<string>> {
    return new Set(this.files)
  }
  async clear(): Promise<void> {
    this.map.clear()
    this.files.clear()
  }
  async close(): Promise<void> {}
}

export class LevelIndex implements BlobIndex {
  readonly kind = "level" as const
  /**
   * No "b" key is in the database: lookups answer at once. A first snapshot
   * into a new repository looks up every chunk it reads (~15,000 for the
   * bench's workspace, ~160 ms of the main thread's time in getMany, more on
   * the thread pool) and finds none. Known when opened (one key read); the
   * first write of entries ends it (a clear leaves it as it is: asking the
   * database is always right).
   */
  private holdsNone: boolean

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    private readonly dir: string,
    holdsNone: boolean,
  ) {
    this.holdsNone = holdsNone
  }

  /**
   * Opens the cache; returns undefined when another process holds it.
   * LevelDB creates its files under the process umask, which cairn does not
   * rely on: the directory is made 0700 before LevelDB writes into it (so
   * nothing inside is reachable by others), and its files are made 0600 at
   * open and close, as FORMAT.md promises for everything in a cache.
   */
  static async open(dir: string): Promise<LevelIndex | undefined> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
    await fsp.chmod(dir, 0o700)
    const { Level } = await import("level") // on first use only: loading it costs ~40 ms
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if ((err as { code?: string }).code === "LEVEL_DATABASE_NOT_OPEN" && cause?.code === "LEVEL_LOCKED") return undefined
      throw err
    }
    await privateFiles(dir)
    for await (const _ of db.keys({ gte: "l", lt: "m", limit: 1 })) {
      await db.clear() // a load was interrupted: start over from the index files
    }
    let holdsNone = true
    for await (const _ of db.keys({ gte: "b", lt: "c", limit: 1 })) holdsNone = false
    return new LevelIndex(db, dir, holdsNone)
  }

  async getMany(ids: readonly BlobId[]): Promise<(BlobLocation | undefined)[]> {
    if (ids.length === 0) return []
    if (this.holdsNone) return ids.map(() => undefined)
    const values = await this.db.getMany(ids.map((id) => `b${id}`))
    return values.map((v) => (v ? decodeLoc(v) : undefined))
  }

  /** Writes entries (sliced), with the "l" key from the first batch to the last (see the header). */
  async add(entries: ReadonlyArray<readonly [BlobId, BlobLocation]>, indexFile?: string): Promise<void> {
    if (entries.length > 0) this.holdsNone = false
    await this.sliced(entries, (batch, slice, first, last) => {
      if (first && indexFile) batch.put(`l${indexFile}`, FILE_LOADED)
      const values = encodeLocs(slice.map(([, loc]) => loc))
      slice.forEach(([id], i) => batch.put(`b${id}`, values[i]!))
      if (last && indexFile) batch.del(`l${indexFile}`).put(`f${indexFile}`, FILE_LOADED)
    })
  }

  async replace(changes: IndexChanges): Promise<void> {
    if (changes.remove.length > 0) await this.sliced(changes.remove, (batch, slice) => slice.forEach((id) => batch.del(`b${id}`)))
    await this.add(changes.put)
    // one batch, last: LevelDB applies it atomically
    await this.db.batch([
      ...changes.dropFiles.map((f) => ({ type: "del" as const, key: `f${f}` })),
      { type: "put", key: `f${changes.addFile}`, value: FILE_LOADED },
    ])
  }

  /**
   * Writes items in LevelDB batches of ADD_SLICE, one after another (at least
   * one, for an add that only marks its file), each operation handed to
   * LevelDB as `fill` makes it (a chained batch).
   *
   * Why: a first snapshot adds all its entries (~17,000 for the bench's
   * workspace) at its end, and an array of operations (an object, a key
   * string and a value view each, and abstract-level's copy of the array)
   * was ~5 MB alive at once at the snapshot's peak of memory; a chained
   * batch's operations die young, and LevelDB holds each put in ~120 bytes.
   */
  private async sliced<T>(items: readonly T[], fill: (batch: ChainedBatch<Level<string, Uint8Array>, string, Uint8Array>, slice: readonly T[], first: boolean, last: boolean) => void): Promise<void> {
    let at = 0
    do {
      const slice = items.slice(at, at + ADD_SLICE)
      const batch = this.db.batch()
      fill(batch, slice, at === 0, at + slice.length >= items.length)
      at += slice.length
      await batch.write()
    } while (at < items.length)
  }

  async loadedFiles(): Promise<Set<string>> {
    const files = new Set<string>()
    for await (const key of this.db.keys({ gt: "f", lt: "g" })) files.add(key.slice(1))
    return files
  }

  async clear(): Promise<void> {
    await this.db.clear()
  }

  async close(): Promise<void> {
    await this.db.close()
    await privateFiles(this.dir)
  }
}

/** chmod 0600 every file of a directory that is group- or world-accessible. */
async function privateFiles(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const file = path.join(dir, name)
    const st = await fsp.lstat(file).catch(() => undefined)
    if (st?.isFile() && (st.mode & 0o077) !== 0) await fsp.chmod(file, 0o600).catch(() => {})
  }
}
