import fs from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { describeFloor, floorMs, measureFloor, type Floor } from "../../bench/floor.js"
import { renderFloors, renderMarkdown, type Report } from "../../bench/report.js"
import type { ScenarioResult } from "../../bench/scenarios.js"
import { buildTree, describeTree } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

describe("bench floor", () => {
  it("does each step a snapshot and a restore cannot skip, once per distinct chunk, and writes the tree back", async () => {
    const src = await tempDir()
    const random = seededBytes("floor", 3 * 512 * 1024)
    const text = textBytes("floor", 400_000)
    await buildTree(src, {
      "random.bin": { file: random, mode: 0o755 },
      "text.txt": { file: text },
      "copy.txt": { file: text },
      "linked.txt": { hardlink: "text.txt" },
      "small.txt": { file: "small" },
      "link": { symlink: "text.txt" },
      "sub": { dir: { "deep.txt": { file: "deep" }, "empty": { dir: {} } } },
    })
    const out = path.join(await tempDir(), "tree")
    const f = measureFloor(src, { corpus: "t", cores: 2, writeTo: out })

    // the hardlink is read once; the symlink is not a file
    expect(f.files).toBe(5)
    expect(f.bytes).toBe(random.length + 2 * text.length + "small".length + "deep".length)
    // random bytes above the maximum chunk size are cut; the copy adds no distinct chunk
    expect(f.chunks).toBeGreaterThan(5)
    expect(f.distinct).toBeLessThan(f.chunks)
    // text compresses, random bytes do not: stored raw, they cost no compression
    expect(f.compressed).toBeGreaterThan(0)
    expect(f.compressed).toBeLessThan(f.distinct)
    expect(f.storedBytes).toBeLessThan(f.bytes - text.length)
    expect(f.storedBytes).toBeGreaterThan(random.length)
    for (const ms of [...Object.values(f.snapshot), ...Object.values(f.restore)]) expect(ms).toBeGreaterThan(0)

    // the written tree has the files' contents and modes, and their mtimes to the millisecond;
    // a hardlink group is written once (its first name in sorted order), symlinks not at all
    const [want, got] = [await describeTree(src, { mtimes: false }), await describeTree(out, { mtimes: false })]
    for (const rel of ["random.bin", "copy.txt", "linked.txt", "small.txt", "sub/deep.txt"]) {
      expect(got[rel]).toBe(want[rel])
      expect(Math.abs(fs.statSync(path.join(out, rel)).mtimeMs - fs.statSync(path.join(src, rel)).mtimeMs)).toBeLessThan(1)
    }
    expect(got["sub/empty"]).toMatch(/^dir /)
    expect(got["text.txt"]).toBeUndefined()
    expect(got["link"]).toBeUndefined()

    const lines = describeFloor(f)
    expect(lines[0]).toContain(`t: 5 files`)
    expect(lines[1]).toMatch(/snapshot: read [\d.]+ \+ chunk [\d.]+ \+ hash [\d.]+ \+ compress [\d.]+ = [\d.]+ s of one thread; floor [\d.]+ s on 2 cores/)
    expect(lines[2]).toMatch(/restore: decode [\d.]+ \+ verify [\d.]+ \+ write [\d.]+ = /)
  })

  it("spreads the steps' sum over the cores", () => {
    expect(floorMs({ a: 300, b: 500 }, 2)).toBe(400)
    expect(floorMs({ a: 300, b: 500 }, 1)).toBe(800)
  })

  it("refuses to write into an existing tree", async () => {
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "a" } })
    const existing = await tempDir()
    expect(() => measureFloor(src, { writeTo: existing })).toThrow(/EEXIST/)
  })
})

describe("bench report: floors", () => {
  const result = (tool: string, scenario: string, ...wallMs: number[]): ScenarioResult => ({ corpus: "ws", tool, scenario, samples: wallMs.map((ms) => ({ wallMs: ms, rssKiB: 1 })), logicalBytes: 1 })
  const floor: Floor = {
    corpus: "ws",
    files: 1,
    bytes: 1,
    chunks: 1,
    distinct: 1,
    compressed: 1,
    storedBytes: 1,
    cores: 2,
    snapshot: { read: 1000, chunk: 600, hash: 300, compress: 1500 },
    restore: { decode: 1000, verify: 300, write: 1100 },
  }
  const report = (results: ScenarioResult[]): Report => ({
    startedAt: "",
    durationS: 0,
    mode: "quick",
    machine: { cpus: 2, cpuModel: "", memGiB: 1, node: "", platform: "" },
    reps: {},
    tools: [],
    corpora: [],
    results,
    floors: [floor],
    micro: [],
    notes: [],
  })

  it("sets each operation's floor beside cairn's median and the targets, and marks a target below its floor", () => {
    const md = renderFloors(report([result("cairn", "first", 4000, 3400, 9000), result("borg", "first", 4000), result("cairn", "restore", 2400), result("cp", "restore", 900), result("restic", "restore", 3500)]))
    const first = md.find((l) => l.includes("| first snapshot |"))!
    // (1.0 + 0.6 + 0.3 + 1.5) / 2 = 1.70 s; cairn's median 4.00 s; 0.8 x borg's 4.0 s = 3.20 s
    expect(first).toBe("| ws | first snapshot | read 1.00 + chunk 0.60 + hash 0.30 + compress 1.50 | 1.70 | 4.00 (2.35x) | 0.8x borg: 3.20 (1.88x) |")
    const restore = md.find((l) => l.includes("| restore |"))!
    // (1.0 + 0.3 + 1.1) / 2 = 1.20 s; 1.2 x cp's 0.9 = 1.08 s and 0.4 x restic's 3.5 = 1.40 s
    expect(restore).toBe("| ws | restore | decode 1.00 + verify 0.30 + write 1.10 | 1.20 | 2.40 (2.00x) | 1.2x cp: 1.08 (0.90x), below the floor; 0.4x restic: 1.40 (1.17x) |")
    expect(renderMarkdown(report([]))).toContain("## Floors")
  })

  it("leaves out a target whose tool was not measured", () => {
    const md = renderFloors(report([result("cairn", "restore", 2400)]))
    expect(md.find((l) => l.includes("| restore |"))).toMatch(/\| 2\.40 \(2\.00x\) \| – \|$/)
  })
})
