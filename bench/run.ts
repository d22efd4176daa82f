// Entry point of `npm run bench`: generates (or reuses) the corpora, runs the
// scenarios for every available tool, each corpus's floors (floor.ts), the
// micro-benchmarks, and writes report.md, report.json and chart.svg.
//
//   npm run bench -- [--quick] [--only cairn,restic,...] [--scenario first,restore,...]
//                    [--corpus workspace,small-files,large] [--reps N] [--no-micro]
//                    [--no-floor] [--micro-only] [--out bench/out]

import { statfsSync } from "node:fs"
import { cpus, loadavg, totalmem } from "node:os"
import { mkdir, rm, writeFile } from "node:fs/promises"
import { join, resolve } from "node:path"
import { PROJECT_ROOT, largeCorpus, smallFilesCorpus, workspaceCorpus, type Corpus } from "./corpora.js"
import { describeFloor, measureFloor, type Floor } from "./floor.js"
import { emptyTrash, removeTree, settleDeletes, trashRoom, useTrash } from "./harness.js"
import { runMicro } from "./micro.js"
import { renderChart, renderMarkdown, type Report } from "./report.js"
import { Collector, SCENARIOS, corpusManifest, runBasicRep, runHistory, type ScenarioOptions, type ScenarioResult } from "./scenarios.js"
import { ALL_TOOLS, makeTools } from "./tools.js"

interface Args {
  quick: boolean
  only?: Set<string>
  scenarios?: Set<string>
  corpora?: Set<string>
  reps?: number
  history?: number
  micro: boolean
  floor: boolean
  microOnly: boolean
  out: string
}

const USAGE = `usage: npm run bench -- [--quick] [--only ${ALL_TOOLS.join(",")}] [--scenario ${SCENARIOS.join(",")}]
                      [--corpus workspace,small-files,large] [--reps N] [--history N] [--no-micro] [--no-floor] [--micro-only] [--out DIR]`

function parseArgs(argv: string[]): Args {
  const a: Args = { quick: false, micro: true, floor: true, microOnly: false, out: join(PROJECT_ROOT, "bench", "out") }
  const list = (v: string | undefined, flag: string): Set<string> => {
    if (!v) throw new Error(`${flag} needs a value\n${USAGE}`)
    return new Set(v.split(",").map((s) => s.trim()).filter(Boolean))
  }
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!
    const [flag, inline] = f.includes("=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, undefined]
    const value = (): string | undefined => inline ?? argv[++i]
    switch (flag) {
      case "--quick":
        a.quick = true
        break
      case "--only":
        a.only = list(value(), flag)
        break
      case "--scenario":
      case "--scenarios":
        a.scenarios = list(value(), flag)
        break
      case "--corpus":
      case "--corpora":
        a.corpora = list(value(), flag)
        break
      case "--reps":
        a.reps = Number(value())
        break
      case "--history":
        a.history = Number(value())
        if (!Number.isInteger(a.history) || a.history < 2) throw new Error(`--history needs a whole number of snapshots >= 2\n${USAGE}`)
        break
      case "--no-micro":
        a.micro = false
        break
      case "--no-floor":
        a.floor = false
        break
      case "--micro-only":
        a.microOnly = true
        break
      case "--out":
        a.out = resolve(value() ?? "")
        break
      case "-h":
      case "--help":
        console.log(USAGE)
        process.exit(0)
      // falls through (unreachable)
      default:
        throw new Error(`unknown flag ${f}\n${USAGE}`)
    }
  }
  for (const t of a.only ?? []) if (!(ALL_TOOLS as readonly string[]).includes(t)) throw new Error(`unknown tool ${t} (tools: ${ALL_TOOLS.join(", ")})`)
  for (const s of a.scenarios ?? []) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario ${s} (scenarios: ${SCENARIOS.join(", ")})`)
  return a
}

/**
 * What each mode runs. Quick aims at ~3 minutes: the 10k small-files corpus,
 * one repetition, a 3-snapshot history. Full aims at about 35 minutes (12 of them waits after deletions) on the
 * 2-vCPU VM of bench/results/ while keeping the comparisons the issues ask for:
 *  - workspace: every scenario, 3 repetitions for cairn and the peers
 *    (restic, borg, casync); the baselines (cp, tar, git), which show the
 *    machine's limits rather than compete, once; of cairn's extra fan-out
 *    variants the two that restore in one pass (Promise.all in one process,
 *    one `cairn restore` given the 4 destinations);
 *  - the 20-snapshot history and gc: cairn, restic and borg, the tools with
 *    retention and pruning (casync's history alone took 95 s; for cp and tar
 *    a history is N full copies by construction);
 *  - the scaling corpora (100k small files, 1 GiB file): once, cairn, restic,
 *    borg and tar, the snapshot scenarios and the restore (no fan-out).
 * `--reps N` overrides the repetitions everywhere; `--corpus` picks corpora
 * (quick: large on request); `--scenario` and `--only` override the
 * scenario and tool choices.
 */
type Kind = "cairn" | "peer" | "baseline"
interface Plan {
  reps: Record<string, Record<Kind, number>>
  historyLength: number
  historyReps: number
  smallFiles: number
  large: number
  defaultCorpora: string[]
  /** corpus kind -> tools that run the history there */
  historyOn: Record<string, string[]>
  /** corpus kind -> scenarios (default: all) */
  scenarios: Record<string, string[]>
  /** corpus kind -> the tools that run there (default: all) */
  tools: Record<string, string[]>
  /** extra fan-out variants (default: all) */
  variants?: string[]
  verifyFanout: boolean
}

const ONCE: Record<Kind, number> = { cairn: 1, peer: 1, baseline: 1 }
const SCALING = ["first", "nochange", "change", "restore"]
const EVERY_TOOL = [...ALL_TOOLS]

function plan(quick: boolean): Plan {
  return quick
    ? { reps: { workspace: ONCE, "small-files": ONCE, large: ONCE }, historyLength: 3, historyReps: 1, smallFiles: 10_000, large: 256 << 20, defaultCorpora: ["small-files"], historyOn: { "small-files": EVERY_TOOL, workspace: EVERY_TOOL }, scenarios: {}, tools: {}, verifyFanout: false }
    : {
        reps: { workspace: { cairn: 3, peer: 3, baseline: 1 }, "small-files": ONCE, large: ONCE },
        historyLength: 20,
        historyReps: 1,
        smallFiles: 100_000,
        large: 1 << 30,
        defaultCorpora: ["workspace", "small-files", "large"],
        historyOn: { workspace: ["cairn", "restic", "borg"] },
        scenarios: { "small-files": SCALING, large: SCALING },
        tools: { "small-files": ["cairn", "restic", "borg", "tar"], large: ["cairn", "restic", "borg", "tar"] },
        variants: ["promise-all-4", "one-cli-4"],
        verifyFanout: true,
      }
}

const kindOf = (name: string): string => name.replace(/-\d+[kmg]?$/, "")

/** Below this much free space, the trash of deleted trees is emptied before the next tool runs. */
const TRASH_FREE_BYTES = 16 * 2 ** 30

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2))
  const p = plan(args.quick)
  const repsFor = (corpus: string, tool: Kind): number => args.reps ?? p.reps[kindOf(corpus)]?.[tool] ?? 1
  const t0 = Date.now()
  const log = (s: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${s}`)
  await mkdir(args.out, { recursive: true })
  const workDir = join(args.out, "work")
  const free0 = statfsSync(args.out).ffree
  await rm(workDir, { recursive: true, force: true })
  const freed = statfsSync(args.out).ffree - free0
  if (freed > 0) await settleDeletes(freed, "removed an earlier run's work directory", log)
  await mkdir(workDir, { recursive: true })
  await useTrash(join(workDir, "trash"))
  const notes: string[] = []
  const load0 = loadavg()[0]!
  // node reads the bundle NODE_EXTRA_CA_CERTS names at every start, before any of cairn's code runs: with
  // Debian's bundle, ~40 ms per command, on a local repository that makes no TLS connection. Environments
  // behind a TLS-intercepting proxy set it (this VM does); a user's machine usually does not. The peers are
  // not node programs and never pay it, so it is removed for every command measured, and said so.
  const extraCa = process.env.NODE_EXTRA_CA_CERTS
  if (extraCa !== undefined) {
    delete process.env.NODE_EXTRA_CA_CERTS
    notes.push(`NODE_EXTRA_CA_CERTS (${extraCa}) was removed from the commands' environment: node parses that bundle at every start (~40 ms here), which no peer pays.`)
  }

  // Tools
  const tools = makeTools().filter((t) => !args.only || args.only.has(t.name))
  const availability = await Promise.all(tools.map(async (t) => ({ tool: t, ...(await t.available()) })))
  for (const a of availability) log(`${a.tool.name}: ${a.ok ? a.version : `skipped (${a.note})`}`)

  // Corpora
  const wanted = args.corpora ?? new Set(p.defaultCorpora)
  const corpora: Corpus[] = []
  if (wanted.has("workspace")) corpora.push(await workspaceCorpus(log))
  if (wanted.has("small-files")) corpora.push(await smallFilesCorpus(p.smallFiles, log))
  if (wanted.has("large")) corpora.push(await largeCorpus(p.large, log))
  for (const c of corpora) log(`corpus ${c.name}: ${c.size.files} files, ${(c.size.bytes / (1 << 20)).toFixed(1)} MiB${c.cached ? " (cached)" : ""}`)

  // Scenarios
  const results: ScenarioResult[] = []
  const floors: Floor[] = []
  const baseOpts: ScenarioOptions = {
    verifyFanout: p.verifyFanout,
    historyLength: args.history ?? p.historyLength,
    historyReps: p.historyReps,
    ...(p.variants ? { variants: new Set(p.variants) } : {}),
    workDir,
    log,
  }
  if (!args.microOnly) {
    for (const corpus of corpora) {
      const kind = kindOf(corpus.name)
      const chosen = availability.filter((a) => {
        if (!a.ok) return false
        if (!args.only?.has(a.tool.name) && p.tools[kind] && !p.tools[kind].includes(a.tool.name)) {
          notes.push(`${a.tool.name} was not run on ${corpus.name} in this mode (see bench/run.ts plan()).`)
          return false
        }
        return true
      })
      const only = args.scenarios ?? (p.scenarios[kind] ? new Set(p.scenarios[kind]) : undefined)
      const opts = { ...baseOpts, ...(only ? { only } : {}) }
      if (args.floor) {
        // first, while no deletion has freed inodes that the written files would meet (see harness.ts), and
        // after the manifest every tool's restores are checked against, which reads the corpus into the page
        // cache as it is for the tools (the read step of the 100,000-file corpus took 7.8 s from the disk, 1.95 s warm)
        await corpusManifest(corpus)
        const writeTo = join(workDir, `floor-${corpus.name}`)
        const floor = measureFloor(corpus.dir, { corpus: corpus.name, writeTo })
        await removeTree(writeTo)
        for (const line of describeFloor(floor)) log(`floor ${line.trim()}`)
        floors.push(floor)
      }
      const collectors = new Map(chosen.map((a) => [a.tool.name, new Collector(a.tool, corpus)]))
      // repetition r of every tool before repetition r+1 of any: this VM's speed drifts by 20-30% within an
      // hour, and run one tool after another, a slow stretch fell on whichever tool it met
      const reps = Math.max(0, ...chosen.map((a) => repsFor(corpus.name, a.tool.kind)))
      for (let rep = 0; rep < reps; rep++) {
        for (const a of chosen) {
          const n = repsFor(corpus.name, a.tool.kind)
          if (rep >= n) continue
          if (trashRoom() < TRASH_FREE_BYTES) await emptyTrash(log)
          log(`${a.tool.name} on ${corpus.name}${n > 1 ? `, repetition ${rep + 1} of ${n}` : ""} ...`)
          await runBasicRep(a.tool, corpus, opts, collectors.get(a.tool.name)!, rep)
        }
      }
      const historyAsked = args.scenarios?.has("history") || args.scenarios?.has("gc-half")
      for (const a of chosen) {
        if (!(historyAsked || (p.historyOn[kind]?.includes(a.tool.name) ?? false))) continue
        if (trashRoom() < TRASH_FREE_BYTES) await emptyTrash(log)
        log(`${a.tool.name} on ${corpus.name}: history ...`)
        await runHistory(a.tool, corpus, opts, collectors.get(a.tool.name)!)
      }
      for (const a of chosen) {
        const rs = [...collectors.get(a.tool.name)!.results.values()]
        log(`${a.tool.name} on ${corpus.name}:`)
        for (const r of rs) {
          const med = r.samples.length ? [...r.samples].sort((x, y) => x.wallMs - y.wallMs)[r.samples.length >> 1]!.wallMs : NaN
          log(`  ${r.scenario.padEnd(26)} ${(med / 1000).toFixed(2).padStart(8)} s${r.verification ? `  verify: ${r.verification.ok ? "ok" : "FAILED"}` : ""}${r.error ? "  ERROR" : ""}`)
        }
        results.push(...rs)
      }
      await emptyTrash(log)
    }
  }

  const micro = args.micro ? await runMicro({ quick: args.quick, corpusDirs: corpora.map((c) => c.dir), log }) : []

  for (const c of corpora) {
    const r = { cairn: repsFor(c.name, "cairn"), peer: repsFor(c.name, "peer"), baseline: repsFor(c.name, "baseline") }
    if (r.baseline !== r.cairn || r.peer !== r.cairn) notes.push(`${c.name}: ${r.cairn} repetition(s) for cairn, ${r.peer} for the peers (restic, borg, casync), ${r.baseline} for the baselines (cp, tar, git).`)
  }
  notes.push("cp and tar have no incremental snapshots: their nochange and change rows are not run (they would repeat first).")
  notes.push(`Load average (1 min) at start ${load0.toFixed(1)}, at end ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores: above ~0.5 other work was competing and times are inflated.`)
  notes.push("Deleted trees (restores, repositories) are moved to a trash directory, emptied after each corpus (or when free space falls below 16 GiB) and followed by a wait of 365 s: on ext4 without a journal, a new file skips one by one the inodes freed less than 60 s ago, or less than 360 s ago when their inode-table block is dirty (which files created beside them make it), and this inflated whichever run came next.")
  notes.push("Page cache is warm: corpora and repositories are read from memory after the first pass; no cache is dropped between runs. Dirty data is written back (sync) before each measured command, untimed, so that no command pays for the writeback of the one before.")
  notes.push("Fan-out rows: wall time of all 4 restores together; peak RSS is the sum of the 4 processes' peaks.")
  notes.push("git keeps no mtimes and only 644/755 modes, so its verification reports mtime (and mode) mismatches by design; its directory mtimes are not compared.")
  if (!availability.some((a) => a.tool.name === "cairn" && a.ok)) notes.push("cairn was not measured; ratios and the chart use the first measured tool as the reference.")

  const report: Report = {
    startedAt: new Date(t0).toISOString(),
    durationS: (Date.now() - t0) / 1000,
    mode: args.quick ? "quick" : "full",
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "?", memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` },
    reps: Object.fromEntries(corpora.map((c) => [c.name, repsFor(c.name, "cairn")])),
    tools: availability.map((a) => ({ name: a.tool.name, ok: a.ok, version: a.version, ...(a.note ? { note: a.note } : {}) })),
    corpora: corpora.map((c) => ({ name: c.name, files: c.size.files, dirs: c.size.dirs, symlinks: c.size.symlinks, bytes: c.size.bytes, generatedMs: c.generatedMs, cached: c.cached })),
    results,
    floors,
    micro,
    notes,
  }
  await writeFile(join(args.out, "report.json"), JSON.stringify(report, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2))
  await writeFile(join(args.out, "report.md"), renderMarkdown(report))
  await writeFile(join(args.out, "chart.svg"), renderChart(report))
  await rm(workDir, { recursive: true, force: true })
  log(`wrote ${join(args.out, "report.md")}, report.json, chart.svg`)
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e)
  process.exit(1)
})
