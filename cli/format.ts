// Human output: binary units, aligned tables, a progress bar on a TTY.

import type { Progress } from "../engine/index.js"

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let v = n
  let u = 0
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`
}

/**
 * A path (or link target) as human-readable output shows it: as is, unless it
 * holds control characters, a double quote or a backslash; then quoted with
 * escapes, as git quotes such paths, so that a name with a newline cannot pass
 * for two lines. --json output carries names exactly.
 */
export function shownPath(p: string): string {
  return /[\u0000-\u001f\u007f"\\]/.test(p) ? JSON.stringify(p) : p
}

/** A command's warnings (skipped or vanished paths), one line each on stderr. */
export function printWarnings(warnings: ReadonlyArray<{ path: string; reason: string }>): void {
  for (const w of warnings) process.stderr.write(`warning: ${shownPath(w.path)}: ${w.reason}\n`)
}

/** Columns aligned; numbers (cells ending in a unit or digits) right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => /^[\d.,]+( ?[KMGT]?i?B|x|%)?$/.test(r[i] ?? "")))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/** Aligned "key  value" lines. */
export function kv(rows: Array<[string, string]>): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n")
}

/** A dedup ratio (logical / physical bytes) for people: none while nothing is stored, two significant digits below 1 (a tiny repository's overhead). */
export function ratio(logicalBytes: number, value: number): string {
  if (logicalBytes === 0) return "- (nothing stored yet)"
  return `${value >= 1 ? value.toFixed(2) : value.toPrecision(2)}x`
}

/** "1 pack", "2 packs" */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
}

/** A one-line progress bar on stderr, redrawn at most 10 times a second; off when not a TTY. */
export class ProgressBar {
  private last = 0
  private shown = false

  constructor(private readonly enabled: boolean) {}

  update = (p: Progress): void => {
    if (!this.enabled) return
    const now = Date.now()
    if (now - this.last < 100) return
    this.last = now
    const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : p.filesTotal > 0 ? p.filesDone / p.filesTotal : 0
    const width = 24
    const fill = Math.round(frac * width)
    const bar = "#".repeat(fill) + "-".repeat(width - fill)
    const total = (n: number, show: (n: number) => string) => (n > 0 ? show(n) : "?")
    const text = `${p.phase} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}%  ${p.filesDone}/${total(p.filesTotal, String)} files  ${bytes(p.bytesDone)}/${total(p.bytesTotal, bytes)}`
    process.stderr.write(`\r${text.slice(0, (process.stderr.columns ?? 100) - 1)}\x1b[K`)
    this.shown = true
  }

  done(): void {
    if (this.shown) process.stderr.write("\r\x1b[K")
    this.shown = false
  }
}
