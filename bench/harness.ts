// Measurement primitives for the benchmark: timed subprocesses, summary
// statistics, directory sizes, and restore verification.
//
// Every command runs under GNU `/usr/bin/time -f "%e %M" -o FILE`, which gives
// the child's peak resident set size (KiB, the largest of the process and
// the children it waited for). Wall time comes from `process.hrtime` around
// the spawn, which is finer than time(1)'s 10 ms resolution. A `Meter`
// accumulates several commands into one measurement: wall times add up,
// peak RSS is the maximum (or the sum, for commands run concurrently).

import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync, statfsSync } from "node:fs"
import { lstat, mkdir, mkdtemp, readFile, readdir, rename, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Input written to the child's stdin. */
  input?: string
  /** Exit codes that count as success (default [0]). */
  okCodes?: number[]
}

export interface RunResult {
  stdout: string
  stderr: string
  code: number
  wallMs: number
  rssKiB: number
}

export class CommandError extends Error {
  readonly code = "BENCH_COMMAND_FAILED"
  constructor(
    readonly argv: string[],
    readonly exitCode: number,
    readonly stderr: string,
  ) {
    super(`${argv.join(" ")} exited ${exitCode}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`)
  }
}

const TIME_BIN = "/usr/bin/time"

/** Runs one command under /usr/bin/time; throws CommandError on failure. */
export async function runTimed(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), "cairn-bench-time-"))
  const timeFile = join(dir, "time")
  try {
    const t0 = process.hrtime.bigint()
    const { stdout, stderr, code } = await spawnCollect(TIME_BIN, ["-f", "%e %M", "-o", timeFile, cmd, ...args], opts)
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6
    let rssKiB = 0
    try {
      const lines = (await readFile(timeFile, "utf8")).trim().split("\n")
      const last = lines[lines.length - 1] ?? ""
      rssKiB = Number(last.split(" ")[1] ?? 0) || 0
    } catch {
      // time(1) writes nothing if the command could not be started.
    }
    if (!(opts.okCodes ?? [0]).includes(code)) throw new CommandError([cmd, ...args], code, stderr)
    return { stdout, stderr, code, wallMs, rssKiB }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

// Deleted trees go to a trash directory, emptied only between measurements.
// Deleting frees inodes, and on ext4 without a journal (this VM's root file
// system) a new file skips over the recently freed inodes of its block group
// one by one (recently_deleted() in fs/ext4/ialloc.c): an inode freed less
// than 60 s ago, or less than 360 s ago while its inode-table block is dirty
// (RECENTCY_MIN, RECENTCY_DIRTY), which every file created beside it makes
// it. A restore started right after the previous one was deleted spent 5-8 s
// of system time there instead of ~1.7 s, cp -a of the workspace took 2-4 s
// instead of 0.7 s, and one 4.8 min after a deletion still paid 3.1 s: the
// order of the runs decided the figures. A rename into the trash frees
// nothing; emptyTrash() deletes it all and then waits out the kernel's
// window, when it freed enough inodes to matter.
let trashDir: string | undefined
let trashed = 0

/** Directory (on the same file system as every tree removeTree gets) that deleted trees are moved to. */
export async function useTrash(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  trashDir = dir
}

/** Removes a tree: moved into the trash when there is one, else deleted with rm(1) (fs.rm walks 100,000 files with a promise each, several times slower). */
export async function removeTree(path: string): Promise<void> {
  if (trashDir) {
    try {
      await rename(path, join(trashDir, String(trashed++)))
      return
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return
    }
  }
  await run("rm", ["-rf", "--", path])
}

/** Bytes free on the trash's file system. */
export function trashRoom(): number {
  if (!trashDir) return Infinity
  const s = statfsSync(trashDir)
  return s.bavail * s.bsize
}

/** Deletes the trash, then waits until new files no longer meet the inodes it freed. */
export async function emptyTrash(log: (s: string) => void): Promise<void> {
  if (!trashDir || (await readdir(trashDir)).length === 0) return
  const t0 = Date.now()
  const before = statfsSync(trashDir).ffree
  await run("rm", ["-rf", "--", trashDir])
  await mkdir(trashDir, { recursive: true })
  await settleDeletes(statfsSync(trashDir).ffree - before, `emptied the trash in ${((Date.now() - t0) / 1000).toFixed(1)} s`, log)
}

/** ext4's window for a freed inode whose inode-table block is dirty (RECENTCY_MIN + RECENTCY_DIRTY), and a margin. */
const RECENTLY_DELETED_S = 60 + 300 + 5
/** Fewer freed inodes than this cost new files nothing measurable. */
const FREED_INODES_THAT_MATTER = 1000

/** After a deletion that freed `freed` inodes: waits out the kernel's window for them (see the trash, above). */
export async function settleDeletes(freed: number, what: string, log: (s: string) => void): Promise<void> {
  if (freed < FREED_INODES_THAT_MATTER) return log(`  ${what}, ${freed} inodes freed: no wait`)
  log(`  ${what}, ${freed} inodes freed; waiting ${RECENTLY_DELETED_S} s until new files no longer skip them`)
  await run("sync", [])
  await new Promise((r) => setTimeout(r, RECENTLY_DELETED_S * 1000))
}

/**
 * Writes back every dirty page (sync(1)) before a measured command, so that
 * none pays for the writeback of the one before it: without it, every tool's
 * first repetition was its fastest, and a restore took 5.4 s with the
 * previous runs' data still dirty against 2.9 s on a quiet page cache. The
 * page cache itself stays warm (dropping it needs root).
 */
export async function settle(): Promise<void> {
  await run("sync", [])
}

/** Runs a command without timing it; throws CommandError on failure. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr, code } = await spawnCollect(cmd, args, opts)
  if (!(opts.okCodes ?? [0]).includes(code)) throw new CommandError([cmd, ...args], code, stderr)
  return { stdout, stderr }
}

function spawnCollect(cmd: string, args: string[], opts: RunOptions): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    let errLen = 0
    child.stdout!.on("data", (b: Buffer) => out.push(b))
    child.stderr!.on("data", (b: Buffer) => {
      // Keep the tail of stderr only: some tools are chatty.
      err.push(b)
      errLen += b.length
      while (errLen > 256 << 10 && err.length > 1) errLen -= err.shift()!.length
    })
    child.on("error", reject)
    child.on("close", (code, signal) => {
      resolve({
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        code: code ?? (signal ? 128 : 1),
      })
    })
    if (opts.input !== undefined) {
      child.stdin!.on("error", () => {}) // a child that exits early closes its stdin
      child.stdin!.end(opts.input)
    }
  })
}

/** Is `cmd` on PATH? */
export async function onPath(cmd: string): Promise<boolean> {
  const { code } = await spawnCollect("sh", ["-c", `command -v ${cmd}`], {})
  return code === 0
}

/**
 * Accumulates the commands of one measured step. `run` adds wall time and
 * keeps the maximum RSS; `parallel` runs several at once and counts their
 * elapsed time once and their peak RSS summed (they were resident together).
 */
export class Meter {
  wallMs = 0
  rssKiB = 0
  commands = 0

  /** settle: sync(1) before each command (off for the sub-meters of parallel(), which settles once for all) */
  constructor(
    readonly env: NodeJS.ProcessEnv = process.env,
    private readonly settle = true,
  ) {}

  async run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    if (this.settle) await settle()
    const r = await runTimed(cmd, args, { env: this.env, ...opts })
    this.wallMs += r.wallMs
    this.rssKiB = Math.max(this.rssKiB, r.rssKiB)
    this.commands++
    return r
  }

  /** Shell snippet; `sh -c`, measured as one command. */
  sh(script: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.run("sh", ["-c", script], opts)
  }

  /** Runs the thunks concurrently, each with its own sub-meter. */
  async parallel(tasks: Array<(m: Meter) => Promise<unknown>>): Promise<void> {
    if (this.settle) await settle()
    const t0 = process.hrtime.bigint()
    const meters = tasks.map(() => new Meter(this.env, false))
    await Promise.all(tasks.map((t, i) => t(meters[i]!)))
    this.wallMs += Number(process.hrtime.bigint() - t0) / 1e6
    this.rssKiB = Math.max(this.rssKiB, meters.reduce((s, m) => s + m.rssKiB, 0))
    this.commands += meters.reduce((s, m) => s + m.commands, 0)
  }

  /** Times in-process work (no RSS of its own beyond this process). */
  async inProcess<T>(fn: () => Promise<T>): Promise<T> {
    if (this.settle) await settle()
    const t0 = process.hrtime.bigint()
    const v = await fn()
    this.wallMs += Number(process.hrtime.bigint() - t0) / 1e6
    this.rssKiB = Math.max(this.rssKiB, Math.round(process.memoryUsage().rss / 1024))
    return v
  }
}

// ---------------------------------------------------------------- statistics

export interface Summary {
  median: number
  min: number
  max: number
  n: number
}

export function summarize(xs: number[]): Summary {
  if (xs.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 }
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length }
}

// ---------------------------------------------------------------- sizes

export interface DirSize {
  bytes: number
  files: number
  dirs: number
  symlinks: number
}

/** Apparent size (sum of st_size of regular files) and entry counts of a tree. */
export async function dirSize(root: string): Promise<DirSize> {
  const acc: DirSize = { bytes: 0, files: 0, dirs: 0, symlinks: 0 }
  async function walk(dir: string): Promise<void> {
    let entries
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch {
      return
    }
    const subdirs: string[] = []
    await Promise.all(
      entries.map(async (e) => {
        const p = join(dir, e.name)
        if (e.isDirectory()) {
          acc.dirs++
          subdirs.push(p)
        } else if (e.isSymbolicLink()) {
          acc.symlinks++
        } else if (e.isFile()) {
          const st = await lstat(p) // await first: `acc.bytes += await ...` would lose updates
          acc.files++
          acc.bytes += st.size
        }
      }),
    )
    for (const d of subdirs) await walk(d)
  }
  await walk(root)
  return acc
}

// ---------------------------------------------------------------- verification

interface Entry {
  kind: "file" | "dir" | "symlink" | "other"
  mode: number
  mtimeUs: bigint
  size: number
  hash?: string
  target?: string
}

export type Manifest = Map<string, Entry>

export interface VerifyOptions {
  /** Compare directory mtimes too (default true). */
  dirMtimes?: boolean
}

export interface Verification {
  ok: boolean
  entries: number
  mismatches: Record<"missing" | "extra" | "kind" | "content" | "mode" | "mtime" | "symlink", number>
  examples: string[]
}

const HASH_BLOCK = 1 << 20
const hashBuffer = Buffer.allocUnsafe(HASH_BLOCK)

function hashFile(path: string): string {
  const h = createHash("sha256")
  const fd = openSync(path, "r")
  try {
    for (let n; (n = readSync(fd, hashBuffer, 0, HASH_BLOCK, null)) > 0; ) h.update(hashBuffer.subarray(0, n))
  } finally {
    closeSync(fd)
  }
  return h.digest("hex")
}

/**
 * Walks a tree into a manifest: kind, permission bits, mtime (µs), content
 * hash, symlink target. Synchronous calls: a verification of 100,000 small
 * files took ~40 s through streams and promises, a tenth of that inline (the
 * benchmark does nothing else meanwhile).
 */
export async function manifest(root: string): Promise<Manifest> {
  const m: Manifest = new Map()
  const walk = (dir: string, rel: string): void => {
    const subdirs: Array<[string, string]> = []
    for (const name of readdirSync(dir)) {
      const p = join(dir, name)
      const r = rel ? `${rel}/${name}` : name
      const st = lstatSync(p, { bigint: true })
      const base = { mode: Number(st.mode & 0o7777n), mtimeUs: st.mtimeNs / 1000n, size: Number(st.size) }
      if (st.isDirectory()) {
        m.set(r, { kind: "dir", ...base, size: 0 })
        subdirs.push([p, r])
      } else if (st.isSymbolicLink()) {
        m.set(r, { kind: "symlink", ...base, target: readlinkSync(p) })
      } else if (st.isFile()) {
        m.set(r, { kind: "file", ...base, hash: hashFile(p) })
      } else {
        m.set(r, { kind: "other", ...base })
      }
    }
    for (const [p, r] of subdirs) walk(p, r)
  }
  walk(root, "")
  return m
}

/** Compares a restored tree with the expected manifest. */
export async function verifyTree(expected: Manifest, restoredRoot: string, opts: VerifyOptions = {}): Promise<Verification> {
  const got = await manifest(restoredRoot)
  const mismatches: Verification["mismatches"] = { missing: 0, extra: 0, kind: 0, content: 0, mode: 0, mtime: 0, symlink: 0 }
  const examples: string[] = []
  const note = (k: keyof Verification["mismatches"], path: string, detail = ""): void => {
    mismatches[k]++
    if (examples.length < 8) examples.push(`${k}: ${path}${detail ? ` (${detail})` : ""}`)
  }
  for (const [path, e] of expected) {
    const g = got.get(path)
    if (!g) {
      note("missing", path)
      continue
    }
    if (g.kind !== e.kind) {
      note("kind", path, `${e.kind} -> ${g.kind}`)
      continue
    }
    if (e.kind === "file" && g.hash !== e.hash) note("content", path)
    if (e.kind === "symlink" && g.target !== e.target) note("symlink", path, `${e.target} -> ${g.target}`)
    // Symlink modes are not settable on Linux; skip them.
    if (e.kind !== "symlink" && g.mode !== e.mode) note("mode", path, `${e.mode.toString(8)} -> ${g.mode.toString(8)}`)
    const checkMtime = e.kind !== "dir" || opts.dirMtimes !== false
    if (checkMtime && g.mtimeUs !== e.mtimeUs) note("mtime", path, `${e.mtimeUs} -> ${g.mtimeUs}`)
  }
  for (const path of got.keys()) if (!expected.has(path)) note("extra", path)
  const total = Object.values(mismatches).reduce((a, b) => a + b, 0)
  return { ok: total === 0, entries: expected.size, mismatches, examples }
}

/** "ok", or a short list of what differed, e.g. "FAILED mtime×1200 mode×3". */
export function verificationLabel(v: Verification | undefined): string {
  if (!v) return "–"
  if (v.ok) return "ok"
  const parts = Object.entries(v.mismatches)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}×${n}`)
  return `FAILED ${parts.join(" ")}`
}
