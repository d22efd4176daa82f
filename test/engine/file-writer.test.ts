// The writer threads on their own: what a segment turns into, and who owns its memory.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import zlib from "node:zlib"
import { afterAll, describe, expect, it } from "vitest"
import { FileWriterPool, type WriteBlob } from "../../engine/file-writer.js"
import { CODEC_BROTLI } from "../../store/codec.js"
import { textBytes, tempDir } from "../helpers.js"

const pool = new FileWriterPool(1)
afterAll(() => pool.close())

/** A segment holding one brotli blob, and the write of it to dir/name. */
function oneBlob(dir: string, name: string, raw: Buffer): { segment: Uint8Array; blobs: WriteBlob[] } {
  const stored = zlib.brotliCompressSync(raw)
  const segment = new Uint8Array(stored.length)
  segment.set(stored)
  const id = createHash("sha256").update(raw).digest("hex")
  const file = { temp: path.join(dir, `.${name}.tmp`), final: path.join(dir, name), mode: 0o640, mtime: 1_700_000_000.5 }
  return { segment, blobs: [{ id, codec: CODEC_BROTLI, offset: 0, length: stored.length, rawLength: raw.length, files: [file] }] }
}

describe("file writer threads", () => {
  it("write a segment's files, and take a whole segment handed over without a copy", async () => {
    const dir = await tempDir()
    const raw = textBytes("w", 50_000)
    const kept = oneBlob(dir, "kept", raw)
    expect((await pool.write(kept.segment, kept.blobs)).outcomes).toEqual([undefined])
    expect(kept.segment.byteLength).toBeGreaterThan(0) // copied: still usable here
    const given = oneBlob(dir, "given", raw)
    expect((await pool.write(given.segment, given.blobs, true)).outcomes).toEqual([undefined])
    expect(given.segment.byteLength).toBe(0) // moved to the worker
    for (const name of ["kept", "given"]) {
      expect(await fsp.readFile(path.join(dir, name))).toEqual(raw)
      const st = await fsp.stat(path.join(dir, name))
      expect(st.mode & 0o777).toBe(0o640)
      expect(st.mtimeMs).toBe(1_700_000_000_500)
    }
    expect((await fsp.readdir(dir)).sort()).toEqual(["given", "kept"])
  })

  it("copies a segment that is part of a larger buffer even when handed over", async () => {
    const dir = await tempDir()
    const { segment, blobs } = oneBlob(dir, "part", textBytes("p", 20_000))
    const larger = new Uint8Array(segment.length + 10)
    larger.set(segment, 10)
    const view = larger.subarray(10)
    expect((await pool.write(view, blobs, true)).outcomes).toEqual([undefined])
    expect(larger.byteLength).toBe(segment.length + 10)
  })

  it("a segment read into the start of a larger buffer moves whole, and the buffer comes back for the next segment", async () => {
    const dir = await tempDir()
    const buffer = new ArrayBuffer(1 << 20)
    let view = new Uint8Array(buffer)
    for (const [i, size] of [30_000, 70_000, 5_000].entries()) {
      const raw = textBytes(`r${i}`, size)
      const { segment, blobs } = oneBlob(dir, `f${i}`, raw)
      view.set(segment)
      const reply = await pool.write(view.subarray(0, segment.length), blobs, true)
      expect(reply.outcomes).toEqual([undefined])
      expect(view.byteLength).toBe(0) // moved, not copied
      expect(reply.buffer.byteLength).toBe(1 << 20)
      view = new Uint8Array(reply.buffer)
      expect(await fsp.readFile(path.join(dir, `f${i}`))).toEqual(raw)
    }
  })

  it("reports a blob that does not hash to its id, and leaves no file", async () => {
    const dir = await tempDir()
    const { segment, blobs } = oneBlob(dir, "bad", textBytes("b", 10_000))
    blobs[0]!.id = "0".repeat(64)
    const [outcome] = (await pool.write(segment, blobs, true)).outcomes
    expect(outcome?.integrity).toMatch(/does not match its hash/)
    expect(await fsp.readdir(dir)).toEqual([])
  })
})
