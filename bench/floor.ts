// Floors: the least CPU time cairn's format asks of this machine for a
// corpus, however well the pipeline around it is built.
//
// Each step that a snapshot or a restore cannot skip is done alone, on one
// thread, with the very primitives cairn uses, and timed:
//   snapshot: read every file (open, read, close); cut it with FastCDC (the
//     WebAssembly loop, the repository's default sizes); hash every chunk
//     (sha256); compress every distinct chunk with the store's own encoder
//     on this thread (store/codec.ts encodeInline: the entropy test, then
//     brotli quality 1, kept only if it saves enough).
//   restore: decode every distinct compressed chunk; hash every distinct
//     chunk again (a restore checks each one it writes); write every file
//     into a new directory (create, write, set mtime, close).
// Each step's sum over the corpus, divided by the cores, bounds the wall
// time from below: the same work scheduled perfectly on every core could not
// end sooner. Left out, so that the bound stays one: the scan, trees, the
// index, packs and their writes, the stat cache, starting node and its
// threads. A target under a floor cannot be met with this format on this
// machine; a time far above one is overhead, and shows how much.
//
//   npx tsc -p tsconfig.json && node dist/bench/floor.js DIR [--cores N]

import { closeSync, futimesSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync, type Stats } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import zlib from "node:zlib"
import { gearTable, resolve, wasmCutter, type ChunkerParams } from "../engine/fastcdc.js"
import { CUT_WASM_BASE64 } from "../engine/fastcdc-wasm.js"
import { blobDecoder } from "../store/codec-pool.js"
import { CODEC_BROTLI, CODEC_NONE, encodeInline } from "../store/codec.js"
import { hashBytes, type BlobId } from "../store/ids.js"
import { DEFAULT_CHUNKER } from "../store/store.js"

/** Milliseconds of one thread per step. */
export interface FloorSteps {
  [step: string]: number
}

export interface Floor {
  corpus: string
  /** regular files read (a hardlinked one once) */
  files: number
  bytes: number
  chunks: number
  distinct: number
  /** distinct chunks stored compressed */
  compressed: number
  /** bytes of the distinct chunks as stored (compressed or not) */
  storedBytes: number
  cores: number
  snapshot: { read: number; chunk: number; hash: number; compress: number }
  restore: { decode: number; verify: number; write: number }
}

/** A floor in milliseconds of wall time: the steps' sum spread over the cores. */
export function floorMs(steps: FloorSteps, cores: number): number {
  return Object.values(steps).reduce((a, b) => a + b, 0) / cores
}

export interface FloorOptions {
  corpus?: string
  /** cores to spread the work over (default: this machine's) */
  cores?: number
  /** a directory that does not exist yet: the restore step makes it and writes the files into it (an existing one is refused, EEXIST) */
  writeTo: string
  chunker?: ChunkerParams
}

const SEED = Buffer.alloc(32, 7)
/** Bytes read into the cutter's memory at a time: a chunk reader's span. */
const WINDOW = 4 << 20

/** Measures the floors of a snapshot and a restore of the tree at `dir` (see the header). */
export function measureFloor(dir: string, opts: FloorOptions): Floor {
  const params = opts.chunker ?? DEFAULT_CHUNKER
  const cut = resolve(params, gearTable(SEED))
  const cutter = wasmCutter(CUT_WASM_BASE64)
  if (!cutter) throw new Error("floor: this runtime has no WebAssembly, which cairn's chunk readers cut with")
  const decode = blobDecoder(zlib)
  const f: Floor = {
    corpus: opts.corpus ?? dir,
    files: 0,
    bytes: 0,
    chunks: 0,
    distinct: 0,
    compressed: 0,
    storedBytes: 0,
    cores: opts.cores ?? cpus().length,
    snapshot: { read: 0, chunk: 0, hash: 0, compress: 0 },
    restore: { decode: 0, verify: 0, write: 0 },
  }
  const seen = new Set<BlobId>()
  const inodes = new Set<string>()
  let t = performance.now()
  /** ms since the last lap */
  const lap = (): number => {
    const now = performance.now()
    const ms = now - t
    t = now
    return ms
  }
  /** Hashes a chunk; a new one is compressed, decoded and checked as a snapshot and a restore would. */
  const store = (chunk: Uint8Array, where: string): void => {
    lap()
    const id = hashBytes(chunk)
    f.snapshot.hash += lap()
    f.chunks++
    if (seen.has(id)) return
    seen.add(id)
    const { codec, bytes: stored } = encodeInline(chunk, CODEC_BROTLI)
    const compressed = codec !== CODEC_NONE
    f.snapshot.compress += lap()
    const raw = compressed ? decode(CODEC_BROTLI, stored, chunk.length) : stored
    f.restore.decode += lap()
    const again = hashBytes(raw)
    f.restore.verify += lap()
    if (again !== id) throw new Error(`floor: ${where}: a chunk did not decode to its own bytes`)
    f.distinct++
    f.storedBytes += stored.length
    if (compressed) f.compressed++
  }
  /**
   * Reads a file window by window straight into the cutter's memory, as
   * cairn's chunk readers read spans (no copy, no new memory per file), cuts
   * it, stores its chunks and writes it out; the bytes after a window's last
   * cut move to the window's front.
   */
  const copyFile = (from: string, to: string, st: Stats): void => {
    lap()
    const src = openSync(from, "r")
    f.snapshot.read += lap()
    const dest = openSync(to, "wx", st.mode & 0o7777)
    f.restore.write += lap()
    try {
      let have = 0
      for (let eof = false; !eof || have > 0; ) {
        const mem = cutter.view(WINDOW)
        lap()
        while (!eof && have < WINDOW) {
          const n = readSync(src, mem, have, WINDOW - have, null)
          if (n === 0) eof = true
          have += n
          f.bytes += n
        }
        f.snapshot.read += lap()
        const cuts: number[] = []
        for (let at = 0; at < have && (eof || have - at >= params.maxSize); ) cuts.push((at += cutter.cut(at, have, cut)))
        f.snapshot.chunk += lap()
        let done = 0
        for (const end of cuts) store(mem.subarray(done, (done = end)), from)
        lap()
        for (let off = 0; off < done; ) off += writeSync(dest, mem, off, done - off)
        f.restore.write += lap()
        mem.copyWithin(0, done, have)
        have -= done
      }
      lap()
      futimesSync(dest, st.atimeMs / 1000, st.mtimeMs / 1000)
      f.restore.write += lap()
    } finally {
      lap()
      closeSync(src)
      f.snapshot.read += lap()
      closeSync(dest)
      f.restore.write += lap()
    }
    f.files++
  }
  const visit = (src: string, dest: string): void => {
    lap()
    mkdirSync(dest)
    f.restore.write += lap()
    for (const name of readdirSync(src).sort()) {
      const from = join(src, name)
      const st = lstatSync(from)
      if (st.isDirectory()) visit(from, join(dest, name))
      else if (st.isFile() && !(st.nlink > 1 && inodes.has(`${st.dev}:${st.ino}`))) {
        inodes.add(`${st.dev}:${st.ino}`)
        copyFile(from, join(dest, name), st)
      }
    }
  }
  visit(dir, opts.writeTo)
  return f
}

const s = (ms: number): string => (ms / 1000).toFixed(2)

/** One line per operation: its steps and its floor. */
export function describeFloor(f: Floor): string[] {
  const line = (what: string, steps: FloorSteps): string =>
    `${what}: ${Object.entries(steps).map(([k, v]) => `${k} ${s(v)}`).join(" + ")} = ${s(floorMs(steps, 1))} s of one thread; floor ${s(floorMs(steps, f.cores))} s on ${f.cores} cores`
  return [
    `${f.corpus}: ${f.files} files, ${(f.bytes / 2 ** 20).toFixed(1)} MiB, ${f.chunks} chunks (${f.distinct} distinct, ${f.compressed} compressed, ${(f.storedBytes / 2 ** 20).toFixed(1)} MiB stored)`,
    line("  snapshot", f.snapshot),
    line("  restore", f.restore),
  ]
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [dir, ...rest] = process.argv.slice(2)
  const coresAt = rest.indexOf("--cores")
  if (!dir) {
    console.error("usage: node dist/bench/floor.js DIR [--cores N]  (the restore step writes a copy of DIR into a temporary directory, deleted at the end)")
    process.exit(2)
  }
  const scratch = mkdtempSync(join(tmpdir(), "cairn-floor-"))
  try {
    const f = measureFloor(dir, { writeTo: join(scratch, "tree"), ...(coresAt >= 0 ? { cores: Number(rest[coresAt + 1]) } : {}) })
    for (const l of describeFloor(f)) console.log(l)
    console.log(JSON.stringify(f))
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}
