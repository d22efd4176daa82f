// Benchmark corpora, generated reproducibly under bench/corpora/ (gitignored).
//
//   workspace        an npm project: `npm ci --ignore-scripts` of the pinned
//                    lockfile in bench/workspace-recipe/, a copy of the node
//                    binary, 32 MiB of seeded random data, and a 200 MiB file of
//                    mixed compressible and random 1 MiB blocks.
//   small-files-N    N small files (100,000 full, 10,000 quick), three levels
//                    deep, text and random content, some duplicates, a few
//                    symlinks and executables, mtimes with microsecond parts.
//   large-S          one file of S bytes (1 GiB full, 256 MiB quick), mixed
//                    compressible and random 1 MiB blocks.
//
// Random bytes are AES-256-CTR keystream under a key derived from a seed, so
// every run produces the same bytes. A corpus is regenerated only when its
// stamp file (bench/corpora/NAME.recipe.json) is missing or names another
// recipe, or when a dirty marker says an edit was interrupted.
//
// Scenarios edit corpora in place (`applyChange`) and undo the edit
// afterwards, restoring bytes and mtimes of files and parent directories.

import { execFileSync } from "node:child_process"
import { createCipheriv, createHash } from "node:crypto"
import {
  closeSync,
  copyFileSync,
  existsSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
  chmodSync,
} from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { dirSize, type DirSize } from "./harness.js"

/** Bump when a generator changes what it writes. */
const RECIPE_VERSION = 1
const MiB = 1 << 20

export const PROJECT_ROOT = fileURLToPath(new URL("../../", import.meta.url))
export const BENCH_SRC = join(PROJECT_ROOT, "bench")
export const CORPORA_DIR = join(BENCH_SRC, "corpora")

export interface Corpus {
  name: string
  dir: string
  size: DirSize
  generatedMs: number
  cached: boolean
  /** The file where "1 MiB rewritten in the middle" happens, relative to dir. */
  bigFile?: string
  /** A few text files that the small change edits, relative to dir. */
  editable: string[]
}

// ---------------------------------------------------------------- seeded data

/** Deterministic pseudo-random bytes: AES-256-CTR keystream. */
export class SeededStream {
  private cipher
  constructor(seed: string) {
    const key = createHash("sha256").update(`cairn-bench:${seed}`).digest()
    this.cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16))
  }
  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n))
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return this.bytes(4).readUInt32LE(0) % n
  }
}

const WORDS = (
  "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were " +
  "function return const let var import export default class extends async await promise module require undefined null " +
  "true false object array string number boolean error value result options config index node package version license " +
  "buffer stream event listener callback handler request response server client router middleware render component state"
).split(" ")

/** Text-like, compressible bytes (source-code-ish lines of words). */
export function textBytes(rng: SeededStream, n: number): Buffer {
  const r = rng.bytes(n) // one random byte drives each word choice
  const parts: string[] = []
  let len = 0
  let i = 0
  while (len < n) {
    const b = r[i++ % n]!
    const w = WORDS[b % WORDS.length]!
    const sep = b % 11 === 0 ? ";\n" : b % 5 === 0 ? "(" : " "
    parts.push(w, sep)
    len += w.length + sep.length
  }
  return Buffer.from(parts.join(""), "latin1").subarray(0, n)
}

/** Writes `size` bytes of 1 MiB blocks, each text (60%) or random (40%). */
function writeMixedFile(path: string, size: number, seed: string): void {
  const rng = new SeededStream(seed)
  const fd = openSync(path, "w")
  try {
    for (let off = 0; off < size; off += MiB) {
      const n = Math.min(MiB, size - off)
      const block = rng.int(10) < 6 ? textBytes(rng, n) : rng.bytes(n)
      writeSync(fd, block)
    }
  } finally {
    closeSync(fd)
  }
}

// ---------------------------------------------------------------- cache stamps

interface Stamp {
  version: number
  recipe: Record<string, unknown>
}

function stampPath(name: string): string {
  return join(CORPORA_DIR, `${name}.recipe.json`)
}
function dirtyPath(name: string): string {
  return join(CORPORA_DIR, `${name}.dirty`)
}

function isCached(name: string, recipe: Record<string, unknown>): boolean {
  if (existsSync(dirtyPath(name)) || !existsSync(join(CORPORA_DIR, name))) return false
  try {
    const s = JSON.parse(readFileSync(stampPath(name), "utf8")) as Stamp
    return s.version === RECIPE_VERSION && JSON.stringify(s.recipe) === JSON.stringify(recipe)
  } catch {
    return false
  }
}

async function ensure(
  name: string,
  recipe: Record<string, unknown>,
  generate: (dir: string) => void,
  log: (s: string) => void,
): Promise<{ dir: string; generatedMs: number; cached: boolean; size: DirSize }> {
  const dir = join(CORPORA_DIR, name)
  let generatedMs = 0
  const cached = isCached(name, recipe)
  if (!cached) {
    log(`generating corpus ${name} ...`)
    const t0 = performance.now()
    rmSync(dir, { recursive: true, force: true })
    rmSync(stampPath(name), { force: true })
    mkdirSync(dir, { recursive: true })
    generate(dir)
    writeFileSync(stampPath(name), JSON.stringify({ version: RECIPE_VERSION, recipe } satisfies Stamp, null, 2))
    rmSync(dirtyPath(name), { force: true })
    generatedMs = performance.now() - t0
    log(`  ${name}: ${(generatedMs / 1000).toFixed(1)} s`)
  }
  return { dir, generatedMs, cached, size: await dirSize(dir) }
}

// ---------------------------------------------------------------- generators

const WORKSPACE_RANDOM = 32 * MiB
const WORKSPACE_BIG = 200 * MiB

export async function workspaceCorpus(log: (s: string) => void): Promise<Corpus> {
  const recipeDir = join(BENCH_SRC, "workspace-recipe")
  const lockHash = createHash("sha256").update(readFileSync(join(recipeDir, "package-lock.json"))).digest("hex").slice(0, 16)
  const recipe = { lockHash, node: process.version, random: WORKSPACE_RANDOM, big: WORKSPACE_BIG }
  const r = await ensure(
    "workspace",
    recipe,
    (dir) => {
      copyFileSync(join(recipeDir, "package.json"), join(dir, "package.json"))
      copyFileSync(join(recipeDir, "package-lock.json"), join(dir, "package-lock.json"))
      // npm's cache (~/.npm) is reused; --prefer-offline avoids revalidation.
      execFileSync("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], {
        cwd: dir,
        stdio: ["ignore", "ignore", "inherit"],
      })
      mkdirSync(join(dir, "bin"))
      copyFileSync(process.execPath, join(dir, "bin", "node"))
      chmodSync(join(dir, "bin", "node"), 0o755)
      mkdirSync(join(dir, "data"))
      writeFileSync(join(dir, "data", "random-32m.bin"), new SeededStream("workspace-random").bytes(WORKSPACE_RANDOM))
      writeMixedFile(join(dir, "data", "big-200m.bin"), WORKSPACE_BIG, "workspace-big")
      mkdirSync(join(dir, "src"))
      const rng = new SeededStream("workspace-src")
      for (let i = 0; i < 20; i++) writeFileSync(join(dir, "src", `module-${i}.js`), textBytes(rng, 2000 + rng.int(20000)))
    },
    log,
  )
  return {
    name: "workspace",
    ...r,
    bigFile: "data/big-200m.bin",
    editable: ["src/module-3.js", "src/module-7.js", "package.json", "node_modules/express/lib/router/index.js"],
  }
}

export async function smallFilesCorpus(count: number, log: (s: string) => void): Promise<Corpus> {
  const name = `small-files-${count >= 1000 ? `${count / 1000}k` : count}`
  const fanout = 10 // 10 x 10 x 10 leaf directories
  const recipe = { count, fanout }
  const r = await ensure(
    name,
    recipe,
    (dir) => {
      const rng = new SeededStream(`small-files-${count}`)
      const leaves = fanout ** 3
      const perLeaf = Math.ceil(count / leaves)
      const written: string[] = []
      let n = 0
      const baseTime = 1_700_000_000
      for (let leaf = 0; leaf < leaves && n < count; leaf++) {
        const a = Math.floor(leaf / 100)
        const b = Math.floor(leaf / 10) % 10
        const c = leaf % 10
        const rel = join(`d${a}`, `e${b}`, `f${c}`)
        mkdirSync(join(dir, rel), { recursive: true })
        for (let i = 0; i < perLeaf && n < count; i++, n++) {
          const p = join(rel, `file-${i}.${i % 3 ? "txt" : "dat"}`)
          const roll = rng.int(100)
          let data: Buffer
          if (written.length > 0 && roll < 8) {
            data = readFileSync(join(dir, written[rng.int(written.length)]!)) // duplicate content
          } else {
            const sizeRoll = rng.int(100)
            const size = sizeRoll < 70 ? 64 + rng.int(2048) : sizeRoll < 95 ? 2048 + rng.int(6144) : 8192 + rng.int(24576)
            data = roll < 80 ? textBytes(rng, size) : rng.bytes(size)
          }
          writeFileSync(join(dir, p), data)
          if (roll % 20 === 0) chmodSync(join(dir, p), 0o755)
          const t = baseTime + n * 7.123457 // microsecond fractions
          utimesSync(join(dir, p), t, t)
          if (written.length < 1000) written.push(p)
        }
        if (leaf % 50 === 0) symlinkSync(`../e${b}/f${c}/file-0.dat`, join(dir, rel, "link-to-first"))
      }
    },
    log,
  )
  return { name, ...r, editable: ["d0/e0/f0/file-1.txt", "d0/e5/f5/file-2.txt", "d5/e0/f1/file-4.txt", "d9/e9/f9/file-0.dat"].filter((p) => existsSync(join(r.dir, p))) }
}

export async function largeCorpus(bytes: number, log: (s: string) => void): Promise<Corpus> {
  const name = `large-${bytes >= 1 << 30 ? `${bytes / (1 << 30)}g` : `${bytes / MiB}m`}`
  const r = await ensure(name, { bytes }, (dir) => writeMixedFile(join(dir, "large.bin"), bytes, `large-${bytes}`), log)
  return { name, ...r, bigFile: "large.bin", editable: [] }
}

// ---------------------------------------------------------------- edits

type Saved =
  | { kind: "region"; path: string; offset: number; data: Buffer; mtimeNs: bigint }
  | { kind: "whole"; path: string; data: Buffer; mode: number; mtimeNs: bigint }
  | { kind: "created"; path: string }
  | { kind: "dirtime"; path: string; mtimeNs: bigint }

/** Sets mtime with nanosecond precision (fs.utimes takes a double and can round). */
function setMtimeNs(path: string, ns: bigint): void {
  const sec = ns / 1_000_000_000n
  const frac = (ns % 1_000_000_000n).toString().padStart(9, "0")
  execFileSync("touch", ["-h", "-m", "-d", `@${sec}.${frac}`, path])
}

/** Reverts an applied change; idempotent. */
export type Undo = () => void

/**
 * Applies the scripted small change number `k` to a corpus: appends a line to
 * a few text files, adds one new file, and rewrites 1 MiB in the middle of the
 * big file (the offset moves with k). Returns an Undo that restores bytes,
 * modes and mtimes of everything touched, including parent directories.
 */
export function applyChange(corpus: Corpus, k: number): Undo {
  const saved: Saved[] = []
  const root = corpus.dir
  writeFileSync(dirtyPath(corpus.name), String(k))
  const saveDir = (rel: string): void => {
    const st = statSync(join(root, rel), { bigint: true })
    saved.push({ kind: "dirtime", path: rel, mtimeNs: st.mtimeNs })
  }
  const rng = new SeededStream(`change-${corpus.name}-${k}`)

  const files = corpus.editable.length ? [corpus.editable[k % corpus.editable.length]!, corpus.editable[(k + 1) % corpus.editable.length]!] : []
  for (const rel of new Set(files)) {
    const p = join(root, rel)
    const st = lstatSync(p, { bigint: true })
    saved.push({ kind: "whole", path: rel, data: readFileSync(p), mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs })
    writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.from(`\n// bench edit ${k}\n`)]))
  }

  const dirForNew = corpus.editable.length ? dirname(corpus.editable[0]!) : "."
  const newRel = join(dirForNew, `bench-new-${k}.txt`)
  saveDir(dirForNew)
  saved.push({ kind: "created", path: newRel })
  writeFileSync(join(root, newRel), textBytes(rng, 4096))

  if (corpus.bigFile) {
    const p = join(root, corpus.bigFile)
    const fd = openSync(p, "r+")
    try {
      const st = fstatSync(fd, { bigint: true })
      const size = Number(st.size)
      // Middle of the file, moved by k MiB so that successive changes differ.
      const offset = Math.max(0, Math.min(size - MiB, Math.floor(size / 2 / MiB) * MiB + ((k * 3) % 16) * MiB - 8 * MiB))
      const old = Buffer.alloc(Math.min(MiB, size))
      readSync(fd, old, 0, old.length, offset)
      saved.push({ kind: "region", path: corpus.bigFile, offset, data: old, mtimeNs: st.mtimeNs })
      writeSync(fd, rng.bytes(old.length), 0, old.length, offset)
    } finally {
      closeSync(fd)
    }
  }

  let undone = false
  return () => {
    if (undone) return
    undone = true
    for (const s of [...saved].reverse()) {
      const p = join(root, s.path)
      switch (s.kind) {
        case "region": {
          const fd = openSync(p, "r+")
          writeSync(fd, s.data, 0, s.data.length, s.offset)
          closeSync(fd)
          setMtimeNs(p, s.mtimeNs)
          break
        }
        case "whole":
          writeFileSync(p, s.data)
          chmodSync(p, s.mode)
          setMtimeNs(p, s.mtimeNs)
          break
        case "created":
          if (existsSync(p)) unlinkSync(p)
          break
        case "dirtime":
          setMtimeNs(p, s.mtimeNs)
          break
      }
    }
  }
}

/** Marks the corpus clean again after all undos ran. */
export function markClean(corpus: Corpus): void {
  rmSync(dirtyPath(corpus.name), { force: true })
}

/** Names of the corpora present under bench/corpora (for the README / debugging). */
export function listCorpora(): string[] {
  return existsSync(CORPORA_DIR) ? readdirSync(CORPORA_DIR).filter((n) => !n.includes(".")) : []
}
