// Shared machinery of the reliability suite: the CLI as a subprocess (run to
// completion, or SIGKILLed after a seeded delay), seeded corpora, the
// library stand-in for CLI commands this build may lack, and the one-line
// figures every category prints.
//
// CAIRN_RELIABILITY_FULL=1 selects the heavy loops; CAIRN_RELIABILITY_SEED
// (default 9) reseeds every random choice, so a failing run reproduces with
// the seed it printed (timing-dependent kills land at the same delays, not
// necessarily at the same instruction).

import { spawn } from "node:child_process"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { prng } from "../../store/backends/faulty.js"
import { buildTree, describeTree, type DirSpec, type Listing } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

export const FULL = process.env.CAIRN_RELIABILITY_FULL === "1"
export const SEED = Number(process.env.CAIRN_RELIABILITY_SEED ?? 9)
export const MAIN = path.resolve(import.meta.dirname, "../../dist/cli/main.js")
export const DRIVER = path.resolve(import.meta.dirname, "driver.mjs")

export type Rng = () => number

export function rng(salt: number): Rng {
  return prng((SEED * 0x9e3779b1 + salt) >>> 0)
}

export function randInt(r: Rng, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1))
}

export interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
  /** true when our SIGKILL ended it (it had not exited by itself) */
  killed: boolean
}

export interface RunOptions {
  env?: Record<string, string>
  /** SIGKILL the process this many ms after spawn */
  killAfterMs?: number
  /** fail the run (SIGKILL, code null) after this long; default 60 s */
  timeoutMs?: number
  /** run through `sh -c 'umask U; exec ...'` */
  umask?: string
}

/** Runs `node SCRIPT ARGS` (SCRIPT defaults to the CLI); optionally SIGKILLs it. */
export function runNode(script: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve) => {
    const started = performance.now()
    const argv = [script, ...args]
    const child =
      opts.umask === undefined
        ? spawn(process.execPath, argv, { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] })
        : spawn("/bin/sh", ["-c", `umask ${opts.umask}; exec "$0" "$@"`, process.execPath, ...argv], {
            env: { ...process.env, ...opts.env },
            stdio: ["ignore", "pipe", "pipe"],
          })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on("data", (d: Buffer) => out.push(d))
    child.stderr.on("data", (d: Buffer) => err.push(d))
    let killed = false
    const kill = opts.killAfterMs === undefined ? undefined : setTimeout(() => {
      killed = child.exitCode === null && child.signalCode === null
      child.kill("SIGKILL")
    }, opts.killAfterMs)
    const guard = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000)
    child.on("close", (code, signal) => {
      clearTimeout(kill)
      clearTimeout(guard)
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        ms: performance.now() - started,
        killed: killed && signal === "SIGKILL",
      })
    })
  })
}

export function cairn(args: string[], opts: RunOptions = {}): Promise<Run> {
  return runNode(MAIN, args, opts)
}

export const lastLine = (s: string) => s.trim().split("\n").pop() ?? ""

/** Whether this build's CLI has `gc` and `verify` (they call repo.gc()/repo.verify(), added separately). */
export interface Capabilities {
  gc: boolean
  verify: boolean
}

let caps: Promise<Capabilities> | undefined
export function capabilities(): Promise<Capabilities> {
  caps ??= (async () => {
    const dir = await tempDir("cairn-rel-caps-")
    const repo = path.join(dir, "repo")
    await cairn(["--repo", repo, "init"])
    const [gc, verify] = await Promise.all([cairn(["--repo", repo, "gc"]), cairn(["--repo", repo, "verify", "--read-data"])])
    await fsp.rm(dir, { recursive: true, force: true })
    const missing = (r: Run) => /has no repo\.\w+\(\)/.test(r.stderr)
    return { gc: !missing(gc), verify: !missing(verify) }
  })()
  return caps
}

/** `cairn gc`, or the library stand-in when this CLI lacks it. */
export async function gcCommand(repo: string): Promise<[string, string[]]> {
  return (await capabilities()).gc ? [MAIN, ["--repo", repo, "gc"]] : [DRIVER, ["gc", repo]]
}

/** `cairn verify --read-data`, or the library stand-in (same exit codes: 0 ok, 3 damage). */
export async function verifyCommand(repo: string): Promise<[string, string[]]> {
  return (await capabilities()).verify ? [MAIN, ["--repo", repo, "verify", "--read-data", "--json"]] : [DRIVER, ["verify", repo]]
}

export async function verify(repo: string): Promise<Run> {
  const [script, args] = await verifyCommand(repo)
  return runNode(script, args)
}

export async function gc(repo: string, opts: RunOptions = {}): Promise<Run> {
  const [script, args] = await gcCommand(repo)
  return runNode(script, args, opts)
}

export interface SnapshotRow {
  id: string
  name?: string
  createdAt: string
}

export async function listSnapshots(repo: string): Promise<SnapshotRow[]> {
  const r = await cairn(["--repo", repo, "ls", "--json"])
  if (r.code !== 0) throw new Error(`cairn ls failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as SnapshotRow[]
}

/** Opens the repository in this process (as every command does first) and lists its snapshots. */
export async function openAndList(repo: string): Promise<{ ids?: string[]; error?: string; ms: number }> {
  const started = performance.now()
  const { Repository } = await import("../../engine/repository.js")
  try {
    const r = await Repository.open({ path: repo, create: false })
    try {
      return { ids: (await r.snapshots.list()).map((s) => s.id), ms: performance.now() - started }
    } finally {
      await r.close()
    }
  } catch (err) {
    return { error: String(err), ms: performance.now() - started }
  }
}

/** Prints one summary line of figures for a category. */
export function report(category: string, figures: Record<string, number | string>): void {
  const body = Object.entries(figures)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ")
  console.log(`[reliability] ${category}: ${body} mode=${FULL ? "full" : "ci"} seed=${SEED}`)
}

export interface CorpusOptions {
  dirs: number
  filesPerDir: number
  bigFiles: number
  bigSize: number
}

export const DEFAULT_CORPUS: CorpusOptions = { dirs: 10, filesPerDir: 30, bigFiles: 4, bigSize: 1536 * 1024 }

/** A few hundred small files in nested dirs, a few MiB of random files, symlinks and a hardlink. */
export async function buildCorpus(root: string, seed: string, opts: CorpusOptions = DEFAULT_CORPUS): Promise<void> {
  const r = prng([...seed].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7))
  const spec: DirSpec = {}
  for (let d = 0; d < opts.dirs; d++) {
    const files: DirSpec = {}
    for (let f = 0; f < opts.filesPerDir; f++) {
      const size = Math.floor(r() * 12_000)
      files[`f${f}.txt`] = { file: textBytes(`${seed}/${d}/${f}`, size), mode: r() < 0.2 ? 0o755 : 0o644 }
    }
    files["deeper"] = { dir: { "leaf.txt": { file: `leaf ${seed} ${d}\n` } } }
    spec[`d${d}`] = { dir: files }
  }
  const big: DirSpec = {}
  for (let b = 0; b < opts.bigFiles; b++) big[`big${b}.bin`] = { file: seededBytes(`${seed}/big${b}`, opts.bigSize) }
  spec["big"] = { dir: big }
  spec["link-to-d0"] = { symlink: "d0/f0.txt" }
  spec["dangling"] = { symlink: "../nowhere" }
  spec["hard"] = { hardlink: "d0/f1.txt" }
  spec["empty"] = { dir: {} }
  await buildTree(root, spec)
}

/** Changes a corpus so that a snapshot of it has new data to write: fresh big files, some edited small ones. */
export async function mutateCorpus(root: string, r: Rng, tag: string, opts: CorpusOptions = DEFAULT_CORPUS): Promise<void> {
  for (let i = 0; i < 2; i++) {
    const b = randInt(r, 0, opts.bigFiles - 1)
    await fsp.writeFile(path.join(root, "big", `big${b}.bin`), seededBytes(`${tag}/big${b}/${i}`, opts.bigSize))
  }
  for (let i = 0; i < 8; i++) {
    const d = randInt(r, 0, opts.dirs - 1)
    const f = randInt(r, 0, opts.filesPerDir - 1)
    await fsp.writeFile(path.join(root, `d${d}`, `f${f}.txt`), textBytes(`${tag}/${d}/${f}`, randInt(r, 0, 12_000)))
  }
  await fsp.writeFile(path.join(root, `new-${tag}.txt`), `added in ${tag}\n`)
}

export { describeTree, tempDir, type Listing }

const TEMP_FILE = /^\.cairn-[0-9a-f]{8}-[0-9a-z]+\.tmp$/
/** A restore's stage (engine/restore.ts, Dest.stage): what is inside is not yet under its final name. */
const IN_STAGE = /^\.cairn-[0-9a-f]{8}-[0-9a-z]+\.stage(\/|$)/

/**
 * Checks a destination a killed restore left behind: every regular file under
 * a final name has the expected mode, size, content and mtime; every symlink
 * the expected target. Temp files (".cairn-*.tmp") and whatever lies in a
 * stage (".cairn-*.stage/") are counted, not judged.
 */
export async function checkPartialRestore(dest: string, expected: Listing): Promise<{ files: number; temps: number; wrong: string[] }> {
  const strip = (s: string) => s.replace(/ link=.*$/, "")
  const wrong: string[] = []
  let files = 0
  let temps = 0
  const st = await fsp.lstat(dest).catch(() => undefined)
  if (!st) return { files, temps, wrong }
  const got = await describeTree(dest)
  for (const [rel, desc] of Object.entries(got)) {
    if (TEMP_FILE.test(path.basename(rel)) || IN_STAGE.test(rel)) {
      temps++
      continue
    }
    const want = expected[rel]
    if (want === undefined) {
      wrong.push(`${rel}: not in the snapshot (${desc})`)
      continue
    }
    if (desc.startsWith("file ")) {
      files++
      if (strip(desc) !== strip(want)) wrong.push(`${rel}: ${desc} != ${want}`)
    } else if (desc.startsWith("symlink ")) {
      if (desc.split(" mtime=")[0] !== want.split(" mtime=")[0]) wrong.push(`${rel}: ${desc} != ${want}`)
    } else if (!want.startsWith("dir ")) wrong.push(`${rel}: a directory, expected ${want}`)
  }
  return { files, temps, wrong }
}

/**
 * Restores into a fresh directory and describes the result: in this process
 * through the library (the same code the CLI runs, without its ~0.2 s start),
 * or with `cli: true` through `cairn restore`.
 */
export async function restoreAndDescribe(repo: string, id: string, opts: { cli?: boolean } = {}): Promise<{ run: Run; listing?: Listing; dest: string }> {
  const dest = path.join(await tempDir("cairn-rel-out-"), "out")
  let run: Run
  if (opts.cli) run = await cairn(["--repo", repo, "restore", id, dest])
  else {
    const started = performance.now()
    const { Repository } = await import("../../engine/repository.js")
    let code = 0
    let stderr = ""
    try {
      const r = await Repository.open({ path: repo, create: false })
      try {
        await r.snapshots.restore(id, dest)
      } finally {
        await r.close()
      }
    } catch (err) {
      code = (err as { code?: string }).code === "INTEGRITY" ? 3 : 1
      stderr = `cairn: ${(err as Error).message}`
    }
    run = { code, signal: null, stdout: "", stderr, ms: performance.now() - started, killed: false }
  }
  const listing = run.code === 0 ? await describeTree(dest) : undefined
  await fsp.rm(path.dirname(dest), { recursive: true, force: true })
  return { run, listing, dest }
}

/** Every path under root (files and dirs), relative, with its mode. */
export async function walkModes(root: string): Promise<Array<{ rel: string; mode: number; type: string }>> {
  const out: Array<{ rel: string; mode: number; type: string }> = []
  const visit = async (dir: string, rel: string) => {
    for (const name of await fsp.readdir(dir)) {
      const p = path.join(dir, name)
      const r = rel ? `${rel}/${name}` : name
      const st = await fsp.lstat(p)
      if (st.isSymbolicLink()) continue
      out.push({ rel: r, mode: st.mode & 0o7777, type: st.isDirectory() ? "dir" : "file" })
      if (st.isDirectory()) await visit(p, r)
    }
  }
  await visit(root, "")
  return out
}
