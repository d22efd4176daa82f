#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=67108864 node --max-semi-space-size=2 --heap-growing-percent=120 --interrupt-budget=1000000
// The cairn command line: parse, call the library, print, map errors to exit
// codes. It holds no logic the library lacks.
//
// The `cairn` executable runs node with a young generation of 2 MiB per
// semi-space instead of V8's 16 on a large machine: the CLI's garbage is
// short-lived (stat results, chunk ids, tree entries). On the bench's
// workspace (3 alternating runs each) a first snapshot then peaks at 224-226
// MiB instead of 250-254 in the same time, a restore at 210-221 instead of
// 235-242, an unchanged snapshot takes 0.60-0.61 s instead of 0.63-0.71 (73
// MiB, not 84), and one after the bench's change 1.37-1.47 s instead of
// 1.46-1.54 (147 MiB, not 175). `node dist/cli/main.js` runs the same code
// with node's defaults.
//
// And it lets the old generation grow by 2.2x its live size between full
// collections (--heap-growing-percent=120) instead of up to 4x: V8 picks
// its factor from the heap's limit, which on a machine of 16 GiB or more is
// 4 GiB and allows 4x (smaller machines get less). A first snapshot of the
// bench's workspace held ~20 MiB of live objects in a heap of up to 45 MiB
// at its end; with the fixed factor it peaks at 142 MiB instead of 157
// (medians of 7 alternating runs of the executable) in the same time, and
// one of 100,000 files at 274-276 MiB instead of 332-333, in 8.70-9.03 s
// against 8.72-9.41 (2 pairs). Factors of 2 and 2.5 did about as well
// (144-148 MiB); an unchanged snapshot and a restore take as long as
// before. Unlike a lower --max-old-space-size, which shrinks the factor
// too, it keeps the heap's limit.
//
// It has V8 optimize a function only after ~1 MB of its bytecode has run
// (--interrupt-budget=1000000) instead of ~66 KB: a command lasts seconds,
// and every thread (the main one, the readers, the compressor) compiled a
// good deal of code with TurboFan that then barely ran. V8's helper threads
// spent 0.7-0.8 s of CPU in a first snapshot of the bench's workspace, 0.3
// with the flag. That snapshot then takes 2.90-2.96 s instead of 2.98-3.04
// (medians over 5-6 alternating runs), 0.2-0.25 s less CPU and ~4 MiB less
// memory; an unchanged snapshot 0.400 s instead of 0.410 (0.30 s of CPU
// instead of 0.36; 10 pairs); 100,000 small files 8.54 s against 8.75 (2
// pairs). Budgets of 500,000 and 2,000,000 did about as well.
//
// It also sets three of glibc's malloc settings (MALLOC_ENV). Two so that memory
// freed is kept for the next allocation rather than given back to the
// kernel at once: by default an allocation over 128 KiB is a fresh mapping,
// unmapped when freed, and a worker's arena is trimmed as soon as its top
// is free, so buffers and zlib's per-call state kept coming back as new
// pages. A new page costs its fault, and on this project's VM (memory the
// host backs lazily, freed pages handed back to it) ~20 us: 5 ms per MiB,
// 100 times a page touched again. A first snapshot of the bench's workspace
// took 68,000-79,000 page faults and 2.1 s of system time; with these,
// 57,500-58,000 and 1.9-2.3 s, 0.3-0.5 s less CPU in all, and it peaked at
// 222 MiB (229-236). Either of the two alone is worse than neither (125,000
// and 138,000 faults: setting one turns off glibc's dynamic thresholds). On
// a machine where a fault is cheap they cost nothing but the up to 64 MiB a
// process may keep. The third, MALLOC_ARENA_MAX=2, has the threads share
// two arenas instead of one each (up to 8 per core: the main thread, the
// chunk readers, the compressor, libuv's and V8's threads), each with its
// own free memory kept: a first snapshot of the bench's workspace peaked at
// 189 MiB instead of 201 (medians of 5 alternating runs, same time), a
// restore at 137 instead of 153; one arena saved as much, with more
// contention for its lock.

import { promises as fsp, realpathSync } from "node:fs"
import os from "node:os"
import { fileURLToPath } from "node:url"
import path from "node:path"
import { CairnError, FORMAT_VERSION, NotFoundError, Repository, defaultRepoPath, type LockInfo } from "../engine/index.js"
import { CliError, commandHelp, GLOBAL_FLAGS, parseArgs, UsageError, type CommandSpec, type Parsed } from "./args.js"
import { COMMANDS, type Context } from "./commands.js"
import { ProgressBar } from "./format.js"

/** glibc's malloc settings the `#!` line gives the process; see above. */
export const MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "4194304", MALLOC_TRIM_THRESHOLD_: "67108864" }
// glibc read them when the process started; the commands cairn runs (box exec) do not inherit them
for (const [name, value] of Object.entries(MALLOC_ENV)) if (process.env[name] === value) delete process.env[name]

export const EXIT = { ok: 0, failed: 1, usage: 2, integrity: 3, locked: 4, notFound: 5 } as const

function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage
  if (err instanceof CairnError) {
    if (err.code === "INTEGRITY") return EXIT.integrity
    if (err.code === "LOCKED") return EXIT.locked
    if (err.code === "NOT_FOUND") return EXIT.notFound
  }
  return EXIT.failed
}

async function packageVersion(): Promise<string> {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "package.json")
  try {
    return (JSON.parse(await fsp.readFile(pkg, "utf8")) as { version?: string }).version ?? "unknown"
  } catch {
    return "unknown"
  }
}

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length))
  return [
    "cairn: snapshots of workspaces, content-addressed and deduplicated",
    "",
    "usage: cairn [--repo PATH|s3://bucket/prefix] [--json] [--quiet] [--debug] COMMAND [ARGS]",
    "       cairn --version",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(width)}  ${c.spec.summary}`),
    "",
    "global options:",
    ...Object.entries(GLOBAL_FLAGS).map(([n, f]) => `  --${n}${f.kind === "bool" ? "" : " V"}`.padEnd(width + 4) + `  ${f.help}`),
    "",
    "exit codes: 0 ok, 1 operation failed, 2 usage error, 3 integrity error (damaged data),",
    "            4 repository locked by another process, 5 not found, 128+N stopped by signal N",
    "            (130 Ctrl-C, 143 SIGTERM; 141 when the output's reader left, as with cairn ... | head)",
    "",
    'Run "cairn help COMMAND" for one command.',
  ].join("\n")
}

/** Splits off global flags that come before the command name. */
function splitCommand(argv: string[]): { name: string[]; args: string[]; pre: string[] } {
  const pre: string[] = []
  let i = 0
  while (i < argv.length && argv[i]!.startsWith("-")) {
    const a = argv[i]!
    pre.push(a)
    if ((a === "--repo") && i + 1 < argv.length) pre.push(argv[++i]!)
    i++
  }
  const first = argv[i]
  if (first === undefined) return { name: [], args: pre, pre }
  const two = `${first} ${argv[i + 1] ?? ""}`
  if (COMMANDS.some((c) => c.spec.name === two)) return { name: [first, argv[i + 1]!], args: [...pre, ...argv.slice(i + 2)], pre }
  return { name: [first], args: [...pre, ...argv.slice(i + 1)], pre }
}

export async function run(argv: string[]): Promise<number> {
  const { name, args, pre } = splitCommand(argv)
  const own = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv // not the flags of a command run by box exec
  const debug = own.includes("--debug")
  const json = own.includes("--json")
  try {
    if (name.length === 0) {
      if (pre.includes("--help") || pre.includes("-h")) {
        process.stdout.write(mainHelp() + "\n")
        return EXIT.ok
      }
      if (pre.includes("--version")) {
        process.stdout.write(`cairn ${await packageVersion()} (format ${FORMAT_VERSION}, node ${process.versions.node})\n`)
        return EXIT.ok
      }
      throw new UsageError('no command given; run "cairn --help" for the list')
    }
    const cmdName = name.join(" ")
    if (cmdName === "help") {
      const topic = args.filter((a) => !a.startsWith("-")).join(" ")
      const cmd = COMMANDS.find((c) => c.spec.name === topic)
      const group = COMMANDS.filter((c) => c.spec.name.startsWith(`${topic} `))
      if (topic && !cmd && group.length) {
        process.stdout.write(group.map((c) => `cairn ${c.spec.name}: ${c.spec.summary}`).join("\n") + "\n")
        return EXIT.ok
      }
      if (topic && !cmd) throw new UsageError(`no command "${topic}"; run "cairn --help" for the list`)
      process.stdout.write((cmd ? commandHelp(cmd.spec) : mainHelp()) + "\n")
      return EXIT.ok
    }
    const cmd = COMMANDS.find((c) => c.spec.name === cmdName)
    if (!cmd) {
      const group = COMMANDS.filter((c) => c.spec.name.startsWith(`${cmdName} `))
      if (group.length) throw new UsageError(`"${cmdName}" needs a subcommand: ${group.map((c) => c.spec.name).join(", ")}`)
      throw new UsageError(`unknown command "${cmdName}"; run "cairn --help" for the list`)
    }
    const parsed = parseArgs(args, cmd.spec)
    if (parsed.flags.help) {
      process.stdout.write(commandHelp(cmd.spec) + "\n")
      return EXIT.ok
    }
    const interrupts = new Interrupts()
    watchStdout(interrupts)
    const ctx = makeContext(parsed, cmd.spec, interrupts)
    try {
      return (await cmd.run(ctx)) ?? EXIT.ok
    } catch (err) {
      if (output.closed || output.failed) return EXIT.failed // a consequence of that, already reported (watchStdout)
      if (!interrupts.received || !(err instanceof CairnError && err.code === "ABORTED")) throw err
      ctx.progress.done()
      report(new CliError(`interrupted by ${interrupts.received}: ${cmd.spec.name} stopped cleanly`, "INTERRUPTED"), { debug: false, json })
      return 128 + os.constants.signals[interrupts.received]
    } finally {
      interrupts.remove()
      ctx.progress.done()
      await ctx.close()
    }
  } catch (err) {
    if (output.closed || output.failed) return EXIT.failed
    report(err, { debug, json })
    return exitCodeFor(err)
  }
}

/**
 * When the reader of stdout goes away (`cairn show -r SNAP | head`), writing
 * fails with EPIPE: the running command is stopped through its signal, and
 * cairn exits as a process killed by SIGPIPE does (141), without a message,
 * instead of dying of an unhandled stream error. Any other failure to write
 * stdout (a full disk under `cairn export SNAP > x.tar`) stops the command
 * too and is reported. The listener stays for the process's life: a write
 * can fail after its command returned.
 */
const EXIT_PIPE = 128 + os.constants.signals.SIGPIPE
const output: { closed: boolean; failed?: CliError; command?: Interrupts; watching: boolean } = { closed: false, watching: false }

function watchStdout(command: Interrupts): void {
  output.command = command
  if (output.watching) return
  output.watching = true
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    output.command?.stop()
    if (output.closed || output.failed) return
    // the exit status is set here, whether the command is still running or has returned (or never will: a
    // write waiting for a drain that cannot come), and run() then stays quiet
    if (err.code === "EPIPE") {
      output.closed = true
      process.exitCode = EXIT_PIPE
    } else {
      output.failed = new CliError(`cannot write the output (${err.code ?? err.message}${err.code === "ENOSPC" ? ": the disk is full" : ""})`, "IO")
      process.stderr.write(`cairn: ${output.failed.message}\n`)
      process.exitCode = EXIT.failed
    }
  })
}

/**
 * SIGINT and SIGTERM for a command that takes its context's signal: the
 * first aborts the command, which stops cleanly (no partial snapshot, no
 * temp file, the lock released); a second exits at once. Handlers are
 * installed only once a command reads the signal, so a signal ends any
 * other command as usual.
 */
class Interrupts {
  received?: "SIGINT" | "SIGTERM"
  private readonly controller = new AbortController()
  private installed = false
  private readonly onSignal = (sig: "SIGINT" | "SIGTERM"): void => {
    if (this.received) process.exit(128 + os.constants.signals[sig])
    this.received = sig
    this.controller.abort()
  }

  /** Stops the command without a signal (its output went away). */
  stop(): void {
    this.controller.abort()
  }

  get signal(): AbortSignal {
    if (!this.installed) {
      this.installed = true
      process.on("SIGINT", this.onSignal)
      process.on("SIGTERM", this.onSignal)
    }
    return this.controller.signal
  }

  remove(): void {
    process.off("SIGINT", this.onSignal)
    process.off("SIGTERM", this.onSignal)
  }
}

function makeContext(parsed: Parsed, spec: CommandSpec, interrupts: Interrupts): Context {
  // --repo must name an existing repository; the default ($CAIRN_REPO, else ~/.cairn) is created on first use
  const explicit = parsed.flags.repo as string | undefined
  const location = explicit ?? defaultRepoPath()
  const json = Boolean(parsed.flags.json)
  const quiet = Boolean(parsed.flags.quiet)
  let repo: Promise<Repository> | undefined
  const ctx: Context = {
    spec,
    args: parsed.positional,
    flags: parsed.flags,
    rest: parsed.rest,
    json,
    quiet,
    progress: new ProgressBar(Boolean(process.stderr.isTTY) && !json && !quiet),
    get signal() {
      return interrupts.signal
    },
    repo: (opts = {}) => {
      // a command that waits for another process's lock says so (gc waits for running snapshots, and they for it)
      const onLockWait = (h: LockInfo) => {
        if (!quiet) process.stderr.write(`cairn: waiting for the repository: ${h.what} (process ${h.pid} on ${h.host}, since ${h.time}) holds ${h.exclusive ? "it" : "a lock on it"}\n`)
      }
      const where = location.startsWith("s3://") ? { url: location, onLockWait } : { path: location, onLockWait }
      // init makes a new one; an explicit repository must exist; the default one is created on first use
      repo ??= opts.init ? Repository.init(where) : Repository.open({ ...where, create: explicit === undefined })
      return repo
    },
    out: (human, data) => {
      if (json) process.stdout.write(JSON.stringify(data ?? human, null, 2) + "\n")
      else if (typeof human === "string" && human !== "") process.stdout.write(human + "\n")
    },
    close: async () => {
      if (repo) await (await repo.catch(() => undefined))?.close()
    },
    readInput: async (file) => {
      if (file === "-") return process.stdin
      // opened here, so that a missing or unreadable file is a clear error, not a stream's unhandled one
      const handle = await fsp.open(file, "r").catch((err: NodeJS.ErrnoException) => {
        throw fileError(err, `cannot read ${file}`)
      })
      return handle.createReadStream()
    },
    writeOutput: async (file, produce) => {
      if (!file || file === "-") return produce(process.stdout)
      const temp = `${file}.tmp-${process.pid}`
      const handle = await fsp.open(temp, "wx", 0o644).catch((err: NodeJS.ErrnoException) => {
        throw fileError(err, `cannot write ${file}`)
      })
      const out = handle.createWriteStream()
      const done = new Promise<void>((resolve, reject) => {
        out.on("close", resolve)
        out.on("error", reject)
      })
      done.catch(() => {}) // awaited below, after produce; a write error must not go unhandled meanwhile
      try {
        const result = await produce(out)
        await done
        await fsp.rename(temp, file)
        return result
      } catch (err) {
        out.destroy()
        await fsp.rm(temp, { force: true })
        throw err
      }
    },
  }
  return ctx
}

/** A file the user named could not be opened: NOT_FOUND when it (or its directory) does not exist. */
function fileError(err: NodeJS.ErrnoException, what: string): Error {
  if (err.code === "ENOENT") return new NotFoundError(`${what}: no such file or directory`, { path: err.path })
  return new CliError(`${what}: ${err.code ?? err.message}`)
}

function report(err: unknown, opts: { debug: boolean; json: boolean }): void {
  const message = err instanceof Error ? err.message : String(err)
  const code = err instanceof CairnError ? err.code : err instanceof UsageError ? "USAGE" : err instanceof CliError ? err.code : "ERROR"
  if (opts.json) {
    const data = err instanceof CairnError ? err.data : undefined
    process.stderr.write(JSON.stringify({ error: { code, message, ...(data && Object.keys(data).length ? { data } : {}) } }) + "\n")
  } else {
    const hint = err instanceof UsageError && err.command ? ` (see "cairn help ${err.command}")` : ""
    process.stderr.write(`cairn: ${message}${hint}\n`)
  }
  if (opts.debug && err instanceof Error) process.stderr.write(`${err.stack}\n`)
  if (!(err instanceof CairnError) && !(err instanceof UsageError) && !(err instanceof CliError) && !opts.debug) {
    process.stderr.write("cairn: this is unexpected; rerun with --debug to see where it happened\n")
  }
}

// Larger files and directories only: keep relative paths readable in messages.
export function rel(p: string): string {
  const r = path.relative(process.cwd(), p)
  return r && !r.startsWith("..") ? r : p
}

function isMain(): boolean {
  try {
    return realpathSync(process.argv[1] ?? "") === fileURLToPath(import.meta.url)
  } catch {
    return false
  }
}

if (isMain()) {
  // The AWS SDK warns on every S3 command under Node 20 that its versions from
  // 2027 on will need Node 22; cairn pins its SDK version, so the warning does
  // not apply to it. (The library leaves the host process's environment alone.)
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true"
  let settled = false
  run(process.argv.slice(2)).then(
    (code) => {
      settled = true
      if (output.closed || output.failed) return
      process.exitCode = code
      // The command is done and has awaited all it started: leave at once rather than let node take its
      // heap and handles apart one by one (~15 ms of an unchanged snapshot's ~0.45 s), unless output is
      // still buffered (a pipe whose reader is slow), which the natural exit writes out first.
      if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit()
    },
    (err) => {
      settled = true
      process.stderr.write(`cairn: ${err}\n`)
      process.exitCode = 1
    },
  )
  // Nothing left to wait for, and the command neither finished nor failed: a bug that
  // left it waiting on itself. Never exit 0 (or quietly) then.
  process.on("beforeExit", () => {
    if (settled) return
    settled = true
    process.stderr.write("cairn: internal error: the command stopped without finishing (nothing was left to wait for); this is a bug, please report it\n")
    process.exitCode = 70
  })
}
