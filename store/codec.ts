// Blob codecs: how a blob's bytes are stored inside a pack.
//
// - none (0): stored as is.
// - deflate (1): raw deflate, level 1.
// - brotli (2): brotli quality 1 with a small window (blobs are at most a
//   chunk long), the default: on this machine it compresses as well as
//   deflate-1 at about twice the speed (see shared notes and bench/micro.ts).
//
// Incompressible data (random, already compressed) in blobs over SMALL_BLOB
// costs no compression time: an order-0 entropy estimate over a small sample
// decides that such a blob is stored raw before any compressor runs; a
// compressor's output that would save less than 2% is thrown away in favour
// of the raw bytes (worthCompressing, blobEncoder). The codec is
// recorded per blob in the pack header. Blobs are compressed in a
// worker-thread pool (codec-pool.ts), so the compressor runs on the other
// core while the main thread chunks and hashes, except a process's first few
// MiB, which cost less inline than the worker's start (INLINE_BUDGET). Small
// blobs are decompressed inline, larger ones in the pool.

import { createRequire } from "node:module"
import type zlibModule from "node:zlib"
import { blobDecoder, blobEncoder, codecPool, COMPRESSED_AT_MOST, type BlobDecode, type BlobEncode } from "./codec-pool.js"

/** node:zlib, loaded when first used: an unchanged snapshot compresses and decompresses nothing. */
let zlibLoaded: typeof zlibModule | undefined
const zlib = (): typeof zlibModule => (zlibLoaded ??= createRequire(import.meta.url)("node:zlib") as typeof zlibModule)
let decoder: BlobDecode | undefined
let encoder: BlobEncode | undefined

export const CODEC_NONE = 0
export const CODEC_DEFLATE = 1
export const CODEC_BROTLI = 2
export type Codec = typeof CODEC_NONE | typeof CODEC_DEFLATE | typeof CODEC_BROTLI
export type CodecName = "none" | "deflate" | "brotli"

const NAMES: Record<CodecName, Codec> = { none: CODEC_NONE, deflate: CODEC_DEFLATE, brotli: CODEC_BROTLI }

export function codecFromName(name: string): Codec {
  const codec = NAMES[name as CodecName]
  if (codec === undefined) throw new Error(`unknown codec ${JSON.stringify(name)}: use none, deflate or brotli`)
  return codec
}

/**
 * Small blobs: compressed in the worker pool in batches (one message per
 * tick for all of them: a round trip each would cost the main thread more
 * than the compression), and decompressed (up to 4x this) synchronously on
 * the calling thread. Larger blobs go to the pool one by one.
 */
export const SMALL_BLOB = 16 * 1024


/** Blobs smaller than this are never worth a compressor call. */
const MIN_COMPRESS = 256
/** Bits per byte above which a sample is taken to be incompressible. */
const ENTROPY_LIMIT = 7.6
const SAMPLE = 4096

/** Order-0 entropy (bits per byte) of up to SAMPLE bytes spread over the data. */
export function sampleEntropy(data: Uint8Array): number {
  const counts = new Uint32Array(256)
  let n = 0
  if (data.length <= SAMPLE) {
    for (let i = 0; i < data.length; i++) counts[data[i]!]!++
    n = data.length
  } else {
    // four 1 KiB windows spread across the blob
    const win = SAMPLE / 4
    const step = Math.floor((data.length - win) / 3)
    for (let w = 0; w < 4; w++) {
      const start = w * step
      for (let i = start; i < start + win; i++) counts[data[i]!]!++
    }
    n = SAMPLE
  }
  let bits = 0
  for (let b = 0; b < 256; b++) {
    const c = counts[b]!
    if (c) {
      const p = c / n
      bits -= p * Math.log2(p)
    }
  }
  return bits
}

/**
 * Whether a blob is compressed at all: not below MIN_COMPRESS bytes; a small
 * one (up to SMALL_BLOB) always, since the compressor gives back what would
 * not save 2% and sampling costs the main thread (~7 us a blob, ~100 ms of
 * a first snapshot of the bench's workspace) more than compressing the odd
 * incompressible small file costs the compressor; a larger one unless its
 * sample looks random (order-0 entropy of a small sample is biased low; 7.6
 * bits/byte on 4 KiB is what random bytes give, text and code sit near 5,
 * binaries near 6).
 */
function worthCompressing(data: Uint8Array): boolean {
  return data.length >= MIN_COMPRESS && (data.length <= SMALL_BLOB || sampleEntropy(data) <= ENTROPY_LIMIT)
}

export interface Encoded {
  codec: Codec
  bytes: Uint8Array
  /** Gives the memory under `bytes` back for reuse, once they are copied (into a pack) or no longer needed; absent when there is none to give back. */
  release?: () => void
}

/**
 * Bytes a process compresses on the calling thread before it starts the
 * pool. A worker's start costs ~80 ms of CPU and ~9 MiB of new memory (on
 * this project's VM ~2,300 page faults at ~20 us); compressing 4 MiB inline
 * costs the caller 10-20 ms (brotli at quality 1 runs at 230-500 MB/s here).
 * A snapshot after a small change (a few MiB new) then needs no compressor
 * thread; a large one starts the pool once the budget is spent, and keeps it.
 */
const INLINE_BUDGET = 4 << 20
let inlineLeft = INLINE_BUDGET

/** Whether this blob is compressed inline (see INLINE_BUDGET); takes it from the budget if so. */
function compressInline(data: Uint8Array): boolean {
  if (inlineLeft < data.length || codecPool().started > 0) {
    inlineLeft = 0
    return false
  }
  inlineLeft -= data.length
  return true
}

/**
 * Starts the compressor threads now, for a caller that knows many blobs to
 * compress will come (preferred: the codec they will be encoded with): a
 * worker's start (~80 ms of CPU) then overlaps with the caller's work, on a
 * core it leaves idle, instead of delaying the first blobs past the inline
 * budget. A first snapshot of the bench's workspace, which warms it once
 * its scan has found 16 MiB of new large files, took 2.90 s instead of 3.02
 * and 2.81 instead of 2.90 (two sets of 10 alternating runs; faster in 7
 * and 8 of the 10 pairs).
 */
export function warmCompressor(preferred: Codec): void {
  if (preferred !== CODEC_NONE) codecPool().warm()
}

export async function encode(data: Uint8Array, preferred: Codec): Promise<Encoded> {
  if (preferred === CODEC_NONE || !worthCompressing(data)) return { codec: CODEC_NONE, bytes: data }
  if (compressInline(data)) return kept(data, preferred, encodeHere(preferred, data))
  const out = data.length <= SMALL_BLOB ? await codecPool().encodeSmall(preferred, data) : await codecPool().encode(preferred, data)
  if (out === undefined) return { codec: CODEC_NONE, bytes: data }
  const encoded = kept(data, preferred, out.bytes)
  if (encoded.bytes === data) out.release()
  else encoded.release = out.release
  return encoded
}

/**
 * encode on the calling thread, whatever the budget: the same choice of
 * codec and the same bytes (for measuring what compression costs, as
 * bench/floor.ts does).
 */
export function encodeInline(data: Uint8Array, preferred: Codec): Encoded {
  if (preferred === CODEC_NONE || !worthCompressing(data)) return { codec: CODEC_NONE, bytes: data }
  return kept(data, preferred, encodeHere(preferred, data))
}

function encodeHere(preferred: Codec, data: Uint8Array): Uint8Array {
  return (encoder ??= blobEncoder(zlib()))(preferred, data)
}

/** What a blob is stored as, given the encoder's output: that, unless it saves too little (the encoder then gives back the input, or, in a batch of small blobs, a copy of it). */
function kept(data: Uint8Array, preferred: Codec, out: Uint8Array): Encoded {
  return out.length >= data.length * COMPRESSED_AT_MOST ? { codec: CODEC_NONE, bytes: data } : { codec: preferred, bytes: out }
}

/**
 * Decodes stored bytes: large blobs in the pool unless `inline` (then always
 * on the caller's thread). Throws a plain Error on malformed input (callers
 * add context).
 */
export async function decode(codec: number, bytes: Uint8Array, rawLength: number, inline = false): Promise<Uint8Array> {
  switch (codec) {
    case CODEC_NONE:
      return bytes
    case CODEC_BROTLI:
    case CODEC_DEFLATE:
      if (inline || rawLength <= SMALL_BLOB * 4) return (decoder ??= blobDecoder(zlib()))(codec, bytes, rawLength)
      return codecPool().decode(codec, bytes, rawLength)
    default:
      throw new Error(`unknown codec ${codec}`)
  }
}
