// Renders a benchmark run as report.md, report.json and chart.svg.
//
// The chart plots, per corpus and scenario, the reference tool's median time
// divided by each other tool's (log scale, a line at 1.0: below the line the
// reference is faster). The reference is cairn; when cairn was not measured
// the first measured tool stands in, and the chart's title says so.

import { floorMs, type Floor, type FloorSteps } from "./floor.js"
import { summarize, verificationLabel } from "./harness.js"
import type { ScenarioResult } from "./scenarios.js"

export interface CorpusInfo {
  name: string
  files: number
  dirs: number
  symlinks: number
  bytes: number
  generatedMs: number
  cached: boolean
}

export interface MicroResult {
  group: string
  name: string
  value: number
  unit: string
  note?: string
}

export interface Report {
  startedAt: string
  durationS: number
  mode: "quick" | "full"
  machine: { cpus: number; cpuModel: string; memGiB: number; node: string; platform: string }
  /** repetitions per corpus */
  reps: Record<string, number>
  tools: Array<{ name: string; ok: boolean; version: string; note?: string }>
  corpora: CorpusInfo[]
  results: ScenarioResult[]
  /** per corpus: the least CPU time the format asks (floor.ts); absent in reports before it */
  floors?: Floor[]
  micro: MicroResult[]
  notes: string[]
}

const MiB = 1 << 20
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : "–")
const secs = (ms: number): string => (ms < 10_000 ? (ms / 1000).toFixed(2) : (ms / 1000).toFixed(1))

export function referenceTool(report: Report): string | undefined {
  const measured = new Set(report.results.filter((r) => r.samples.length).map((r) => r.tool))
  if (measured.has("cairn")) return "cairn"
  return report.tools.find((t) => measured.has(t.name))?.name
}

function median(r: ScenarioResult | undefined): number {
  return r && r.samples.length ? summarize(r.samples.map((s) => s.wallMs)).median : NaN
}

export function renderMarkdown(report: Report): string {
  const out: string[] = []
  const ref = referenceTool(report)
  out.push(`# cairn benchmark (${report.mode})`, "")
  out.push(
    `${report.startedAt}, ${report.durationS.toFixed(0)} s. ${report.machine.cpus} × ${report.machine.cpuModel}, ${report.machine.memGiB} GiB, Node ${report.machine.node}, ${report.machine.platform}. ` +
      `Repetitions per corpus: ${Object.entries(report.reps).map(([c, n]) => `${c} ${n}`).join(", ")} (history: 1); times are medians with min–max; page cache warm.`,
    "",
  )
  out.push("## Tools", "", "| tool | version | status |", "|---|---|---|")
  for (const t of report.tools) out.push(`| ${t.name} | ${t.version || "–"} | ${t.ok ? "measured" : `skipped: ${t.note ?? ""}`} |`)
  out.push("")
  out.push("## Corpora", "", "| corpus | files | dirs | symlinks | MiB | generation |", "|---|---:|---:|---:|---:|---|")
  for (const c of report.corpora) {
    out.push(`| ${c.name} | ${c.files.toLocaleString("en")} | ${c.dirs.toLocaleString("en")} | ${c.symlinks} | ${f1(c.bytes / MiB)} | ${c.cached ? "cached" : `${secs(c.generatedMs)} s`} |`)
  }
  out.push("")
  const ratioHeader = ref ? `${ref}/tool` : "ratio"
  for (const corpus of report.corpora) {
    const rs = report.results.filter((r) => r.corpus === corpus.name)
    if (!rs.length) continue
    out.push(`## ${corpus.name}`, "")
    const scenarios = [...new Set(rs.map((r) => r.scenario))]
    for (const sc of scenarios) {
      out.push(`### ${sc}`, "")
      out.push(`| tool | median s | min–max s | MB/s | peak RSS MiB | repo MiB / files | dedup | ${ratioHeader} | verify |`)
      out.push("|---|---:|---:|---:|---:|---:|---:|---:|---|")
      const refMed = median(rs.find((r) => r.tool === ref && r.scenario === sc))
      for (const r of rs.filter((x) => x.scenario === sc)) {
        if (!r.samples.length) {
          out.push(`| ${r.tool} | ERROR | | | | | | | ${r.error ?? ""} |`)
          continue
        }
        const t = summarize(r.samples.map((s) => s.wallMs))
        const rss = summarize(r.samples.map((s) => s.rssKiB)).max / 1024
        const mbs = r.logicalBytes / 1e6 / (t.median / 1000)
        const repo = r.repoBytes !== undefined ? `${f1(r.repoBytes / MiB)} / ${r.repoFiles?.toLocaleString("en")}` : ""
        const ratio = r.tool === ref ? "1.00" : Number.isFinite(refMed) ? (refMed / t.median).toFixed(2) : ""
        const verify = r.verification ? verificationLabel(r.verification) : r.error ? `error: ${r.error.slice(0, 80)}` : ""
        out.push(
          `| ${r.tool} | ${secs(t.median)} | ${secs(t.min)}–${secs(t.max)} | ${f1(mbs)} | ${f1(rss)} | ${repo} | ${r.dedupRatio ? r.dedupRatio.toFixed(2) : ""} | ${ratio} | ${verify} |`,
        )
      }
      out.push("")
    }
  }
  if (report.floors?.length) out.push(...renderFloors(report))
  const failed = report.results.filter((r) => r.verification && !r.verification.ok)
  if (failed.length) {
    out.push("## Verification details", "")
    for (const r of failed) out.push(`- ${r.tool} / ${r.corpus} / ${r.scenario}: ${r.verification!.examples.slice(0, 4).join("; ")}`)
    out.push("")
  }
  if (report.micro.length) {
    out.push("## Micro-benchmarks", "", "| group | what | value | unit | note |", "|---|---|---:|---|---|")
    for (const m of report.micro) out.push(`| ${m.group} | ${m.name} | ${m.value >= 100 ? m.value.toFixed(0) : m.value.toFixed(2)} | ${m.unit} | ${m.note ?? ""} |`)
    out.push("")
  }
  if (report.notes.length) {
    out.push("## Notes", "")
    for (const n of report.notes) out.push(`- ${n}`)
    out.push("")
  }
  return out.join("\n")
}

/**
 * The time targets of issues #3 and #4 that a floor bears on: at most `times`
 * the median of `tool` in the same scenario.
 */
export const TARGETS: Record<"first" | "restore", ReadonlyArray<{ tool: string; times: number }>> = {
  first: [{ tool: "borg", times: 0.8 }],
  restore: [
    { tool: "cp", times: 1.2 },
    { tool: "restic", times: 0.4 },
  ],
}

/** Each corpus's floors beside cairn's time and the targets: how far above its floor each is. */
export function renderFloors(report: Report): string[] {
  const out = [
    "## Floors",
    "",
    "The least CPU time the format asks of this machine (bench/floor.ts): each step a snapshot or a restore cannot skip, done alone on one thread with cairn's own primitives, summed and spread over the cores. No schedule of that work ends sooner; a target below its floor cannot be met with this format here.",
    "",
    "| corpus | operation | steps, s of one thread | floor s | cairn s (x floor) | targets s (x floor) |",
    "|---|---|---|---:|---:|---|",
  ]
  const over = (ms: number, floor: number): string => (Number.isFinite(ms) ? `${secs(ms)} (${(ms / floor).toFixed(2)}x)` : "–")
  for (const f of report.floors ?? []) {
    const rows: Array<[keyof typeof TARGETS, string, FloorSteps]> = [
      ["first", "first snapshot", f.snapshot],
      ["restore", "restore", f.restore],
    ]
    for (const [scenario, what, steps] of rows) {
      const floor = floorMs(steps, f.cores)
      const med = (tool: string): number => median(report.results.find((r) => r.corpus === f.corpus && r.tool === tool && r.scenario === scenario))
      const targets = TARGETS[scenario]
        .map((t) => ({ ...t, ms: t.times * med(t.tool) }))
        .filter((t) => Number.isFinite(t.ms))
        .map((t) => `${t.times}x ${t.tool}: ${over(t.ms, floor)}${t.ms < floor ? ", below the floor" : ""}`)
      const stepList = Object.entries(steps).map(([k, v]) => `${k} ${secs(v)}`).join(" + ")
      out.push(`| ${f.corpus} | ${what} | ${stepList} | ${secs(floor)} | ${over(med("cairn"), floor)} | ${targets.join("; ") || "–"} |`)
    }
  }
  out.push("")
  return out
}

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** Grouped bar chart of ref/peer median-time ratios, log2 scale, line at 1.0. */
export function renderChart(report: Report): string {
  const ref = referenceTool(report)
  const peers = report.tools.filter((t) => t.name !== ref && report.results.some((r) => r.tool === t.name && r.samples.length)).map((t) => t.name)
  const groups: Array<{ label: string; bars: Array<{ tool: string; ratio: number }> }> = []
  const keys = [...new Set(report.results.map((r) => `${r.corpus}\u0000${r.scenario}`))]
  for (const key of keys) {
    const [corpus, scenario] = key.split("\u0000") as [string, string]
    const refMed = median(report.results.find((r) => r.tool === ref && r.corpus === corpus && r.scenario === scenario))
    if (!Number.isFinite(refMed)) continue
    const bars = peers
      .map((tool) => ({ tool, ratio: refMed / median(report.results.find((r) => r.tool === tool && r.corpus === corpus && r.scenario === scenario)) }))
      .filter((b) => Number.isFinite(b.ratio) && b.ratio > 0)
    if (bars.length) groups.push({ label: `${corpus}: ${scenario}`, bars })
  }
  const colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
  const barW = 12
  const gap = 18
  const left = 60
  const top = 50
  const plotH = 300
  const groupW = Math.max(1, peers.length) * barW + gap
  const width = Math.max(520, left + groups.length * groupW + 140)
  const height = top + plotH + 170
  const allRatios = groups.flatMap((g) => g.bars.map((b) => b.ratio))
  const lo = Math.min(-3, Math.floor(Math.log2(Math.min(1, ...allRatios))))
  const hi = Math.max(3, Math.ceil(Math.log2(Math.max(1, ...allRatios))))
  const y = (ratio: number): number => top + ((hi - Math.log2(ratio)) / (hi - lo)) * plotH
  const s: string[] = []
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`)
  s.push(`<rect width="100%" height="100%" fill="white"/>`)
  const title = ref === "cairn" ? "cairn time / peer time (median; below 1.0: cairn faster)" : `${ref ?? "?"} time / other tool's time (cairn not measured; ${ref ?? "?"} stands in)`
  s.push(`<text x="${left}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`)
  for (let e = lo; e <= hi; e++) {
    const yy = y(2 ** e)
    s.push(`<line x1="${left}" x2="${width - 20}" y1="${yy}" y2="${yy}" stroke="${e === 0 ? "#000" : "#ddd"}" stroke-width="${e === 0 ? 1.5 : 1}"/>`)
    const label = e >= 0 ? String(2 ** e) : `1/${2 ** -e}`
    s.push(`<text x="${left - 6}" y="${yy + 4}" text-anchor="end">${label}</text>`)
  }
  groups.forEach((g, gi) => {
    const x0 = left + gap / 2 + gi * groupW
    g.bars.forEach((b) => {
      const pi = peers.indexOf(b.tool)
      const x = x0 + pi * barW
      const y1 = y(1)
      const yv = y(b.ratio)
      s.push(
        `<rect x="${x}" y="${Math.min(y1, yv)}" width="${barW - 2}" height="${Math.max(1, Math.abs(yv - y1))}" fill="${colors[pi % colors.length]}"><title>${esc(`${g.label} ${b.tool}: ${b.ratio.toFixed(2)}`)}</title></rect>`,
      )
    })
    const lx = x0 + (peers.length * barW) / 2
    s.push(`<text transform="translate(${lx},${top + plotH + 10}) rotate(45)" text-anchor="start">${esc(g.label)}</text>`)
  })
  peers.forEach((p, i) => {
    s.push(`<rect x="${left + i * 80}" y="30" width="10" height="10" fill="${colors[i % colors.length]}"/>`)
    s.push(`<text x="${left + i * 80 + 14}" y="39">${esc(p)}</text>`)
  })
  if (!groups.length) s.push(`<text x="${left}" y="${top + plotH / 2}">no comparable results</text>`)
  s.push("</svg>")
  return s.join("\n")
}
