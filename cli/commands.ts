// The commands: each declares its arguments and flags, calls the library,
// and prints a human table or, with --json, the library's own result.

import { once } from "node:events"
import { promises as fsp } from "node:fs"
import type { Readable, Writable } from "node:stream"
import { AbortedError, Box, CairnError, isCairnError, NotFoundError, parseDuration, type Repository, type RestoreResult, type SnapshotRecord } from "../engine/index.js"
import { int, labels, UsageError, type CommandSpec, type Parsed } from "./args.js"
import { demo } from "./demo.js"
import { MAINTENANCE_COMMANDS } from "./maintenance.js"
import { bytes, plural, printWarnings, ProgressBar, shownPath, table } from "./format.js"

export interface Context {
  spec: CommandSpec
  args: string[]
  flags: Parsed["flags"]
  rest: string[]
  json: boolean
  quiet: boolean
  progress: ProgressBar
  /** the repository; with init, a new one (fails if one exists there) */
  repo(opts?: { init?: boolean }): Promise<Repository>
  /** human text, or with --json the data (default: the text) */
  out(human: string, data?: unknown): void
  close(): Promise<void>
  /**
   * Aborted by SIGINT or SIGTERM. A command that reads it is stopped cleanly
   * by the first signal (and exits at once on a second); for the others a
   * signal ends the process as usual.
   */
  readonly signal: AbortSignal
  /** a file's bytes ("-": stdin); rejects with a clear error when it cannot be read */
  readInput(file: string): Promise<Readable | NodeJS.ReadableStream>
  writeOutput<T>(file: string | undefined, produce: (out: Writable) => Promise<T>): Promise<T>
}

export interface Command {
  spec: CommandSpec
  run(ctx: Context): Promise<number | void>
}

const date = (iso: string) => iso.replace("T", " ").replace(/\.\d+Z$/, "Z")
const str = (v: unknown) => (v === undefined ? undefined : String(v))

function snapshotRows(list: SnapshotRecord[]): string[][] {
  return list.map((s) => [s.id, s.name ?? "", s.boxId ?? "", date(s.createdAt), bytes(s.sizeBytes), bytes(s.stats.addedBytes)])
}

export const COMMANDS: Command[] = [
  {
    spec: { name: "init", summary: "create a repository", args: [], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo({ init: true })
      ctx.out(`initialized repository ${repo.location}`, { location: repo.location, config: { ...repo.config, chunker: { ...repo.config.chunker, seed: undefined } } })
    },
  },
  {
    spec: {
      name: "snapshot",
      summary: "snapshot a directory or a box; prints the new snapshot id last",
      args: ["DIR|BOX"],
      flags: {
        name: { kind: "string", help: "a name for the snapshot" },
        exclude: { kind: "list", help: "gitignore-style pattern to leave out" },
        label: { kind: "list", help: "key=value label" },
        parent: { kind: "string", help: "snapshot this one follows (default: the previous one of this box or dir)" },
        full: { kind: "bool", help: "re-read every file, ignoring the incremental cache" },
        pin: { kind: "bool", help: "retention (cairn forget) never removes it" },
        expires: { kind: "string", help: "retention removes it after this long (e.g. 7d, 36h)" },
      },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const target = ctx.args[0]!
      const opts = {
        name: str(ctx.flags.name),
        exclude: ctx.flags.exclude as string[] | undefined,
        labels: labels(ctx.flags.label, "snapshot"),
        full: Boolean(ctx.flags.full),
        pinned: Boolean(ctx.flags.pin),
        expiresAt: expiry(ctx.flags.expires, "snapshot"),
        onProgress: ctx.progress.update,
        signal: ctx.signal,
      }
      const isDir = (await fsp.stat(target).catch(() => undefined))?.isDirectory()
      let snapshot: SnapshotRecord
      let warnings: Array<{ path: string; reason: string }> = []
      if (isDir) {
        const parent = ctx.flags.parent ? await repo.snapshots.get(String(ctx.flags.parent)) : undefined
        ;({ snapshot, warnings } = await repo.snapshots.create(target, { ...opts, parent }))
      } else {
        if (ctx.flags.parent) throw new UsageError("--parent applies to a directory; a box's snapshot follows its last one", "snapshot")
        const box = await Box.get(target, { repo }).catch((err: unknown) => {
          if (!isCairnError(err, "NOT_FOUND")) throw err
          throw new NotFoundError(`cannot snapshot ${target}: it is neither a directory nor a box's name or id; "cairn box ls" lists the boxes`, { target })
        })
        snapshot = await box.snapshot(opts)
      }
      ctx.progress.done()
      if (ctx.json) return ctx.out("", { ...snapshot, warnings })
      printWarnings(warnings)
      if (!ctx.quiet) {
        const s = snapshot.stats
        process.stdout.write(
          `${s.files} files, ${s.dirs} dirs, ${s.symlinks} symlinks: ${bytes(s.logicalBytes)} logical, ${bytes(s.storedBytes)} stored, ${bytes(s.addedBytes)} added\n`,
        )
      }
      process.stdout.write(`${snapshot.id}\n`)
    },
  },
  {
    spec: {
      name: "restore",
      summary: "restore a snapshot into a new or empty directory (several: one pass fills them all)",
      args: ["SNAP", "DEST..."],
      flags: {
        path: { kind: "string", help: "restore only this path of the snapshot" },
        overwrite: { kind: "bool", help: "allow a non-empty destination (entries in the way are replaced)" },
        "no-cache": { kind: "bool", help: "neither use nor fill this host's materialization cache" },
        link: { kind: "bool", help: "hardlink large files from the cache, read-only (for read-only use: they share one inode)" },
      },
      details:
        "Given several destinations, each chunk is read, decoded and checked once and written into every one of them: a fan-out of N boxes costs far less than N restores. Each destination is its own copy; one that is refused or fails does not stop the others, and the command exits non-zero if any failed.",
    },
    async run(ctx) {
      const repo = await ctx.repo()
      if (ctx.flags.link && ctx.flags["no-cache"]) throw new UsageError("--link restores from the cache; it cannot be combined with --no-cache")
      const [snap, ...dests] = ctx.args as [string, ...string[]]
      const outcomes = await repo.snapshots.restoreMany(
        snap,
        dests.map((dest, i) => ({ dest, ...(i === 0 ? { onProgress: ctx.progress.update } : {}) })),
        { subPath: str(ctx.flags.path), overwrite: Boolean(ctx.flags.overwrite), cache: !ctx.flags["no-cache"], link: Boolean(ctx.flags.link), signal: ctx.signal },
      )
      const results = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []))
      const failures = outcomes.flatMap((o, i) => (o.status === "rejected" ? [{ dest: dests[i]!, err: o.reason as unknown }] : []))
      // one destination prints as it always has; several print a line (or, with --json, a result) each
      const line = (r: RestoreResult) =>
        `restored ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks (${bytes(r.bytes)}${r.fromCache ? `, ${r.fromCache} from the cache` : ""}) into ${r.dest}`
      if (dests.length === 1) {
        if (failures[0]) throw failures[0].err
        ctx.out(line(results[0]!), results[0])
        return
      }
      const message = (err: unknown) => (err instanceof Error ? err.message : String(err))
      const failed = failures.map((f) => ({ dest: f.dest, code: isCairnError(f.err) ? f.err.code : "IO", message: message(f.err) }))
      if (results.length > 0 || ctx.json) ctx.out(results.map(line).join("\n"), { results, failed })
      if (failures.length === 1) throw failures[0]!.err
      if (failures.length > 1) {
        const first = failures[0]!.err
        throw new CairnError(isCairnError(first) ? first.code : "IO", `${failures.length} of ${dests.length} restores failed: ${failed.map((f) => `${f.dest}: ${f.message}`).join("; ")}`, { data: { failed } })
      }
    },
  },
  {
    spec: {
      name: "ls",
      summary: "list snapshots",
      args: [],
      flags: {
        box: { kind: "string", help: "only this box's snapshots" },
        name: { kind: "string", help: "only snapshots with this name" },
        label: { kind: "string", help: "only snapshots with this label (key or key=value)" },
      },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      let boxId: string | undefined
      if (ctx.flags.box) boxId = (await Box.get(String(ctx.flags.box), { repo })).id
      const list = await repo.snapshots.list({ boxId, name: str(ctx.flags.name), label: str(ctx.flags.label) })
      ctx.out(list.length ? table(["id", "name", "box", "created", "size", "added"], snapshotRows(list)) : "no snapshots", list)
    },
  },
  {
    spec: {
      name: "show",
      summary: "list files inside a snapshot",
      args: ["SNAP", "[PATH]"],
      flags: { recursive: { kind: "bool", alias: "r", help: "every path below" } },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const below = `/${(ctx.args[1] ?? "").replace(/^\/+|\/+$/g, "")}`
      const inside = (p: string) => below === "/" || p === below || p.startsWith(`${below}/`)
      const files = ctx.flags.recursive
        ? (await repo.snapshots.walk(ctx.args[0]!)).filter((f) => inside(f.path))
        : await repo.snapshots.listFiles(ctx.args[0]!, ctx.args[1] ?? "/")
      const rows = files.map((f) => [
        f.type === "dir" ? "d" : f.type === "symlink" ? "l" : "-",
        f.mode.toString(8).padStart(4, "0"),
        f.isDir ? "" : bytes(f.size),
        date(f.modTime),
        shownPath(f.path) + (f.type === "symlink" ? ` -> ${shownPath(f.target ?? "")}` : ""),
      ])
      ctx.out(table(["type", "mode", "size", "modified", "path"], rows), files)
    },
  },
  {
    spec: { name: "cat", summary: "print one file of a snapshot", args: ["SNAP", "PATH"], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const stream = await repo.snapshots.readFile(ctx.args[0]!, ctx.args[1]!)
      for await (const chunk of stream) {
        // a stdout that failed (its reader left) never drains: the signal ends the wait (see watchStdout)
        if (!process.stdout.write(chunk) && !process.stdout.destroyed) {
          await once(process.stdout, "drain", { signal: ctx.signal }).catch((err: unknown) => {
            throw ctx.signal.aborted ? new AbortedError() : err // Ctrl-C while the reader is slow: a clean stop
          })
        }
        if (process.stdout.destroyed) break
      }
    },
  },
  {
    spec: {
      name: "pin",
      summary: "pin a snapshot (retention never removes it), or change its expiry",
      args: ["SNAP"],
      flags: {
        unpin: { kind: "bool", help: "remove the pin instead" },
        expires: { kind: "string", help: 'retention removes it after this long from now (e.g. 7d), or "never"' },
      },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const e = ctx.flags.expires
      const changes = {
        pinned: ctx.flags.unpin ? false : e === undefined ? true : undefined,
        expiresAt: e === "never" ? null : expiry(e, "pin"),
      }
      const s = await repo.snapshots.update(ctx.args[0]!, changes)
      ctx.out(`${s.id}: ${s.pinned ? "pinned" : "not pinned"}${s.expiresAt ? `, expires ${s.expiresAt}` : ""}`, s)
    },
  },
  {
    spec: { name: "rm", summary: "delete snapshots (gc reclaims their data)", args: ["SNAP..."], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const removed = await repo.snapshots.delete(ctx.args)
      ctx.out(`removed ${removed.join(", ")}; run "cairn gc" to reclaim space`, { removed })
    },
  },
  ...MAINTENANCE_COMMANDS,
  {
    spec: {
      name: "export",
      summary: "write a snapshot as a tar stream",
      args: ["SNAP"],
      flags: { output: { kind: "string", alias: "o", help: "file to write (default stdout)" }, path: { kind: "string", help: "only this path of the snapshot" } },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const file = str(ctx.flags.output)
      if (!file && process.stdout.isTTY) throw new UsageError('refusing to write a tar stream to a terminal; use -o FILE or a pipe', "export")
      const result = await ctx.writeOutput(file, (out) => repo.snapshots.exportTar(ctx.args[0]!, out, { subPath: str(ctx.flags.path), signal: ctx.signal }))
      if (file) ctx.out(`wrote ${plural(result.files, "file")} (${bytes(result.bytes)}) to ${file}`, result)
    },
  },
  {
    spec: {
      name: "import",
      summary: "make a snapshot from a tar file or stdin (-)",
      args: ["FILE|-"],
      flags: {
        name: { kind: "string", help: "a name for the snapshot" },
        "external-symlinks": { kind: "bool", help: "keep symlinks that point outside the archive (absolute, or leaving its root); refused otherwise" },
      },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const input = await ctx.readInput(ctx.args[0]!)
      const opts = { name: str(ctx.flags.name), externalSymlinks: Boolean(ctx.flags["external-symlinks"]), signal: ctx.signal }
      const { snapshot, warnings } = await repo.snapshots.importTar(input, opts)
      if (ctx.json) return ctx.out("", { ...snapshot, warnings })
      printWarnings(warnings)
      process.stdout.write(`${snapshot.stats.files} files, ${bytes(snapshot.sizeBytes)}\n${snapshot.id}\n`)
    },
  },
  {
    spec: { name: "rebuild-index", summary: "rebuild the index from the packs", args: [], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const r = await repo.rebuildIndex()
      ctx.out(`indexed ${r.blobs} blobs in ${r.packs} packs${r.damaged.length ? `; ${r.damaged.length} damaged packs skipped: ${r.damaged.join(", ")}` : ""}`, r)
      return r.damaged.length ? 3 : 0
    },
  },
  {
    spec: {
      name: "box create",
      summary: "create a box, empty or from a snapshot",
      args: [],
      flags: {
        from: { kind: "string", help: "snapshot to start from" },
        name: { kind: "string", help: "a name for the box" },
        dir: { kind: "string", help: "where its workspace lives (default <repo>/workspaces/<id>)" },
        label: { kind: "list", help: "key=value label" },
        count: { kind: "string", help: "with --from: make N boxes in one pass (each chunk read and decoded once); not with --name or --dir" },
      },
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const opts = { repo, name: str(ctx.flags.name), dir: str(ctx.flags.dir), labels: labels(ctx.flags.label, "box create") }
      if (ctx.flags.count !== undefined) {
        const count = int(ctx.flags.count, "count", "box create")!
        if (count < 1) throw new UsageError("--count takes a whole number of at least 1", "box create")
        if (!ctx.flags.from) throw new UsageError("--count makes boxes from a snapshot: give --from SNAP", "box create")
        if (opts.name !== undefined || opts.dir !== undefined) throw new UsageError("--count makes boxes in the default place, without names: drop --name and --dir", "box create")
        const boxes = await Box.fromSnapshotMany(String(ctx.flags.from), count, { repo, labels: opts.labels, onProgress: ctx.progress.update, signal: ctx.signal })
        ctx.progress.done()
        if (ctx.json) return ctx.out("", boxes.map((b) => b.info))
        if (!ctx.quiet) for (const b of boxes) process.stdout.write(`box ${b.id} at ${b.dir}\n`)
        for (const b of boxes) process.stdout.write(`${b.id}\n`)
        return
      }
      const box = ctx.flags.from ? await Box.fromSnapshot(String(ctx.flags.from), { ...opts, onProgress: ctx.progress.update, signal: ctx.signal }) : await Box.create(opts)
      ctx.progress.done()
      if (ctx.json) return ctx.out("", box.info)
      if (!ctx.quiet) process.stdout.write(`box ${box.id}${box.name ? ` (${box.name})` : ""} at ${box.dir}\n`)
      process.stdout.write(`${box.id}\n`)
    },
  },
  {
    spec: { name: "box ls", summary: "list boxes", args: [], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const boxes = await Box.list({ repo })
      const rows = boxes.map((b) => [b.id, b.name ?? "", b.info.fromSnapshot ?? "", b.info.lastSnapshot ?? "", b.dir])
      ctx.out(boxes.length ? table(["id", "name", "from", "last snapshot", "dir"], rows) : "no boxes", boxes.map((b) => b.info))
    },
  },
  {
    spec: {
      name: "box exec",
      summary: "run a command in a box (cairn box exec BOX -- CMD...); exits with its code",
      args: ["BOX"],
      flags: { timeout: { kind: "string", help: "stop it after this many seconds (SIGTERM, then SIGKILL 2 s later)" } },
    },
    async run(ctx) {
      if (ctx.rest.length === 0) throw new UsageError('give the command after "--", e.g. cairn box exec BOX -- ls -la', "box exec")
      const repo = await ctx.repo()
      const box = await Box.get(ctx.args[0]!, { repo })
      const seconds = ctx.flags.timeout === undefined ? undefined : Number(ctx.flags.timeout)
      if (seconds !== undefined && !(seconds > 0)) throw new UsageError("--timeout takes a number of seconds", "box exec")
      const command = ctx.rest.map(shellQuote).join(" ")
      const timeout = seconds ? { timeoutMs: seconds * 1000 } : {}
      if (ctx.json) {
        const result = await box.exec(command, timeout)
        ctx.out("", result)
        return result.exitCode
      }
      // the command gets the terminal: its output as it comes, stdin passed through, and Ctrl-C (it is in
      // cairn's process group), which cairn itself ignores meanwhile; a SIGTERM to cairn is passed on
      const term = new AbortController()
      const ignore = () => {}
      const pass = () => term.abort()
      process.on("SIGINT", ignore)
      process.on("SIGTERM", pass)
      try {
        const result = await box.exec(command, { ...timeout, inherit: true, signal: term.signal })
        if (result.timedOut) process.stderr.write(`cairn: the command timed out after ${seconds} s (sent SIGTERM, and SIGKILL 2 s later if it still ran)\n`)
        return result.exitCode
      } finally {
        process.off("SIGINT", ignore)
        process.off("SIGTERM", pass)
      }
    },
  },
  {
    spec: { name: "box rm", summary: "delete a box's workspace (its snapshots stay)", args: ["BOX..."], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const removed: string[] = []
      for (const id of ctx.args) {
        const box = await Box.get(id, { repo })
        await box.delete()
        removed.push(box.id)
      }
      ctx.out(`removed ${removed.join(", ")}`, { removed })
    },
  },
  {
    spec: { name: "demo", summary: "the quick-start: a box, a snapshot, three branches, sizes", args: [], flags: { keep: { kind: "bool", help: "keep the branched boxes" } } },
    async run(ctx) {
      await demo(await ctx.repo(), { keep: Boolean(ctx.flags.keep), json: ctx.json, progress: ctx.progress })
    },
  },
]

export { int }

/** "7d" -> an ISO time that far from now; a usage error for anything else. */
function expiry(value: unknown, command: string): string | undefined {
  if (value === undefined) return undefined
  try {
    return new Date(Date.now() + parseDuration(String(value))).toISOString()
  } catch (err) {
    throw new UsageError(`--expires: ${(err as Error).message}`, command)
  }
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-./=:@%+,]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`
}
