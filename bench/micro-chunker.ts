// Micro-benchmark of the FastCDC chunker (engine/fastcdc.ts): MB/s on one
// core (MB = 10^6 bytes) over 64 MiB of pseudo-random data, for several average chunk sizes
// (minSize = avg/4, maxSize = avg*4). Streams the data through Chunker in
// 1 MiB pushes, as a file reader would.
//
//   npx tsc -p tsconfig.json && node dist/bench/micro-chunker.js

import { randomBytes } from "node:crypto"
import { Chunker, gearTable } from "../engine/fastcdc.js"

export interface ChunkerBenchResult {
  avgSize: number
  mbPerSec: number
  chunks: number
}

const DATA_SIZE = 64 << 20
const PUSH_SIZE = 1 << 20
const RUNS = 5
const AVG_SIZES = [16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20]

function runOnce(data: Uint8Array, avgSize: number, gear: Uint32Array): { ms: number; chunks: number } {
  const t0 = performance.now()
  const chunker = new Chunker({ minSize: avgSize / 4, avgSize, maxSize: avgSize * 4 }, gear)
  let chunks = 0
  for (let off = 0; off < data.length; off += PUSH_SIZE) {
    chunks += chunker.push(data.subarray(off, off + PUSH_SIZE)).length
  }
  chunks += chunker.finish().length
  return { ms: performance.now() - t0, chunks }
}

/** Best of a few runs per average size, after a warm-up run. */
export async function benchChunker(): Promise<Array<{ avgSize: number; mbPerSec: number; chunks: number }>> {
  const data = new Uint8Array(randomBytes(DATA_SIZE))
  const gear = gearTable(new TextEncoder().encode("cairn micro-chunker"))
  runOnce(data.subarray(0, 8 << 20), 64 << 10, gear) // warm up the JIT
  const results: ChunkerBenchResult[] = []
  for (const avgSize of AVG_SIZES) {
    let best = Infinity
    let chunks = 0
    for (let run = 0; run < RUNS; run++) {
      const r = runOnce(data, avgSize, gear)
      best = Math.min(best, r.ms)
      chunks = r.chunks
      await new Promise((resolve) => setImmediate(resolve)) // stay friendly to a shared event loop
    }
    results.push({ avgSize, mbPerSec: DATA_SIZE / 1e6 / (best / 1000), chunks })
  }
  return results
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await benchChunker()
  console.log(`FastCDC chunker, ${DATA_SIZE >> 20} MiB random data, ${PUSH_SIZE >> 20} MiB pushes, best of ${RUNS}`)
  for (const r of results) {
    const avg = `${r.avgSize >> 10} KiB`.padStart(9)
    console.log(`avg ${avg}: ${r.mbPerSec.toFixed(0).padStart(5)} MB/s, ${r.chunks} chunks (mean ${((DATA_SIZE / r.chunks) / 1024).toFixed(1)} KiB)`)
  }
}
