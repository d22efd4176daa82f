// Chunk-size trade-off: chunks per file and bytes new after a 1 MiB rewrite in the middle,
// for several FastCDC averages. Usage: npm run build && node bench/chunk-size.mjs FILE
import { chunkLengths, gearTable } from "../dist/engine/fastcdc.js"
import { createHash, randomBytes } from "node:crypto"
import fs from "node:fs"
const file = process.argv[2]
const buf = fs.readFileSync(file).subarray(0, 200 << 20)
const gear = gearTable(Buffer.alloc(16, 7))
for (const avg of [16384, 32768, 65536, 131072, 262144, 1048576]) {
  const p = { minSize: avg / 4, avgSize: avg, maxSize: avg * 4 }
  const ids = (b) => { let at = 0; const m = new Map(); for (const l of chunkLengths(b, p, gear)) { m.set(createHash("sha256").update(b.subarray(at, at + l)).digest("hex"), l); at += l } return m }
  const t0 = performance.now(); const a = ids(buf); const dt = performance.now() - t0
  const edited = Buffer.from(buf); randomBytes(1 << 20).copy(edited, 100 << 20)
  const b = ids(edited)
  let added = 0; for (const [id, l] of b) if (!a.has(id)) added += l
  console.log(`avg ${avg / 1024} KiB: chunks ${a.size}, new bytes after 1 MiB rewrite ${(added / 1048576).toFixed(2)} MiB, chunk+hash ${(buf.length / 1e6 / (dt / 1000)).toFixed(0)} MB/s`)
}
