// The pack being filled: blobs are copied into one buffer as they arrive, and
// sealing appends the header and trailer to it, so a pack is put without
// concatenating its parts. The buffers are reused: a snapshot writes hundreds
// of packs, and a fresh 8 MiB buffer for each one cost the main thread its
// page faults and a garbage collection every few packs (external memory
// pressure), more than the copying itself.
//
// Ownership: views into an open pack's buffer (the store's pending blobs) are
// valid until the pack is released; whoever hands such bytes out of the
// store copies them first (read does).
//
// Where the backend can write an object in parts (a local file system:
// ObjectStore.createWriter), a pack is not held whole at all: a StreamedPack
// copies its blobs into a 1 MiB stage and hands each full stage to the
// writer, so that sealing only writes the header and trailer and names the
// file (by its header's digest: pack.ts). Two 9 MiB pack buffers (one filling, one
// being written) were ~18 MiB of a first snapshot's peak; the stages (one
// filling, the ones being written: up to KEEP_STAGES kept) are 1 MiB each.

import type { ObjectWriter } from "./backend.js"
import { encodeHeader, encodeTrailer, packIdOf, packKey, TRAILER_BYTES, type PackEntry } from "./pack.js"
import { SpareBuffers } from "./spare-buffers.js"

/** A pack being filled, held whole (OpenPack) or written as it fills (StreamedPack). */
export interface FillingPack {
  readonly entries: PackEntry[]
  /** Bytes of blobs appended so far. */
  readonly size: number
  /** Copies a blob's stored bytes in. */
  append(entry: Omit<PackEntry, "offset" | "length">, bytes: Uint8Array): { entry: PackEntry }
  /** A copy of an appended blob's stored bytes (valid until the pack is released). */
  read(entry: PackEntry): Promise<Uint8Array>
  /** Seals the pack and puts it under its key (through `put` when held whole); returns its id. */
  write(put: (key: string, bytes: Uint8Array) => Promise<void>): Promise<string>
  /** Gives the pack's memory back (and its writer): no view of it, and no read, may be used after this. */
  release(): void
}

/** Bytes a StreamedPack gathers before it hands them to its writer. */
const STAGE = 1 << 20
/** Stages kept for reuse: the one filling, one or two being written. */
const KEEP_STAGES = 3

/** Spare room over the target pack size: the blob that crosses it, and the header. */
const SLACK = 1 << 20
/** Free buffers kept for reuse: one pack filling, one being written. */
const KEEP = 2

export class PackBuffers {
  // only buffers of the usual size are kept: one grown for an unusual pack goes to the collector
  private readonly free = new SpareBuffers<Buffer>(KEEP, (b) => b.length === this.packSize + SLACK)
  private readonly stages = new SpareBuffers<Buffer>(KEEP_STAGES, (b) => b.length === STAGE)

  /** @param writer where packs are written as they fill, when the backend can (else they are held whole) */
  constructor(
    readonly packSize: number,
    private readonly writer?: () => Promise<ObjectWriter>,
  ) {}

  open(): FillingPack {
    return this.writer ? new StreamedPack(this, this.writer) : new OpenPack(this)
  }

  /** A stage for a StreamedPack, reused when one is free. */
  stage(): Buffer {
    return this.stages.take() ?? Buffer.allocUnsafeSlow(STAGE)
  }

  giveStage(buf: Buffer): void {
    this.stages.give(buf)
  }

  /** A buffer of at least `size` bytes, reused when one is free. */
  take(size: number): Buffer {
    return this.free.take(size) ?? Buffer.allocUnsafeSlow(Math.max(size, this.packSize + SLACK))
  }

  /** Lets the free buffers go: nothing is being written (the store flushed). */
  trim(): void {
    this.free.clear()
    this.stages.clear()
  }

  give(buf: Buffer): void {
    this.free.give(buf)
  }
}

/**
 * A blob's entry at its place in a pack. A literal, not a spread of entry: a
 * spread gave every entry a hidden class of its own (~350 bytes more each,
 * and work for every collection).
 */
function placed(entry: Omit<PackEntry, "offset" | "length">, offset: number, length: number): PackEntry {
  return { id: entry.id, kind: entry.kind, codec: entry.codec, rawLength: entry.rawLength, offset, length }
}

export class OpenPack implements FillingPack {
  readonly entries: PackEntry[] = []
  private buf?: Buffer
  private end = 0

  constructor(private readonly buffers: PackBuffers) {}

  /** Bytes of blobs appended so far. */
  get size(): number {
    return this.end
  }

  /**
   * Copies a blob's stored bytes in; returns a view of them, valid until the
   * pack is released.
   */
  append(entry: Omit<PackEntry, "offset" | "length">, bytes: Uint8Array): { entry: PackEntry; bytes: Uint8Array } {
    this.reserve(bytes.length)
    const at = this.end
    this.buf!.set(bytes, at)
    this.end += bytes.length
    const full = placed(entry, at, bytes.length)
    this.entries.push(full)
    return { entry: full, bytes: this.buf!.subarray(at, this.end) }
  }

  /** The whole pack (blobs, header, trailer), a view into this pack's buffer. */
  seal(): Uint8Array {
    const header = encodeHeader(this.entries)
    const trailer = encodeTrailer(header)
    this.reserve(header.length + trailer.length)
    this.buf!.set(header, this.end)
    this.buf!.set(trailer, this.end + header.length)
    return this.buf!.subarray(0, this.end + header.length + trailer.length)
  }

  async read(entry: PackEntry): Promise<Uint8Array> {
    return this.buf!.slice(entry.offset, entry.offset + entry.length)
  }

  async write(put: (key: string, bytes: Uint8Array) => Promise<void>): Promise<string> {
    const bytes = this.seal()
    const id = packIdOf(bytes.subarray(bytes.length - TRAILER_BYTES))
    await put(packKey(id), bytes)
    return id
  }

  /** Gives the buffer back for another pack: no view of it may be used after this. */
  release(): void {
    if (this.buf) this.buffers.give(this.buf)
    this.buf = undefined
  }

  private reserve(more: number): void {
    const need = this.end + more
    if (this.buf && need <= this.buf.length) return
    const grown = this.buffers.take(Math.max(need, this.buf ? this.buf.length * 2 : 0))
    // a grown buffer leaves the old one to the views that still point at it (never reused)
    if (this.buf) this.buf.copy(grown, 0, 0, this.end)
    this.buf = grown
  }
}

/**
 * A pack written as it fills (see the top of this file): blobs are copied
 * into a stage, and a full stage is handed to the writer, one write after
 * another. A blob is read back from the stage while it is
 * there, else from the writer once the writes up to it settled.
 */
export class StreamedPack implements FillingPack {
  readonly entries: PackEntry[] = []
  private end = 0
  /** bytes handed to the writer, ahead of the stage */
  private handed = 0
  private stage?: Buffer
  private staged = 0
  private writer?: Promise<ObjectWriter>
  /** the writes handed so far, one after another; rejects once one failed */
  private writes: Promise<void> = Promise.resolve()
  private readonly reads = new Set<Promise<unknown>>()

  constructor(
    private readonly buffers: PackBuffers,
    private readonly makeWriter: () => Promise<ObjectWriter>,
  ) {}

  get size(): number {
    return this.end
  }

  append(entry: Omit<PackEntry, "offset" | "length">, bytes: Uint8Array): { entry: PackEntry } {
    const at = this.end
    this.put(bytes)
    this.end += bytes.length
    const full = placed(entry, at, bytes.length)
    this.entries.push(full)
    return { entry: full }
  }

  read(entry: PackEntry): Promise<Uint8Array> {
    const reading = this.readNow(entry)
    this.reads.add(reading)
    void reading.finally(() => this.reads.delete(reading)).catch(() => {})
    return reading
  }

  private async readNow(entry: PackEntry): Promise<Uint8Array> {
    const stageStart = this.handed
    if (entry.offset >= stageStart && this.stage) return this.stage.slice(entry.offset - stageStart, entry.offset - stageStart + entry.length)
    // some of it is still in the stage: hand the stage over (a short write) so that all of it is in the file
    if (entry.offset + entry.length > this.handed) this.handStage()
    // taken now: a release while this waits lets go of them only once this read settled
    const writer = this.writer
    const writes = this.writes
    if (!writer) return new Uint8Array(0) // an empty blob at the start of a pack nothing was handed of
    await writes
    return (await writer).read(entry.offset, entry.length)
  }

  /** Seals the pack and commits its writer's object under the pack's key (`put` is not needed). */
  async write(_put?: (key: string, bytes: Uint8Array) => Promise<void>): Promise<string> {
    const header = encodeHeader(this.entries)
    const trailer = encodeTrailer(header)
    this.put(header)
    this.put(trailer)
    this.handStage()
    await this.writes
    const id = packIdOf(trailer)
    await (await this.writer!).commit(packKey(id))
    return id
  }

  release(): void {
    if (this.stage) this.buffers.giveStage(this.stage)
    this.stage = undefined
    const writer = this.writer
    this.writer = undefined
    // the writer closes (and drops its file unless committed) once reads and writes in flight settle
    if (writer) void Promise.allSettled([...this.reads, this.writes]).then(() => writer.then((w) => w.close()).catch(() => {}))
  }

  /** Copies bytes into the stage, handing each stage that fills to the writer. */
  private put(bytes: Uint8Array): void {
    for (let done = 0; done < bytes.length; ) {
      this.stage ??= this.buffers.stage()
      const n = Math.min(bytes.length - done, this.stage.length - this.staged)
      this.stage.set(bytes.subarray(done, done + n), this.staged)
      this.staged += n
      done += n
      if (this.staged === this.stage.length) this.handStage()
    }
  }

  /** Hands the stage's bytes to the writer (after the writes before); the stage is reused once written. */
  private handStage(): void {
    const stage = this.stage
    if (!stage || this.staged === 0) return
    const bytes = stage.subarray(0, this.staged)
    this.handed += this.staged
    this.stage = undefined
    this.staged = 0
    const writer = (this.writer ??= this.makeWriter())
    this.writes = this.writes.then(async () => (await writer).write(bytes)).finally(() => this.buffers.giveStage(stage))
    this.writes.catch(() => {}) // awaited by write() and read(); a pack released after a failure must not leave it unhandled
  }
}
