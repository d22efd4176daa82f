// Shared test helpers: temp directories, seeded bytes, counted backend reads.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import type { ObjectStore } from "../store/backend.js"

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

/** A view of backend that records the key of every get of a pack (data/...). */
export function countingPackReads(backend: ObjectStore): { backend: ObjectStore; packReads: string[] } {
  const packReads: string[] = []
  const counting = new Proxy(backend, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver)
      if (prop !== "get") return typeof v === "function" ? v.bind(target) : v
      return (key: string, range?: { offset: number; length: number }) => {
        if (key.startsWith("data/")) packReads.push(key)
        return target.get(key, range)
      }
    },
  }) as ObjectStore
  return { backend: counting, packReads }
}
