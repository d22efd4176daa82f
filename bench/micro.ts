// Micro-benchmarks of the building blocks cairn can choose between, on this
// machine: hashes, compressors, raw read speed, LevelDB batches, and (when
// dist/bench/micro-chunker.js is built) the FastCDC chunker.
//
// MB = 10^6 bytes. Inputs are 1 MiB (hashes) and 64 KiB blocks (codecs) of a
// mix of text and random data, as in the corpora. Each figure is the best of
// a few timed passes after a warm-up pass.

import { createHash } from "node:crypto"
import { existsSync } from "node:fs"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import { promisify } from "node:util"
import zlib from "node:zlib"
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js"
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js"
import { deflateSync as fflateDeflate, inflateSync as fflateInflate } from "fflate"
import { PROJECT_ROOT, SeededStream, textBytes } from "./corpora.js"
import { runTimed } from "./harness.js"
import type { MicroResult } from "./report.js"

const MiB = 1 << 20

function best(passes: number, fn: () => void): number {
  fn() // warm-up
  let bestMs = Infinity
  for (let i = 0; i < passes; i++) {
    const t0 = performance.now()
    fn()
    bestMs = Math.min(bestMs, performance.now() - t0)
  }
  return bestMs
}

async function bestAsync(passes: number, fn: () => Promise<void>): Promise<number> {
  await fn()
  let bestMs = Infinity
  for (let i = 0; i < passes; i++) {
    const t0 = performance.now()
    await fn()
    bestMs = Math.min(bestMs, performance.now() - t0)
  }
  return bestMs
}

const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000)

/** 64 KiB blocks, alternating text and random in a 3:1 ratio. */
function mixedBlocks(totalBytes: number): Buffer[] {
  const rng = new SeededStream("micro")
  const blocks: Buffer[] = []
  for (let i = 0; i * 65536 < totalBytes; i++) blocks.push(i % 4 === 3 ? rng.bytes(65536) : textBytes(rng, 65536))
  return blocks
}

async function hashes(quick: boolean, out: MicroResult[]): Promise<void> {
  const buf = new SeededStream("hash").bytes(MiB)
  const n = quick ? 32 : 128
  const run = (name: string, fn: (b: Uint8Array) => unknown, count = n): void => {
    const ms = best(3, () => {
      for (let i = 0; i < count; i++) fn(buf)
    })
    out.push({ group: "hash", name, value: mbps(count * MiB, ms), unit: "MB/s", note: "1 MiB inputs, one core" })
  }
  run("node:crypto sha256", (b) => createHash("sha256").update(b).digest())
  run("@noble/hashes sha256", (b) => nobleSha256(b), Math.max(4, n / 8))
  run("@noble/hashes blake3", (b) => nobleBlake3(b), Math.max(2, n / 32))
}

async function codecs(quick: boolean, out: MicroResult[]): Promise<void> {
  const blocks = mixedBlocks(quick ? 8 * MiB : 32 * MiB)
  const total = blocks.reduce((s, b) => s + b.length, 0)
  const brotli = (q: number) => (b: Buffer) =>
    zlib.brotliCompressSync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: q, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: b.length } })
  const variants: Array<{ name: string; enc: (b: Buffer) => Uint8Array; dec: (b: Uint8Array) => Uint8Array }> = [
    { name: "node:zlib brotli q0", enc: brotli(0), dec: (b) => zlib.brotliDecompressSync(b) },
    { name: "node:zlib brotli q1", enc: brotli(1), dec: (b) => zlib.brotliDecompressSync(b) },
    { name: "node:zlib deflateRaw l1", enc: (b) => zlib.deflateRawSync(b, { level: 1 }), dec: (b) => zlib.inflateRawSync(b) },
    { name: "fflate deflate l1", enc: (b) => fflateDeflate(b, { level: 1 }), dec: (b) => fflateInflate(b) },
  ]
  for (const v of variants) {
    let outBytes = 0
    const encoded: Uint8Array[] = []
    const encMs = best(2, () => {
      outBytes = 0
      encoded.length = 0
      for (const b of blocks) {
        const e = v.enc(b)
        outBytes += e.length
        encoded.push(e)
      }
    })
    const decMs = best(2, () => {
      for (const e of encoded) v.dec(e)
    })
    const ratio = `output/input ${(outBytes / total).toFixed(2)}, 64 KiB blocks`
    out.push({ group: "compress", name: `${v.name} (sync)`, value: mbps(total, encMs), unit: "MB/s", note: ratio })
    out.push({ group: "decompress", name: v.name, value: mbps(total, decMs), unit: "MB/s" })
  }
  // Async on libuv's thread pool, 2 blocks in flight (one per core here).
  const deflateRaw = promisify(zlib.deflateRaw) as (b: Buffer, o: zlib.ZlibOptions) => Promise<Buffer>
  const brotliAsync = promisify(zlib.brotliCompress) as (b: Buffer, o: zlib.BrotliOptions) => Promise<Buffer>
  const asyncVariants: Array<[string, (b: Buffer) => Promise<Buffer>]> = [
    ["node:zlib deflateRaw l1 (async, 2 in flight)", (b) => deflateRaw(b, { level: 1 })],
    ["node:zlib brotli q1 (async, 2 in flight)", (b) => brotliAsync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 } })],
  ]
  for (const [name, enc] of asyncVariants) {
    const ms = await bestAsync(2, async () => {
      let next = 0
      const worker = async (): Promise<void> => {
        while (next < blocks.length) await enc(blocks[next++]!)
      }
      await Promise.all([worker(), worker()])
    })
    out.push({ group: "compress", name, value: mbps(total, ms), unit: "MB/s", note: "thread pool" })
  }
}

async function rawRead(corpusDirs: string[], out: MicroResult[]): Promise<void> {
  for (const dir of corpusDirs) {
    if (!existsSync(dir)) continue
    // find | xargs cat: the raw cost of reading every byte (page cache warm).
    const r = await runTimed("sh", ["-c", `find . -type f -print0 | xargs -0 cat > /dev/null; du -sb --apparent-size . | cut -f1`], { cwd: dir })
    const bytes = Number(r.stdout.trim()) || 0
    out.push({ group: "read", name: `cat ${dir.split("/").pop()} > /dev/null`, value: mbps(bytes, r.wallMs), unit: "MB/s", note: `${(r.wallMs / 1000).toFixed(2)} s incl. find and du` })
  }
}

async function level(quick: boolean, out: MicroResult[]): Promise<void> {
  let Level: new (path: string, opts: { keyEncoding: string; valueEncoding: string }) => {
    open(): Promise<void>
    batch(ops: Array<{ type: "put"; key: Uint8Array; value: Uint8Array }>): Promise<void>
    getMany(keys: Uint8Array[]): Promise<unknown[]>
    close(): Promise<void>
  }
  try {
    ;({ Level } = (await import("level")) as unknown as { Level: typeof Level })
  } catch (e) {
    out.push({ group: "level", name: "level not loadable", value: 0, unit: "", note: (e as Error).message.slice(0, 80) })
    return
  }
  const dir = await mkdtemp(join(tmpdir(), "cairn-bench-level-"))
  try {
    const db = new Level(dir, { keyEncoding: "view", valueEncoding: "view" })
    await db.open()
    const n = quick ? 100_000 : 400_000
    const rng = new SeededStream("level")
    const keys = Array.from({ length: n }, () => new Uint8Array(rng.bytes(32)))
    const value = new Uint8Array(24)
    const t0 = performance.now()
    for (let i = 0; i < n; i += 1000) await db.batch(keys.slice(i, i + 1000).map((key) => ({ type: "put" as const, key, value })))
    out.push({ group: "level", name: "batched put (1000 per batch)", value: n / ((performance.now() - t0) / 1000), unit: "ops/s", note: "32-byte keys, 24-byte values" })
    const t1 = performance.now()
    for (let i = 0; i < n; i += 20_000) await db.getMany(keys.slice(i, i + 20_000))
    out.push({ group: "level", name: "getMany (20k keys per call)", value: n / ((performance.now() - t1) / 1000), unit: "keys/s" })
    await db.close()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function chunker(out: MicroResult[]): Promise<void> {
  const path = join(PROJECT_ROOT, "dist", "bench", "micro-chunker.js")
  if (!existsSync(path)) return
  try {
    const mod = (await import(pathToFileURL(path).href)) as {
      benchChunker?: () => Promise<Array<{ avgSize: number; mbPerSec: number; wasmMbPerSec: number; jsMbPerSec: number; chunks: number }>>
    }
    if (!mod.benchChunker) return
    for (const r of await mod.benchChunker()) {
      const note = `${r.chunks} chunks; WebAssembly loop ${r.wasmMbPerSec.toFixed(0)} MB/s, JavaScript loop ${r.jsMbPerSec.toFixed(0)} MB/s`
      out.push({ group: "chunker", name: `FastCDC avg ${r.avgSize >> 10} KiB`, value: r.mbPerSec, unit: "MB/s", note })
    }
  } catch (e) {
    out.push({ group: "chunker", name: "benchChunker failed", value: 0, unit: "", note: (e as Error).message.slice(0, 80) })
  }
}

export async function runMicro(opts: { quick: boolean; corpusDirs: string[]; log: (s: string) => void }): Promise<MicroResult[]> {
  const out: MicroResult[] = []
  const steps: Array<[string, () => Promise<void>]> = [
    ["hashes", () => hashes(opts.quick, out)],
    ["codecs", () => codecs(opts.quick, out)],
    ["raw read", () => rawRead(opts.corpusDirs, out)],
    ["level", () => level(opts.quick, out)],
    ["chunker", () => chunker(out)],
  ]
  for (const [name, fn] of steps) {
    opts.log(`micro: ${name}`)
    try {
      await fn()
    } catch (e) {
      out.push({ group: name, name: "failed", value: 0, unit: "", note: (e as Error).message.slice(0, 100) })
    }
  }
  return out
}
