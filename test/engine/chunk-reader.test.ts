// Chunk readers cut files in worker threads, request by request: the result
// must be exactly what one pass of the chunker over the whole file gives.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { chunkFile } from "../../engine/chunk-reader.js"
import { chunkLengths, gearTable } from "../../engine/fastcdc.js"
import { hashBytes } from "../../store/ids.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

const GEAR = gearTable(new TextEncoder().encode("chunk reader seed"))
const PARAMS = { minSize: 2048, avgSize: 8192, maxSize: 32768 }

async function readAll(file: string, params = PARAMS, opts: { span?: number; sizeHint?: number } = {}) {
  const lengths: number[] = []
  const ids: string[] = []
  const parts: Uint8Array[] = []
  for await (const batch of chunkFile(file, params, GEAR, opts)) {
    let at = 0
    batch.lengths.forEach((len, k) => {
      lengths.push(len)
      ids.push(batch.ids[k]!)
      parts.push(batch.data.subarray(at, at + len))
      at += len
    })
  }
  return { lengths, ids, data: Buffer.concat(parts) }
}

describe("chunkFile", () => {
  it("gives the boundaries and ids of one pass over the whole file, across request boundaries and guessed span starts", async () => {
    const dir = await tempDir()
    // constant runs have no content-defined cut points: a span started at a guess never meets the true chain there
    const part = fc.record({ kind: fc.constantFrom("text", "random", "zeros"), size: fc.integer({ min: 0, max: 3_000_000 }) })
    const bytesOf = (p: { kind: string; size: number }, i: number) =>
      p.kind === "text" ? textBytes(`t${i}`, p.size) : p.kind === "random" ? seededBytes(`r${i}`, p.size) : Buffer.alloc(p.size, i)
    await fc.assert(
      fc.asyncProperty(fc.array(part, { maxLength: 5 }), fc.constantFrom(undefined, 100_000, 333_333), fc.boolean(), async (parts, span, hint) => {
        const data = Buffer.concat(parts.map(bytesOf))
        const file = path.join(dir, "f.bin")
        await fsp.writeFile(file, data)
        // a size hint that is too small (the file grew after the scan) must not matter either
        const got = await readAll(file, PARAMS, { ...(span ? { span } : {}), ...(hint ? { sizeHint: Math.floor(data.length / 3) } : {}) })
        const want = data.length === 0 ? [] : chunkLengths(data, PARAMS, GEAR)
        expect(got.lengths).toEqual(want)
        let at = 0
        expect(got.ids).toEqual(want.map((len) => hashBytes(data.subarray(at, (at += len)))))
        expect(got.data.equals(data)).toBe(true)
      }),
      { numRuns: 20 },
    )
  })

  it("reports the file's stat with every batch and keeps error codes", async () => {
    const dir = await tempDir()
    const file = path.join(dir, "big.bin")
    await fsp.writeFile(file, seededBytes("big", 9_000_000))
    const st = await fsp.stat(file, { bigint: true })
    for await (const batch of chunkFile(file, PARAMS, GEAR)) {
      expect(batch.stat).toMatchObject({ size: st.size, ino: st.ino, mtimeNs: st.mtimeNs, isFile: true })
    }
    await expect(readAll(path.join(dir, "missing"))).rejects.toMatchObject({ code: "ENOENT" })
    await fsp.symlink(file, path.join(dir, "link"))
    await expect(readAll(path.join(dir, "link"))).rejects.toMatchObject({ code: "ELOOP" }) // never follows a symlink
  })
})
