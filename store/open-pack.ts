// The pack being filled: blobs are copied into one buffer as they arrive, and
// sealing appends the header and trailer to it, so a pack is put without
// concatenating its parts. The buffers are reused: a snapshot writes hundreds
// of packs, and a fresh 8 MiB buffer for each one cost the main thread its
// page faults and a garbage collection every few packs (external memory
// pressure), more than the copying itself.
//
// Ownership: views into an open pack's buffer (the store's pending blobs) are
// valid until the pack is released; whoever hands such bytes out of the
// store copies them first.

import { encodeHeader, encodeTrailer, type PackEntry } from "./pack.js"
import { SpareBuffers } from "./spare-buffers.js"

/** Spare room over the target pack size: the blob that crosses it, and the header. */
const SLACK = 1 << 20
/** Free buffers kept for reuse: one pack filling, one being written. */
const KEEP = 2

export class PackBuffers {
  // only buffers of the usual size are kept: one grown for an unusual pack goes to the collector
  private readonly free = new SpareBuffers<Buffer>(KEEP, (b) => b.length === this.packSize + SLACK)

  constructor(readonly packSize: number) {}

  open(): OpenPack {
    return new OpenPack(this)
  }

  /** A buffer of at least `size` bytes, reused when one is free. */
  take(size: number): Buffer {
    return this.free.take(size) ?? Buffer.allocUnsafeSlow(Math.max(size, this.packSize + SLACK))
  }

  /** Lets the free buffers go: nothing is being written (the store flushed). */
  trim(): void {
    this.free.clear()
  }

  give(buf: Buffer): void {
    this.free.give(buf)
  }
}

export class OpenPack {
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
    // a literal, not a spread of entry: a spread here gave every entry a hidden class of its own (~350 bytes more each, and work for every collection)
    const full: PackEntry = { id: entry.id, kind: entry.kind, codec: entry.codec, rawLength: entry.rawLength, offset: at, length: bytes.length }
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
