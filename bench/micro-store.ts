// Store micro-benchmark: put throughput of compressible and random data,
// batched lookups per second and peak RSS, next to the raw cost of the same
// hashing and compression without the store, so the store's own overhead is
// visible. Run: npm run build && node dist/bench/micro-store.js [MiB]

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { FsObjectStore } from "../store/backends/fs.js"
import { CODEC_BROTLI, encode } from "../store/codec.js"
import { hashBytes, type BlobId } from "../store/ids.js"
import { BLOB_DATA } from "../store/pack.js"
import { Store } from "../store/store.js"

const CHUNK = 64 * 1024

function textChunks(mib: number): Buffer[] {
  const words = ["export", "function", "const", "return", "import", "from", "value", "data", "index", "snapshot", "{", "}", "\n"]
  const out: Buffer[] = []
  let x = 12345
  for (let i = 0; i < (mib << 20) / CHUNK; i++) {
    // a distinct header per chunk: without it the generator repeats chunks,
    // the store dedups them and "put" looks faster than compressing
    const parts: string[] = [`chunk ${i} of a text-like stream\n`]
    let n = parts[0]!.length
    while (n < CHUNK) {
      x = (x * 1103515245 + 12345) >>> 0
      const w = words[x % words.length]! + (x % 7 === 0 ? String(x % 1000) : "") + " "
      parts.push(w)
      n += w.length
    }
    out.push(Buffer.from(parts.join("")).subarray(0, CHUNK))
  }
  return out
}

function randomChunks(mib: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < (mib << 20) / CHUNK; i++) {
    const b = Buffer.alloc(CHUNK)
    for (let j = 0; j < CHUNK; j += 32) createHash("sha256").update(`${i}:${j}`).digest().copy(b, j)
    out.push(b)
  }
  return out
}

async function raw(chunks: Buffer[]): Promise<number> {
  const t0 = performance.now()
  const inflight: Promise<unknown>[] = []
  for (const c of chunks) {
    hashBytes(c)
    inflight.push(encode(c, CODEC_BROTLI))
    if (inflight.length >= 8) await inflight.shift()
  }
  await Promise.all(inflight)
  return (performance.now() - t0) / 1000
}

async function viaStore(chunks: Buffer[], dir: string): Promise<{ seconds: number; store: Store; ids: BlobId[] }> {
  const store = await Store.init({ backend: new FsObjectStore(path.join(dir, "repo")), cacheDir: path.join(dir, "cache") })
  const t0 = performance.now()
  const ids: BlobId[] = []
  const inflight: Promise<unknown>[] = []
  for (const c of chunks) {
    const id = hashBytes(c)
    ids.push(id)
    inflight.push(store.storeBlob(BLOB_DATA, id, c))
    if (inflight.length >= 8) await inflight.shift()
  }
  await Promise.all(inflight)
  await store.flush()
  return { seconds: (performance.now() - t0) / 1000, store, ids }
}

export async function benchStore(mib = 128): Promise<Array<Record<string, string | number>>> {
  const rows: Array<Record<string, string | number>> = []
  for (const [kind, make] of [["compressible", textChunks], ["random", randomChunks]] as const) {
    const chunks = make(mib)
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cairn-bench-store-"))
    const rawS = await raw(chunks)
    const { seconds, store, ids } = await viaStore(chunks, dir)
    const t0 = performance.now()
    for (let i = 0; i < 5; i++) await store.locateMany(ids)
    const lookups = (5 * ids.length) / ((performance.now() - t0) / 1000)
    await store.close()
    await fsp.rm(dir, { recursive: true, force: true })
    rows.push({
      data: kind,
      "raw hash+codec MB/s": Math.round((mib * 1.048576) / rawS),
      "store put MB/s": Math.round((mib * 1.048576) / seconds),
      "store overhead": `${Math.round((seconds / rawS - 1) * 100)}%`,
      "lookups/s (batched)": Math.round(lookups),
    })
  }
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const mib = Number(process.argv[2] ?? 128)
  const rows = await benchStore(mib)
  const cols = Object.keys(rows[0]!)
  console.log(`| ${cols.join(" | ")} |\n|${cols.map(() => "---").join("|")}|`)
  for (const r of rows) console.log(`| ${cols.map((c) => r[c]).join(" | ")} |`)
  console.log(`peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB (${mib} MiB per data kind, ${os.availableParallelism()} cores)`)
}
