// Ingest: turn byte streams into stored chunks and directories into trees,
// with dedup and exact size accounting. Used by snapshots of directories and
// by tar imports alike.
//
// Pipeline per stream: read -> FastCDC (main thread) -> sha256 (native) ->
// batched dedup lookup -> compress (thread pool) -> pack. Lookups from all
// concurrent streams are gathered into one getMany per tick (LookupBatcher).
// Memory is bounded: each stream keeps at most WINDOW chunks in flight, and
// the store bounds compressions and pack writes in flight.

import type { BlobId } from "../store/ids.js"
import { hashBytes } from "../store/ids.js"
import type { BlobLocation } from "../store/local-index.js"
import { BLOB_DATA, BLOB_TREE } from "../store/pack.js"
import type { Store } from "../store/store.js"
import { throwIfAborted } from "../store/errors.js"
import type { ChunkBatch, FileStat } from "./chunk-reader.js"
import { Chunker, chunkLengths, gearTable, type ChunkerParams } from "./fastcdc.js"
import { encodeTree, type TreeEntry } from "./tree.js"

type Located = BlobLocation | "pending" | undefined

/** Gathers single lookups into batched locateMany calls. */
export class LookupBatcher {
  private queue: Array<{ id: BlobId; resolve: (l: Located) => void; reject: (e: unknown) => void }> = []
  private scheduled = false

  constructor(private readonly store: Store) {}

  lookup(id: BlobId): Promise<Located> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => void this.run())
      }
    })
  }

  private async run(): Promise<void> {
    const batch = this.queue
    this.queue = []
    this.scheduled = false
    try {
      const found = await this.store.locateMany(batch.map((b) => b.id))
      batch.forEach((b, i) => b.resolve(found[i]))
    } catch (err) {
      for (const b of batch) b.reject(err)
    }
  }
}

const WINDOW = 16

/** A chunk sent without its bytes as one the repository holds is not in it (ingestBatches). */
export class KnownChunkMissing extends Error {
  constructor(readonly id: BlobId) {
    super(`chunk ${id} was expected in the repository`)
  }
}

function treeBlob(entries: readonly TreeEntry[]): { id: BlobId; bytes: Buffer } {
  const bytes = encodeTree(entries)
  return { id: hashBytes(bytes), bytes }
}

export interface IngestTotals {
  /** stored bytes of every distinct blob referenced so far */
  storedBytes: number
  /** stored bytes this ingest added to the repository */
  addedBytes: number
  addedBlobs: number
}

export class Ingestor {
  private readonly distinct = new Map<BlobId, number>()
  /** blobs the repository is known to hold, with their stored lengths (hold) */
  private readonly held = new Map<BlobId, number>()
  private started: Promise<void>[] = []
  private readonly batcher: LookupBatcher
  readonly gear: Uint32Array
  readonly params: ChunkerParams
  addedBytes = 0
  addedBlobs = 0

  constructor(
    readonly store: Store,
    private readonly signal?: AbortSignal,
  ) {
    this.batcher = new LookupBatcher(store)
    const c = store.config.chunker
    this.params = { minSize: c.minSize, avgSize: c.avgSize, maxSize: c.maxSize }
    this.gear = gearTable(Buffer.from(c.seed, "hex"))
  }

  totals(): IngestTotals {
    let stored = 0
    for (const n of this.distinct.values()) stored += n
    return { storedBytes: stored, addedBytes: this.addedBytes, addedBlobs: this.addedBlobs }
  }

  /** Chunks and stores a stream; returns its chunk ids and byte count. */
  async ingestStream(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, onBytes?: (n: number) => void): Promise<{ chunks: BlobId[]; size: number }> {
    const chunker = new Chunker(this.params, this.gear)
    const chunks: BlobId[] = []
    let size = 0
    await this.storeInOrder(async (put) => {
      const take = async (pieces: Uint8Array[]) => {
        for (const piece of pieces) {
          const id = hashBytes(piece)
          chunks.push(id)
          await put(id, piece)
        }
      }
      for await (const block of source) {
        throwIfAborted(this.signal)
        size += block.length
        onBytes?.(block.length)
        await take(chunker.push(block))
      }
      await take(chunker.finish())
    })
    return { chunks, size }
  }

  /**
   * Stores a file a chunk reader cut and hashed (chunk-reader.ts). Returns
   * its chunks, its size, the file's stat after the last batch, and whether
   * every batch saw the same file (same inode, size, mtime and ctime). A
   * chunk that came without its bytes must be in the repository already;
   * if it is not, this throws KnownChunkMissing (read the file again without
   * hints).
   */
  async ingestBatches(
    batches: AsyncIterable<ChunkBatch>,
    onBytes?: (n: number) => void,
  ): Promise<{ chunks: BlobId[]; size: number; stat: FileStat | undefined; steady: boolean }> {
    const chunks: BlobId[] = []
    let size = 0
    let first: FileStat | undefined
    let last: FileStat | undefined
    let steady = true
    await this.storeInOrder(async (put) => {
      for await (const batch of batches) {
        throwIfAborted(this.signal)
        first ??= batch.stat
        last = batch.stat
        if (last.ino !== first.ino || last.size !== first.size || last.mtimeNs !== first.mtimeNs || last.ctimeNs !== first.ctimeNs) steady = false
        let at = 0
        const stored: Promise<void>[] = []
        for (const [k, len] of batch.lengths.entries()) {
          const id = batch.ids[k]!
          chunks.push(id)
          stored.push((await put(id, batch.bytes[k])).stored)
          at += len
        }
        // the batch's buffer is reused once each of its chunks is stored (copied into a pack) or found stored
        void Promise.allSettled(stored).then(() => batch.release())
        size += at
        onBytes?.(at)
      }
    })
    return { chunks, size, stat: last, steady }
  }

  /**
   * Runs produce, which hands chunks to put in file order; at most WINDOW of
   * them are being stored at once (put waits for the oldest beyond that), and
   * every store settles before an error propagates. put gives back the
   * chunk's own store, which settles once its bytes are no longer used.
   */
  private async storeInOrder(produce: (put: (id: BlobId, piece: Uint8Array | undefined) => Promise<{ stored: Promise<void> }>) => Promise<void>): Promise<void> {
    const window: Promise<void>[] = []
    const put = async (id: BlobId, piece: Uint8Array | undefined) => {
      const stored = this.putChunk(BLOB_DATA, id, piece)
      // awaited later (by the window or below); handled now, since it may fail while produce waits for input
      stored.catch(() => {})
      window.push(stored)
      if (window.length >= WINDOW) await window.shift()
      return { stored }
    }
    try {
      await produce(put)
    } finally {
      await Promise.allSettled(window)
    }
    await Promise.all(window)
  }

  /** Stores one whole in-memory file (small files take this path). */
  async ingestBuffer(data: Uint8Array): Promise<BlobId[]> {
    const lengths = data.length === 0 ? [] : chunkLengths(data, this.params, this.gear)
    let at = 0
    const ids = lengths.map((len) => hashBytes(data.subarray(at, (at += len))))
    return this.ingestChunks(data, lengths, ids)
  }

  /** Stores one whole in-memory file already cut (`lengths`) and hashed (`ids`), as a chunk reader gives a small file; returns `ids`. */
  async ingestChunks(data: Uint8Array, lengths: readonly number[], ids: BlobId[]): Promise<BlobId[]> {
    // most small files are one chunk: no list of one promise to wait for
    if (ids.length === 1) {
      await this.putChunk(BLOB_DATA, ids[0]!, data.subarray(0, lengths[0]))
      return ids
    }
    let at = 0
    await Promise.all(ids.map((id, k) => this.putChunk(BLOB_DATA, id, data.subarray(at, (at += lengths[k]!)))))
    return ids
  }

  /** Accounts for a blob the repository is known to hold (reused from a previous snapshot without reading). */
  account(id: BlobId, storedLength: number): void {
    if (!this.distinct.has(id)) this.distinct.set(id, storedLength)
  }

  /**
   * Tells the ingest that the repository holds a blob (its caller knows, as
   * the incremental cache does while it is trusted): should a chunk with
   * that id come, it is accounted at once, without an index lookup. A big
   * file with a small edit sends thousands of such chunks; each lookup was
   * a round trip to the index, at most WINDOW of them at a time.
   */
  hold(id: BlobId, storedLength: number): void {
    this.held.set(id, storedLength)
  }

  /** Stored length of a blob this ingest referenced (final once drained and flushed), or -1. */
  lengthOf(id: BlobId): number {
    return this.distinct.get(id) ?? -1
  }

  async putTree(entries: readonly TreeEntry[]): Promise<BlobId> {
    const { id, bytes } = treeBlob(entries)
    await this.putChunk(BLOB_TREE, id, bytes)
    return id
  }

  /**
   * Encodes a tree and starts storing it; returns its id at once, so that a
   * parent can be encoded without waiting. drain() waits for every tree started.
   */
  startTree(entries: readonly TreeEntry[]): BlobId {
    const { id, bytes } = treeBlob(entries)
    const put = this.putChunk(BLOB_TREE, id, bytes)
    put.catch(() => {}) // observed by drain(); not an unhandled rejection meanwhile
    this.started.push(put)
    return id
  }

  async drain(): Promise<void> {
    const started = this.started
    this.started = []
    await Promise.all(started)
  }

  /** Stores a blob unless the repository has it; data undefined: it must have it (putKnown). */
  private async putChunk(kind: number, id: BlobId, data: Uint8Array | undefined): Promise<void> {
    const held = this.held.get(id)
    if (held !== undefined) {
      if (!this.distinct.get(id)) this.distinct.set(id, held)
      return
    }
    if (data === undefined) return this.putKnown(id)
    if (this.distinct.has(id)) return
    this.distinct.set(id, 0)
    const loc = await this.batcher.lookup(id)
    if (loc !== undefined) {
      this.distinct.set(id, this.store.storedLengthOf(loc, id) || this.distinct.get(id)!)
      if (loc !== "pending") return
    }
    // trees are made in a burst at the end of a snapshot, when the compressor has little else to do: here (see storeBlob)
    const result = await this.store.storeBlob(kind, id, data, { here: kind === BLOB_TREE })
    this.distinct.set(id, result.storedLength)
    if (result.added) {
      this.addedBytes += result.storedLength
      this.addedBlobs++
    }
  }

  /**
   * Accounts for a chunk sent without its bytes, which the repository must
   * hold (or this store be adding); else throws KnownChunkMissing. It enters
   * `distinct` only once found: a put of the same id meanwhile must not take
   * it for stored.
   */
  private async putKnown(id: BlobId): Promise<void> {
    if (this.distinct.has(id)) return
    const loc = await this.batcher.lookup(id)
    const length = loc === undefined ? undefined : loc === "pending" ? (await this.store.adding(id))?.storedLength : this.store.storedLengthOf(loc, id)
    if (length === undefined) throw new KnownChunkMissing(id)
    if (!this.distinct.get(id)) this.distinct.set(id, length)
  }
}
