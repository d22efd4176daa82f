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

async function readAll(file: string, params = PARAMS) {
  const lengths: number[] = []
  const ids: string[] = []
  const parts: Uint8Array[] = []
  for await (const batch of chunkFile(file, params, GEAR)) {
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
  it("gives the boundaries and ids of one pass over the whole file, across request boundaries", async () => {
    const dir = await tempDir()
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ text: fc.boolean(), size: fc.integer({ min: 0, max: 3_000_000 }) }), { maxLength: 5 }), async (parts) => {
        const data = Buffer.concat(parts.map((p, i) => (p.text ? textBytes(`t${i}`, p.size) : seededBytes(`r${i}`, p.size))))
        const file = path.join(dir, "f.bin")
        await fsp.writeFile(file, data)
        const got = await readAll(file)
        const want = data.length === 0 ? [] : chunkLengths(data, PARAMS, GEAR)
        expect(got.lengths).toEqual(want)
        let at = 0
        expect(got.ids).toEqual(want.map((len) => hashBytes(data.subarray(at, (at += len)))))
        expect(got.data.equals(data)).toBe(true)
      }),
      { numRuns: 12 },
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
