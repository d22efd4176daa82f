// Index files: the shared, durable truth of which blob lives where.
//
//   magic "CAIRNIX1" | version u8 | hash algorithm u8 | reserved u16 | pack count u32
//   per pack: pack id 32 bytes | entry count u32 | entries (46 bytes each, as in pack headers)
//   sha256 of all preceding bytes (32)
//
// An index file is written after the packs it lists are durable, and named by
// the sha256 of its bytes ("index/<hex>"), so it is immutable and unique. The
// union of all index files is the repository's index; a blob listed twice
// (two writers raced, or gc was interrupted) is valid in either place.

import { createHash } from "node:crypto"
import { FormatVersionError, IntegrityError } from "./errors.js"
import { HASH_SHA256, ID_BYTES } from "./ids.js"
import { ENTRY_BYTES, readEntry, writeEntry, type PackEntry } from "./pack.js"

const MAGIC = Buffer.from("CAIRNIX1", "latin1")
export const INDEX_VERSION = 1

export interface PackListing {
  pack: string
  entries: PackEntry[]
}

export function encodeIndexFile(packs: readonly PackListing[]): { name: string; bytes: Buffer } {
  let size = 16 + 32
  for (const p of packs) size += ID_BYTES + 4 + p.entries.length * ENTRY_BYTES
  const buf = Buffer.alloc(size)
  MAGIC.copy(buf, 0)
  buf[8] = INDEX_VERSION
  buf[9] = HASH_SHA256
  buf.writeUInt32LE(packs.length, 12)
  let at = 16
  for (const p of packs) {
    Buffer.from(p.pack, "hex").copy(buf, at)
    buf.writeUInt32LE(p.entries.length, at + ID_BYTES)
    at += ID_BYTES + 4
    for (const e of p.entries) {
      writeEntry(buf, at, e)
      at += ENTRY_BYTES
    }
  }
  createHash("sha256").update(buf.subarray(0, at)).digest().copy(buf, at)
  const name = createHash("sha256").update(buf).digest("hex")
  return { name, bytes: buf }
}

export function decodeIndexFile(bytes: Uint8Array, name: string): PackListing[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const damaged = (why: string) =>
    new IntegrityError(`index file ${name} is damaged (${why}); run "cairn rebuild-index" to rebuild it from the packs`, {
      index: name,
    })
  if (buf.length < 48 || !buf.subarray(0, 8).equals(MAGIC)) throw damaged("bad magic")
  if (buf[8] !== INDEX_VERSION || buf[9] !== HASH_SHA256) {
    throw new FormatVersionError(`index file ${name} has version ${buf[8]}, which this cairn does not read; upgrade cairn`)
  }
  const body = buf.subarray(0, buf.length - 32)
  if (!createHash("sha256").update(body).digest().equals(buf.subarray(buf.length - 32))) throw damaged("checksum")
  const count = buf.readUInt32LE(12)
  const packs: PackListing[] = []
  let at = 16
  for (let p = 0; p < count; p++) {
    if (at + ID_BYTES + 4 > body.length) throw damaged("truncated")
    const pack = buf.toString("hex", at, at + ID_BYTES)
    const n = buf.readUInt32LE(at + ID_BYTES)
    at += ID_BYTES + 4
    if (at + n * ENTRY_BYTES > body.length) throw damaged("truncated")
    const entries: PackEntry[] = []
    for (let i = 0; i < n; i++, at += ENTRY_BYTES) entries.push(readEntry(buf, at))
    packs.push({ pack, entries })
  }
  if (at !== body.length) throw damaged("trailing bytes")
  return packs
}
