// Micro-benchmark of the FastCDC chunker (engine/fastcdc.ts): MB/s on one
// core (MB = 10^6 bytes) over 64 MiB of pseudo-random data, for several average chunk sizes
// (minSize = avg/4, maxSize = avg*4). Three ways, side by side:
//   - stream: Chunker in 1 MiB pushes, as tar import reads (the WebAssembly
//     loop, copying at most maxSize bytes into its memory per cut);
//   - buffer: the WebAssembly loop over bytes already in its memory, as the
//     chunk readers cut a span they read there;
//   - js: the JavaScript loop (the reference, and the fallback without
//     WebAssembly) over the same buffer: what the WebAssembly loop earns.
//
//   npx tsc -p tsconfig.json && node dist/bench/micro-chunker.js

import { randomBytes } from "node:crypto"
import { CUT_SOURCE, Chunker, gearTable, resolve, wasmCutter, type Resolved } from "../engine/fastcdc.js"
import { CUT_WASM_BASE64 } from "../engine/fastcdc-wasm.js"

export interface ChunkerBenchResult {
  avgSize: number
  /** stream: MB/s through Chunker */
  mbPerSec: number
  /** the WebAssembly loop over its own memory */
  wasmMbPerSec: number
  /** the JavaScript loop */
  jsMbPerSec: number
  chunks: number
}

const jsCut = new Function(`return ${CUT_SOURCE}`)() as (buf: Uint8Array, start: number, end: number, r: Resolved) => number

/** Chunk count of one pass of a cut loop over the whole buffer. */
function pass(cut: (start: number, end: number) => number, n: number): number {
  let chunks = 0
  for (let pos = 0; pos < n; chunks++) pos += cut(pos, n)
  return chunks
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

function bestMs(fn: () => void): number {
  let best = Infinity
  for (let run = 0; run < RUNS; run++) {
    const t0 = performance.now()
    fn()
    best = Math.min(best, performance.now() - t0)
  }
  return best
}

/** Best of a few runs per average size and way, after a warm-up run. */
export async function benchChunker(): Promise<ChunkerBenchResult[]> {
  const data = new Uint8Array(randomBytes(DATA_SIZE))
  const gear = gearTable(new TextEncoder().encode("cairn micro-chunker"))
  const wasm = wasmCutter(CUT_WASM_BASE64)
  if (!wasm) throw new Error("this runtime has no WebAssembly")
  wasm.view(DATA_SIZE).set(data)
  runOnce(data.subarray(0, 8 << 20), 64 << 10, gear) // warm up the JIT
  const results: ChunkerBenchResult[] = []
  const mbps = (ms: number): number => DATA_SIZE / 1e6 / (ms / 1000)
  for (const avgSize of AVG_SIZES) {
    const r = resolve({ minSize: avgSize / 4, avgSize, maxSize: avgSize * 4 }, gear)
    let chunks = 0
    const stream = bestMs(() => (chunks = runOnce(data, avgSize, gear).chunks))
    const inMemory = bestMs(() => pass((start, end) => wasm.cut(start, end, r), DATA_SIZE))
    const js = bestMs(() => pass((start, end) => jsCut(data, start, end, r), DATA_SIZE))
    results.push({ avgSize, mbPerSec: mbps(stream), wasmMbPerSec: mbps(inMemory), jsMbPerSec: mbps(js), chunks })
    await new Promise((resolve) => setImmediate(resolve)) // stay friendly to a shared event loop
  }
  return results
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await benchChunker()
  console.log(`FastCDC chunker, ${DATA_SIZE >> 20} MiB random data, best of ${RUNS}, MB/s: stream (Chunker, ${PUSH_SIZE >> 20} MiB pushes) | WebAssembly loop | JavaScript loop`)
  for (const r of results) {
    const avg = `${r.avgSize >> 10} KiB`.padStart(9)
    const f = (x: number): string => x.toFixed(0).padStart(5)
    console.log(`avg ${avg}: ${f(r.mbPerSec)} | ${f(r.wasmMbPerSec)} | ${f(r.jsMbPerSec)}  (${(r.wasmMbPerSec / r.jsMbPerSec).toFixed(2)}x), ${r.chunks} chunks (mean ${((DATA_SIZE / r.chunks) / 1024).toFixed(1)} KiB)`)
  }
}
