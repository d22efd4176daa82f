// Scenarios: what is measured, for one tool on one corpus.
//
// Per repetition, in a fresh repository:
//   first        first snapshot of the clean corpus
//   nochange     a second snapshot, nothing changed
//   change       snapshot after the scripted small change (a few files edited,
//                one added, 1 MiB rewritten in the middle of the big file);
//                the change is undone afterwards
//   restore      full restore of the first snapshot into an empty directory,
//                verified against the corpus (first repetition)
//   fanout-4     4 restores of that snapshot at once (4 processes); tools may
//                add variants (cairn: box create x4, one `cairn restore` with 4
//                destinations, Promise.all in one process),
//                which run in the first repetition only
// Tools without incremental snapshots (cp, tar) skip nochange and change:
// those would repeat first.
// Then, in another fresh repository:
//   history-N    N snapshots with a different change between each (the
//                changes accumulate); repo size and dedup ratio at the end
//   gc-half      delete every other snapshot of the history, then gc
//
// Throughput is logical bytes (the corpus's file bytes, times the number of
// trees handled) per second of wall time.

import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import { applyChange, markClean, type Corpus, type Undo } from "./corpora.js"
import { Meter, manifest, removeTree, verifyTree, type Manifest, type Verification } from "./harness.js"
import { removeRepo, type Repo, type Tool } from "./tools.js"

export const SCENARIOS = ["first", "nochange", "change", "restore", "fanout-4", "history", "gc-half"] as const
export type ScenarioName = (typeof SCENARIOS)[number]

export interface Sample {
  wallMs: number
  rssKiB: number
}

export interface ScenarioResult {
  corpus: string
  tool: string
  scenario: string
  samples: Sample[]
  /** logical bytes handled per sample (for MB/s) */
  logicalBytes: number
  repoBytes?: number
  repoFiles?: number
  dedupRatio?: number
  verification?: Verification
  error?: string
}

export interface ScenarioOptions {
  historyLength: number
  historyReps: number
  /** Extra fan-out variants to run (default: every one the tool has). */
  variants?: Set<string>
  /** Verify one fan-out destination too (first repetition). */
  verifyFanout: boolean
  workDir: string
  only?: Set<string>
  log: (s: string) => void
}

const manifests = new Map<string, Promise<Manifest>>()
/** The expected manifest of a clean corpus, computed once per run. */
export function corpusManifest(corpus: Corpus): Promise<Manifest> {
  let m = manifests.get(corpus.dir)
  if (!m) {
    m = manifest(corpus.dir)
    manifests.set(corpus.dir, m)
  }
  return m
}

function wants(opts: ScenarioOptions, s: ScenarioName): boolean {
  return !opts.only || opts.only.has(s)
}

/** One tool's results on one corpus, gathered across repetitions. */
export class Collector {
  readonly results = new Map<string, ScenarioResult>()
  constructor(
    readonly tool: Tool,
    readonly corpus: Corpus,
  ) {}
  get(scenario: string, logicalBytes: number): ScenarioResult {
    let r = this.results.get(scenario)
    if (!r) {
      r = { corpus: this.corpus.name, tool: this.tool.name, scenario, samples: [], logicalBytes }
      this.results.set(scenario, r)
    }
    return r
  }
  add(scenario: string, logicalBytes: number, m: Meter): ScenarioResult {
    const r = this.get(scenario, logicalBytes)
    r.samples.push({ wallMs: m.wallMs, rssKiB: m.rssKiB })
    return r
  }
  async repoSizeInto(r: ScenarioResult, repo: Repo): Promise<void> {
    const s = await this.tool.repoSize(repo)
    r.repoBytes = s.bytes
    r.repoFiles = s.files
  }
}

async function freshRepo(base: string): Promise<Repo> {
  const repo = { path: join(base, "repo"), aux: join(base, "aux") }
  await removeRepo(repo)
  await mkdir(repo.aux, { recursive: true })
  return repo
}

async function emptyDir(path: string): Promise<string> {
  await removeTree(path)
  await mkdir(path, { recursive: true })
  return path
}

/** Runs `fn`, recording a thrown error on the scenario instead of aborting the tool. */
async function guarded(c: Collector, scenario: string, logical: number, fn: () => Promise<void>, log: (s: string) => void): Promise<boolean> {
  try {
    await fn()
    return true
  } catch (e) {
    const r = c.get(scenario, logical)
    r.error = (e as Error).message.slice(0, 400)
    log(`    ${c.tool.name} ${scenario}: ERROR ${r.error}`)
    return false
  }
}

/** Repetition `rep` of the basic scenarios (first .. fanout), in a fresh repository. */
async function basicRep(tool: Tool, corpus: Corpus, opts: ScenarioOptions, c: Collector, rep: number): Promise<void> {
  const logical = corpus.size.bytes
  const base = join(opts.workDir, `${tool.name}-${corpus.name}`)
  const expected = await corpusManifest(corpus)
  const repo = await freshRepo(base)
  const env = new Meter()
  let firstId = ""
  const ok = await guarded(
    c,
    "first",
    logical,
    async () => {
      await tool.init(repo, env)
      const m = new Meter()
      firstId = await tool.snapshot(repo, corpus.dir, "first", m)
      const r = c.add("first", logical, m)
      if (rep === 0) await c.repoSizeInto(r, repo)
    },
    opts.log,
  )
  if (!ok) {
    await removeRepo(repo)
    return
  }
  const incremental = tool.incremental !== false
  if (incremental && wants(opts, "nochange")) {
    await guarded(c, "nochange", logical, async () => {
      const m = new Meter()
      await tool.snapshot(repo, corpus.dir, "nochange", m)
      const r = c.add("nochange", logical, m)
      if (rep === 0) await c.repoSizeInto(r, repo)
    }, opts.log)
  }
  if (incremental && wants(opts, "change")) {
    await guarded(c, "change", logical, async () => {
      const undo = applyChange(corpus, 1000 + rep)
      try {
        const m = new Meter()
        await tool.snapshot(repo, corpus.dir, "change", m)
        const r = c.add("change", logical, m)
        if (rep === 0) await c.repoSizeInto(r, repo)
      } finally {
        undo()
        markClean(corpus)
      }
    }, opts.log)
  }
  if (wants(opts, "restore")) {
    await guarded(c, "restore", logical, async () => {
      const dest = await emptyDir(join(base, "restore"))
      const m = new Meter()
      await tool.restore(repo, firstId, dest, m)
      const r = c.add("restore", logical, m)
      if (rep === 0) r.verification = await verifyTree(expected, dest, { dirMtimes: !tool.ignores?.dirMtimes })
      await removeTree(dest)
    }, opts.log)
  }
  if (wants(opts, "fanout-4")) {
    const variants: Record<string, (repo: Repo, id: string, dests: string[], m: Meter) => Promise<void>> = {
      "fanout-4": (rp, id, dests, m) => m.parallel(dests.map((d) => (mm: Meter) => tool.restore(rp, id, d, mm))),
      ...(rep === 0
        ? Object.fromEntries(Object.entries(tool.fanoutVariants ?? {}).filter(([k]) => !opts.variants || opts.variants.has(k)).map(([k, v]) => [`fanout-4:${k}`, v]))
        : {}),
    }
    for (const [name, runFanout] of Object.entries(variants)) {
      await guarded(c, name, logical * 4, async () => {
        const dests = await Promise.all([0, 1, 2, 3].map((i) => emptyDir(join(base, `fan-${i}`))))
        try {
          const m = new Meter()
          await runFanout(repo, firstId, dests, m)
          const r = c.add(name, logical * 4, m)
          // box-create-4 puts its boxes where the CLI does: nothing in dests to check
          if (rep === 0 && name !== "fanout-4:box-create-4" && opts.verifyFanout) r.verification = await verifyTree(expected, dests[3]!, { dirMtimes: !tool.ignores?.dirMtimes })
        } finally {
          await Promise.all(dests.map((d) => removeTree(d)))
        }
      }, opts.log)
    }
  }
  await removeRepo(repo)
}

/** History of N snapshots with changes between them, then gc of half. */
async function history(tool: Tool, corpus: Corpus, opts: ScenarioOptions, c: Collector): Promise<void> {
  const n = opts.historyLength
  const logical = corpus.size.bytes
  const name = `history-${n}`
  const base = join(opts.workDir, `${tool.name}-${corpus.name}-history`)
  for (let rep = 0; rep < opts.historyReps; rep++) {
    const repo = await freshRepo(base)
    const undos: Undo[] = []
    const ids: string[] = []
    try {
      const ok = await guarded(c, name, logical * n, async () => {
        await tool.init(repo, new Meter())
        const m = new Meter()
        for (let k = 0; k < n; k++) {
          if (k > 0) undos.push(applyChange(corpus, k))
          ids.push(await tool.snapshot(repo, corpus.dir, `h${k}`, m))
        }
        const r = c.add(name, logical * n, m)
        if (rep === 0) {
          await c.repoSizeInto(r, repo)
          r.dedupRatio = (logical * n) / Math.max(1, r.repoBytes ?? 1)
        }
      }, opts.log)
      if (ok && wants(opts, "gc-half")) {
        await guarded(c, "gc-half", logical * Math.ceil(n / 2), async () => {
          const m = new Meter()
          await tool.forget(repo, ids.filter((_, i) => i % 2 === 1), m)
          await tool.gc(repo, m)
          const r = c.add("gc-half", logical * Math.ceil(n / 2), m)
          if (rep === 0) {
            await c.repoSizeInto(r, repo)
            r.dedupRatio = (logical * Math.ceil(n / 2)) / Math.max(1, r.repoBytes ?? 1)
          }
        }, opts.log)
      }
    } finally {
      for (const u of undos.reverse()) u()
      markClean(corpus)
      await removeRepo(repo)
    }
  }
}

/** Repetition `rep` (0-based) of the basic scenarios, into c; nothing if none of them is wanted. */
export async function runBasicRep(tool: Tool, corpus: Corpus, opts: ScenarioOptions, c: Collector, rep: number): Promise<void> {
  const basicWanted = (["first", "nochange", "change", "restore", "fanout-4"] as const).some((s) => wants(opts, s))
  if (basicWanted) await basicRep(tool, corpus, opts, c, rep)
}

/** The history scenarios (history-N, gc-half), into c, if wanted. */
export async function runHistory(tool: Tool, corpus: Corpus, opts: ScenarioOptions, c: Collector): Promise<void> {
  if (wants(opts, "history") || wants(opts, "gc-half")) await history(tool, corpus, opts, c)
}
