// Content-defined chunking: FastCDC (Xia et al., USENIX ATC 2016).
//
// Algorithm. A gear rolling hash runs over the bytes of a chunk:
//   h = (h << 1) + gear[byte]   (mod 2^32)
// After the shift, byte k positions back contributes only to bits >= k, so
// the HIGH bits of h depend on the most recent ~32 bytes and nothing earlier.
// A chunk that starts at `s` is cut after the first byte i for which the high
// bits selected by a mask are all zero:
//   - cut-point skipping: bytes s .. s+minSize-1 are not hashed at all; the
//     hash starts at 0 at s+minSize;
//   - normalized chunking, level 2: while i - s < avgSize the stricter mask
//     maskS (bits(avg)+2 high bits) is used, from avgSize on the looser maskL
//     (bits(avg)-2 high bits), which pulls chunk sizes towards avgSize;
//   - a chunk never exceeds maxSize: if no byte matches, cut at s+maxSize.
// The byte that matched is the last byte of its chunk.
//
// Gear table. 256 uint32 derived from a per-repository seed:
// sha256(seed || uint32be(k)) for k = 0..31, each digest read as 8 big-endian
// uint32 values, in order. Changing the table, the masks or the rule above
// changes every chunk boundary: it is a format change (golden tests pin it).
//
// Invariants:
// - cutPoint(buf, s, end) reads only buf[s .. min(end, s+maxSize)), and when a
//   cut is found at length n it depends only on buf[s .. s+n).
// - every chunk is within [minSize, maxSize] except the last of a stream,
//   which is within (0, maxSize]; an empty input gives no chunk.
// - Chunker decides a cut only when it holds >= maxSize pending bytes (or at
//   finish()), so its boundaries equal chunkLengths() of the whole input,
//   however the input is sliced into push() calls.
// - Chunker copies pushed bytes; the returned chunks are subarrays of
//   internal buffers that are never written again, so they stay valid (and
//   keep their backing buffer, max(4 * maxSize, 1 MiB) bytes, alive).
//
// Two implementations of the cut loop: `cut` below, in JavaScript, is the
// reference, and fastcdc.wat, in WebAssembly, runs ~2.3x faster
// (bench/micro-chunker.ts). The WebAssembly one is used wherever the runtime
// has WebAssembly (not under --jitless); tests check that both give the same
// boundaries. It cuts bytes in its own memory, so callers with bytes in a JS
// buffer copy at most maxSize of them per cut (chunkLengths: the buffer once).

import { createHash } from "node:crypto"
import { CUT_WASM_BASE64 } from "./fastcdc-wasm.js"

export interface ChunkerParams {
  minSize: number
  avgSize: number
  maxSize: number
}

const MIN_MIN_SIZE = 64
const MIN_AVG_SIZE = 256
const MAX_AVG_SIZE = 1 << 26 // bits(avg) + 2 must fit in the 32-bit hash
const MAX_MAX_SIZE = 1 << 30

/** 256 x uint32 gear table derived deterministically from a per-repository seed (sha256 in counter mode of seed||uint32be(k)). */
export function gearTable(seed: Uint8Array): Uint32Array {
  const table = new Uint32Array(256)
  const counter = new Uint8Array(4)
  for (let k = 0; k < 32; k++) {
    new DataView(counter.buffer).setUint32(0, k, false)
    const digest = createHash("sha256").update(seed).update(counter).digest()
    for (let j = 0; j < 8; j++) table[k * 8 + j] = digest.readUInt32BE(j * 4)
  }
  return table
}

function isInt(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n)
}

/** Validates params (powers of two avg, min < avg < max, sane bounds) and throws a plain Error with a clear message if not. */
export function checkParams(p: ChunkerParams): void {
  const { minSize, avgSize, maxSize } = p ?? ({} as ChunkerParams)
  const shown = `{minSize: ${minSize}, avgSize: ${avgSize}, maxSize: ${maxSize}}`
  if (!isInt(minSize) || !isInt(avgSize) || !isInt(maxSize)) {
    throw new Error(`chunker params ${shown}: minSize, avgSize and maxSize must be integers`)
  }
  if (avgSize < MIN_AVG_SIZE || avgSize > MAX_AVG_SIZE || (avgSize & (avgSize - 1)) !== 0) {
    throw new Error(`chunker params ${shown}: avgSize must be a power of two between ${MIN_AVG_SIZE} and ${MAX_AVG_SIZE}`)
  }
  if (minSize < MIN_MIN_SIZE) {
    throw new Error(`chunker params ${shown}: minSize must be at least ${MIN_MIN_SIZE}`)
  }
  if (!(minSize < avgSize && avgSize < maxSize)) {
    throw new Error(`chunker params ${shown}: need minSize < avgSize < maxSize`)
  }
  if (maxSize > MAX_MAX_SIZE) {
    throw new Error(`chunker params ${shown}: maxSize must be at most ${MAX_MAX_SIZE}`)
  }
}

function checkGear(gear: Uint32Array): void {
  if (!(gear instanceof Uint32Array) || gear.length !== 256) {
    throw new Error("gear table must be a Uint32Array of 256 entries (see gearTable)")
  }
}

/** Params resolved once: masks over the high bits, and the gear table viewed as int32 (keeps the hot loop in int32 arithmetic). */
export interface Resolved {
  min: number
  avg: number
  max: number
  maskS: number
  maskL: number
  gear: Int32Array
}

function highMask(bits: number): number {
  return (~0 << (32 - bits)) | 0
}

export function resolve(params: ChunkerParams, gear: Uint32Array): Resolved {
  checkParams(params)
  checkGear(gear)
  const bits = Math.round(Math.log2(params.avgSize))
  return {
    min: params.minSize,
    avg: params.avgSize,
    max: params.maxSize,
    maskS: highMask(bits + 2),
    maskL: highMask(bits - 2),
    gear: new Int32Array(gear.buffer, gear.byteOffset, 256),
  }
}

/** The hot loop; trusts its inputs. Returns the length of the chunk at buf[start]. */
function cut(buf: Uint8Array, start: number, end: number, r: Resolved): number {
  let n = end - start
  if (n <= r.min) return n
  if (n > r.max) n = r.max
  const normal = n < r.avg ? start + n : start + r.avg
  const last = start + n
  const gear = r.gear
  const maskS = r.maskS
  const maskL = r.maskL
  let h = 0
  let i = start + r.min
  // Unrolled by two (measured ~15% faster); each byte is still tested.
  for (; i + 1 < normal; i += 2) {
    h = ((h << 1) + gear[buf[i]!]!) | 0
    if ((h & maskS) === 0) return i + 1 - start
    h = ((h << 1) + gear[buf[i + 1]!]!) | 0
    if ((h & maskS) === 0) return i + 2 - start
  }
  if (i < normal) {
    h = ((h << 1) + gear[buf[i]!]!) | 0
    if ((h & maskS) === 0) return i + 1 - start
    i++
  }
  for (; i + 1 < last; i += 2) {
    h = ((h << 1) + gear[buf[i]!]!) | 0
    if ((h & maskL) === 0) return i + 1 - start
    h = ((h << 1) + gear[buf[i + 1]!]!) | 0
    if ((h & maskL) === 0) return i + 2 - start
  }
  if (i < last) {
    h = ((h << 1) + gear[buf[i]!]!) | 0
    if ((h & maskL) === 0) return i + 1 - start
  }
  return n
}

/** The JavaScript cut loop's source, for worker threads without WebAssembly (chunk-reader.ts). */
export const CUT_SOURCE = cut.toString()

/** A cut loop over WebAssembly memory, from wasmCutter. */
export interface WasmCutter {
  /** `n` bytes of the cutter's memory, for the data to cut; valid until the next call. */
  view(n: number): Uint8Array
  /** The length of the chunk at offset `start` of the view, looking at most at [start, end). */
  cut(start: number, end: number, r: Resolved): number
}

/** What wasmCutter uses of the global WebAssembly. */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> }
}

/**
 * Instantiates fastcdc.wat (given as base64), or returns undefined where the
 * runtime has no WebAssembly. Refers to nothing outside itself: chunk
 * readers evaluate its source in their worker threads.
 */
export function wasmCutter(base64: string): WasmCutter | undefined {
  // (the TypeScript libs of a Node project without DOM do not declare WebAssembly)
  const api = (globalThis as { WebAssembly?: WasmApi }).WebAssembly
  if (!api) return undefined
  // memory layout (see fastcdc.wat): the gear table at 0, the data from 1024
  const dataAt = 1024
  const { exports } = new api.Instance(new api.Module(Buffer.from(base64, "base64")), {})
  const memory = exports.memory as { buffer: ArrayBuffer; grow(pages: number): number }
  const cutAt = exports.cut as (start: number, end: number, min: number, avg: number, max: number, maskS: number, maskL: number) => number
  let gear: Int32Array | undefined
  return {
    view(n) {
      // growing keeps the contents (the gear table too) but detaches earlier views
      const short = dataAt + n - memory.buffer.byteLength
      if (short > 0) memory.grow(Math.ceil(short / 65536))
      return new Uint8Array(memory.buffer, dataAt, n)
    },
    cut(start, end, r) {
      if (r.gear !== gear) {
        new Int32Array(memory.buffer, 0, 256).set(r.gear)
        gear = r.gear
      }
      return cutAt(dataAt + start, dataAt + end, r.min, r.avg, r.max, r.maskS, r.maskL)
    },
  }
}

/** The source of wasmCutter with the module's bytes bound: an expression for a worker thread. */
export const WASM_CUTTER_SOURCE = `(${wasmCutter.toString()})(${JSON.stringify(CUT_WASM_BASE64)})`

let shared: WasmCutter | undefined | null = null

/** This thread's WebAssembly cutter, or undefined without WebAssembly. */
function wasm(): WasmCutter | undefined {
  if (shared === null) shared = wasmCutter(CUT_WASM_BASE64)
  return shared
}

/** cut() with the WebAssembly loop where there is one: copies the at most maxSize bytes a cut can read. */
function cutFast(buf: Uint8Array, start: number, end: number, r: Resolved): number {
  const w = wasm()
  const n = Math.min(end - start, r.max)
  if (!w || n <= r.min) return cut(buf, start, end, r)
  w.view(n).set(buf.subarray(start, start + n))
  return w.cut(0, n, r)
}

/** Bytes copied into the WebAssembly memory at a time by chunkLengths (at least 2 * maxSize). */
const WASM_WINDOW = 4 << 20

/** Returns the length of the next chunk starting at buf[start], looking at most at buf[start..end). If end-start <= minSize return end-start. Never more than maxSize. */
export function cutPoint(buf: Uint8Array, start: number, end: number, params: ChunkerParams, gear: Uint32Array): number {
  if (!isInt(start) || !isInt(end) || start < 0 || start > end || end > buf.length) {
    throw new Error(`cutPoint: need 0 <= start <= end <= buf.length, got start ${start}, end ${end}, length ${buf.length}`)
  }
  return cutFast(buf, start, end, resolve(params, gear))
}

/** Convenience: chunk a whole buffer, returns chunk lengths. */
export function chunkLengths(buf: Uint8Array, params: ChunkerParams, gear: Uint32Array): number[] {
  const r = resolve(params, gear)
  const lengths: number[] = []
  const w = wasm()
  if (!w) {
    for (let pos = 0; pos < buf.length; ) {
      const n = cut(buf, pos, buf.length, r)
      lengths.push(n)
      pos += n
    }
    return lengths
  }
  // window by window; a cut is made only with maxSize bytes ahead in the window, or at the buffer's end
  for (let pos = 0; pos < buf.length; ) {
    const size = Math.min(buf.length - pos, Math.max(WASM_WINDOW, 2 * r.max))
    const last = pos + size === buf.length
    w.view(size).set(buf.subarray(pos, pos + size))
    let o = 0
    while (o < size && (last || size - o >= r.max)) {
      const n = w.cut(o, size, r)
      lengths.push(n)
      o += n
    }
    pos += o
  }
  return lengths
}

/** Streaming chunker: boundaries do NOT depend on how the input is sliced into push() calls. */
export class Chunker {
  private readonly r: Resolved
  private readonly capacity: number
  /** Pending bytes are buf[pos .. len); bytes before pos belong to emitted chunks and are never overwritten. */
  private buf: Uint8Array
  private pos = 0
  private len = 0
  private finished = false

  constructor(params: ChunkerParams, gear: Uint32Array) {
    this.r = resolve(params, gear)
    this.capacity = Math.max(4 * params.maxSize, 1 << 20)
    this.buf = new Uint8Array(this.capacity)
  }

  /** Feed bytes; returns complete chunks found so far (subarrays of internal buffers that stay valid after further pushes). */
  push(data: Uint8Array): Uint8Array[] {
    if (this.finished) throw new Error("Chunker.push called after finish()")
    const out: Uint8Array[] = []
    let off = 0
    while (off < data.length) {
      if (this.len === this.buf.length) this.refill()
      const take = Math.min(data.length - off, this.buf.length - this.len)
      this.buf.set(data.subarray(off, off + take), this.len)
      this.len += take
      off += take
      // Only cut with a full maxSize window: the cut is then the same as on the whole input.
      while (this.len - this.pos >= this.r.max) this.emit(out)
    }
    return out
  }

  /** End of input: returns the remaining chunk(s). The chunker cannot be used afterwards. */
  finish(): Uint8Array[] {
    if (this.finished) throw new Error("Chunker.finish called twice")
    this.finished = true
    const out: Uint8Array[] = []
    while (this.pos < this.len) this.emit(out)
    return out
  }

  private emit(out: Uint8Array[]): void {
    const n = cutFast(this.buf, this.pos, this.len, this.r)
    out.push(this.buf.subarray(this.pos, this.pos + n))
    this.pos += n
  }

  /** The buffer is full: move the pending tail (< maxSize bytes) to a fresh buffer; the old one now belongs to emitted chunks. */
  private refill(): void {
    const next = new Uint8Array(this.capacity)
    next.set(this.buf.subarray(this.pos, this.len))
    this.len -= this.pos
    this.pos = 0
    this.buf = next
  }
}
