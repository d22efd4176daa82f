// Shared test helpers: temp directories, seeded bytes, counted backend reads.
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { pathToFileURL } from "node:url"
import type { ObjectStore } from "../store/backend.js"

const made: string[] = []

/** A fresh directory under the OS temp dir, removed after the test file (test/setup.ts). */
export async function tempDir(prefix = "cairn-test-"): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix))
  made.push(dir)
  return dir
}

/**
 * Removes the directories tempDir made in this process. Restores reproduce
 * read-only directories, whose entries cannot be removed: those are made
 * writable first.
 */
export async function removeTempDirs(): Promise<void> {
  for (const dir of made.splice(0)) {
    try {
      await fsp.rm(dir, { recursive: true, force: true })
    } catch {
      await makeWritable(dir)
      await fsp.rm(dir, { recursive: true, force: true })
    }
  }
}

async function makeWritable(dir: string): Promise<void> {
  await fsp.chmod(dir, 0o700).catch(() => {})
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory()) await makeWritable(path.join(dir, e.name))
  }
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

/**
 * Waits out the file system's timestamp tick (engine/statcache.ts, tooRecent):
 * files written before it count as unchanged to the next snapshot's cache, as
 * files written longer ago than a tick before a snapshot do.
 */
export function pastTick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 30))
}

/**
 * Runs `body` (an ES module's statements, which may await) in a node with V8's
 * natives syntax, after `const build = (m) => import(<dist/m>)` (the compiled
 * build: npm test builds it first), and returns what it prints. For tests of
 * object shapes: `%HaveSameMap(a, b)` says whether two objects share a hidden
 * class (objects made by spreading another and adding properties each had one
 * of their own).
 */
export function runWithNatives(body: string): string {
  const dist = pathToFileURL(path.resolve(import.meta.dirname, "../dist")).href
  const script = `const build = (m) => import(${JSON.stringify(dist)} + "/" + m)\n${body}`
  return execFileSync(process.execPath, ["--allow-natives-syntax", "--input-type=module", "-e", script], { encoding: "utf8" }).trim()
}
