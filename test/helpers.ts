// Shared test helpers: temp directories and seeded bytes.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"

export async function tempDir(prefix = "cairn-test-"): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Deterministic pseudo-random bytes (sha256 in counter mode). */
export function seededBytes(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length)
  let at = 0
  for (let i = 0; at < length; i++) {
    const block = createHash("sha256").update(`${seed}:${i}`).digest()
    block.copy(out, at, 0, Math.min(32, length - at))
    at += 32
  }
  return out
}

/** Compressible text-like bytes. */
export function textBytes(seed: string, length: number): Buffer {
  const words = ["cairn", "snapshot", "restore", "box", "chunk", "pack", "index", "tree", "blob", "store", "\n"]
  const rnd = seededBytes(seed, length)
  const parts: string[] = []
  let size = 0
  for (let i = 0; size < length; i++) {
    const w = words[rnd[i % rnd.length]! % words.length]!
    parts.push(w + " ")
    size += w.length + 1
  }
  return Buffer.from(parts.join("")).subarray(0, length)
}
