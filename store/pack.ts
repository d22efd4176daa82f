// Pack files: many stored blobs in one object, self-describing.
//
//   [blob 0][blob 1]...[blob n-1][header][trailer]
//
// header  = n entries of 46 bytes:
//           kind u8 | codec u8 | id 32 bytes | offset u32 | length u32 | rawLength u32
// trailer = 48 bytes:
//           sha256(header) 32 | header length u32 | version u8 | hash algorithm u8 |
//           reserved u16 (0) | magic "CAIRNPK1"
// Integers are little-endian. A pack's name is the sha256 of its header, the
// digest its trailer holds, as a git pack is named by the ids of the objects
// it holds: the header lists each blob by the sha256 of its content, with its
// place and encoding, so the name fixes what the pack holds, and every byte is
// still checked (a blob's bytes by decoding them and hashing the result, the
// header by its digest). Packs written before 2026-12-07 are named by the
// sha256 of all their bytes; readers take both (packName). Naming by the
// header spares the writer a hash over every byte it stores (~150 ms of a
// first snapshot of the bench's workspace, on the thread that stores).
// Because every pack lists its own blobs, the whole index can be rebuilt from
// the packs alone. Packs stay far below 4 GiB (the target is a few MiB), so
// u32 offsets suffice.

import { createHash } from "node:crypto"
import { IntegrityError } from "./errors.js"
import { HASH_SHA256, ID_BYTES, idFromBytes, idToBytes, type BlobId } from "./ids.js"

export const PACK_VERSION = 1
export const ENTRY_BYTES = 2 + ID_BYTES + 12
export const TRAILER_BYTES = 48
const MAGIC = Buffer.from("CAIRNPK1", "latin1")

/** What a blob is; the store does not interpret it beyond bookkeeping. */
export const BLOB_DATA = 0
export const BLOB_TREE = 1
export type BlobKind = typeof BLOB_DATA | typeof BLOB_TREE

export interface PackEntry {
  id: BlobId
  kind: number
  codec: number
  offset: number
  length: number
  rawLength: number
}

export function encodeHeader(entries: readonly PackEntry[]): Buffer {
  const buf = Buffer.alloc(entries.length * ENTRY_BYTES)
  entries.forEach((e, i) => writeEntry(buf, i * ENTRY_BYTES, e))
  return buf
}

export function writeEntry(buf: Buffer, at: number, e: PackEntry): void {
  buf[at] = e.kind
  buf[at + 1] = e.codec
  idToBytes(e.id, buf, at + 2)
  buf.writeUInt32LE(e.offset, at + 2 + ID_BYTES)
  buf.writeUInt32LE(e.length, at + 6 + ID_BYTES)
  buf.writeUInt32LE(e.rawLength, at + 10 + ID_BYTES)
}

export function readEntry(buf: Uint8Array, at: number): PackEntry {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  return {
    kind: b[at]!,
    codec: b[at + 1]!,
    id: idFromBytes(b, at + 2),
    offset: b.readUInt32LE(at + 2 + ID_BYTES),
    length: b.readUInt32LE(at + 6 + ID_BYTES),
    rawLength: b.readUInt32LE(at + 10 + ID_BYTES),
  }
}

export function encodeTrailer(header: Uint8Array): Buffer {
  const t = Buffer.alloc(TRAILER_BYTES)
  createHash("sha256").update(header).digest().copy(t, 0)
  t.writeUInt32LE(header.length, 32)
  t[36] = PACK_VERSION
  t[37] = HASH_SHA256
  MAGIC.copy(t, 40)
  return t
}

/** Parses a trailer; returns the header's length and expected digest. */
export function decodeTrailer(trailer: Uint8Array, pack: string): { headerLength: number; digest: Buffer } {
  const t = Buffer.from(trailer.buffer, trailer.byteOffset, trailer.byteLength)
  if (t.length !== TRAILER_BYTES || !t.subarray(40).equals(MAGIC)) {
    throw new IntegrityError(`pack ${pack} has no valid trailer: it is truncated or not a cairn pack`, { pack })
  }
  if (t[36] !== PACK_VERSION || t[37] !== HASH_SHA256) {
    throw new IntegrityError(`pack ${pack} has version ${t[36]} / hash ${t[37]}, which this cairn does not read`, {
      pack,
    })
  }
  return { headerLength: t.readUInt32LE(32), digest: Buffer.from(t.subarray(0, 32)) }
}

/** Decodes and checks a header against the trailer's digest and the pack size. */
export function decodeHeader(header: Uint8Array, digest: Uint8Array, packSize: number, pack: string): PackEntry[] {
  const actual = createHash("sha256").update(header).digest()
  if (!actual.equals(digest) || header.length % ENTRY_BYTES !== 0) {
    throw new IntegrityError(`pack ${pack} has a damaged header`, { pack })
  }
  const dataEnd = packSize - TRAILER_BYTES - header.length
  const entries: PackEntry[] = []
  for (let at = 0; at < header.length; at += ENTRY_BYTES) {
    const e = readEntry(header, at)
    if (e.offset + e.length > dataEnd) throw new IntegrityError(`pack ${pack} lists a blob beyond its end`, { pack })
    entries.push(e)
  }
  return entries
}

/** Reads the list of blobs of a whole pack held in memory. */
export function parsePack(bytes: Uint8Array, pack: string): PackEntry[] {
  if (bytes.length < TRAILER_BYTES) throw new IntegrityError(`pack ${pack} is truncated`, { pack })
  const { headerLength, digest } = decodeTrailer(bytes.subarray(bytes.length - TRAILER_BYTES), pack)
  const start = bytes.length - TRAILER_BYTES - headerLength
  if (start < 0) throw new IntegrityError(`pack ${pack} is truncated`, { pack })
  return decodeHeader(bytes.subarray(start, bytes.length - TRAILER_BYTES), digest, bytes.length, pack)
}

/** A pack's id: the sha256 of its header, as its trailer holds it. */
export function packIdOf(trailer: Uint8Array): string {
  return Buffer.from(trailer.buffer, trailer.byteOffset, 32).toString("hex")
}

/**
 * How `name` names a whole pack (its bytes): by the sha256 of its header (the
 * trailer's digest, packIdOf), by the sha256 of all its bytes (packs written
 * before 2026-12-07), or not at all (undefined).
 */
export function packName(name: string, bytes: Uint8Array): "header" | "bytes" | undefined {
  if (bytes.length >= TRAILER_BYTES && packIdOf(bytes.subarray(bytes.length - TRAILER_BYTES)) === name) return "header"
  return createHash("sha256").update(bytes).digest("hex") === name ? "bytes" : undefined
}

export function packKey(packId: string): string {
  return `data/${packId.slice(0, 2)}/${packId}`
}
