// Chunk-size trade-off, for several FastCDC averages (min = avg/4, max = 4 avg):
// chunks (index entries), bytes new after a 1 MiB rewrite in the middle, and
// bytes stored once every chunk is compressed as the store does (brotli with
// the codec's settings; incompressible chunks, or savings under 2%, raw).
// Usage: npm run build && node bench/chunk-size.mjs FILE [FILE...]
// (each file's first 200 MiB; FORMAT.md's table: bench/corpora/workspace's
// data/big-200m.bin and bin/node, after one `npm run bench`)
import { chunkLengths, gearTable } from "../dist/engine/fastcdc.js"
import { looksIncompressible } from "../dist/store/codec.js"
import { BROTLI_LGWIN, BROTLI_QUALITY } from "../dist/store/codec-pool.js"
import { createHash, randomBytes } from "node:crypto"
import fs from "node:fs"
import zlib from "node:zlib"

const MiB = 1 << 20
const gear = gearTable(Buffer.alloc(16, 7))
const stored = (chunk) => {
  if (looksIncompressible(chunk)) return chunk.length
  const { BROTLI_PARAM_QUALITY: Q, BROTLI_PARAM_LGWIN: W, BROTLI_PARAM_SIZE_HINT: H } = zlib.constants
  const n = zlib.brotliCompressSync(chunk, { params: { [Q]: BROTLI_QUALITY, [W]: BROTLI_LGWIN, [H]: chunk.length } }).length
  return n >= chunk.length * 0.98 ? chunk.length : n
}
const files = process.argv.slice(2)
if (files.length === 0) throw new Error("usage: node bench/chunk-size.mjs FILE [FILE...]")
for (const file of files) {
  const buf = fs.readFileSync(file).subarray(0, 200 * MiB)
  const edited = Buffer.from(buf)
  randomBytes(MiB).copy(edited, Math.max(0, Math.floor(buf.length / 2) - MiB / 2))
  console.log(`${file} (${(buf.length / MiB).toFixed(1)} MiB)`)
  for (const avg of [16384, 32768, 65536, 131072, 262144, 1048576]) {
    const p = { minSize: avg / 4, avgSize: avg, maxSize: avg * 4 }
    const chunks = (b) => {
      const m = new Map()
      let at = 0
      for (const l of chunkLengths(b, p, gear)) {
        m.set(createHash("sha256").update(b.subarray(at, at + l)).digest("hex"), [at, l])
        at += l
      }
      return m
    }
    const t0 = performance.now()
    const a = chunks(buf)
    const cut = performance.now() - t0
    let added = 0
    for (const [id, [, l]] of chunks(edited)) if (!a.has(id)) added += l
    const t1 = performance.now()
    let packed = 0
    for (const [at, l] of a.values()) packed += stored(buf.subarray(at, at + l))
    const squeeze = performance.now() - t1
    console.log(
      `  avg ${String(avg / 1024).padStart(4)} KiB: chunks ${String(a.size).padStart(6)}, new after 1 MiB rewrite ${(added / MiB).toFixed(2)} MiB,` +
        ` stored ${(packed / MiB).toFixed(2)} MiB, chunk+hash ${(buf.length / 1e3 / cut).toFixed(0)} MB/s, compress ${(buf.length / 1e3 / squeeze).toFixed(0)} MB/s`,
    )
  }
}
