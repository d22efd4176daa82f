// The walk lists a tree the same whether helper threads list part of it or
// not (scan-helper.ts): the same nodes, counts and warnings.
import { execFileSync } from "node:child_process"
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { afterEach, describe, expect, it, vi } from "vitest"
import { scanTree, type ScanResult } from "../../engine/scan.js"
import * as helper from "../../engine/scan-helper.js"
import { buildTree, type DirSpec, type Spec } from "../fixtures.js"
import { tempDir } from "../helpers.js"

vi.mock("../../engine/scan-helper.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../engine/scan-helper.js")>()
  return { ...actual, listDirs: vi.fn(actual.listDirs) }
})
const listDirs = vi.mocked(helper.listDirs)
const actual = await vi.importActual<typeof import("../../engine/scan-helper.js")>("../../engine/scan-helper.js")

const nameArb = fc.oneof(fc.stringMatching(/^[a-z0-9]{1,6}$/), fc.constantFrom("with space", "ünïcødé", "日本語", ".hidden"))
const treeArb: fc.Arbitrary<DirSpec> = fc.letrec((tie) => ({
  dir: fc.dictionary(nameArb, tie("node") as fc.Arbitrary<Spec>, { maxKeys: 6 }),
  node: fc.oneof(
    { weight: 3, arbitrary: fc.record({ file: fc.string({ maxLength: 20 }), mode: fc.constantFrom(0o644, 0o755, 0o600) }) },
    { weight: 1, arbitrary: fc.record({ symlink: fc.oneof(nameArb, fc.constant("../away")) }) },
    { weight: 2, arbitrary: fc.record({ dir: tie("dir") as fc.Arbitrary<DirSpec> }) },
  ),
})).dir as fc.Arbitrary<DirSpec>

/** Two scans of one tree, without helpers and with them from the first entry on. */
async function bothWays(root: string, opts: { exclude?: (rel: string) => boolean } = {}): Promise<[ScanResult, ScanResult]> {
  const ignore = opts.exclude && { ignores: opts.exclude }
  const alone = await scanTree(root, { helpFrom: Infinity, ...(ignore ? { ignore } : {}) })
  const helped = await scanTree(root, { helpFrom: 0, ...(ignore ? { ignore } : {}) })
  return [alone, helped]
}

afterEach(() => {
  listDirs.mockReset()
  listDirs.mockImplementation(actual.listDirs)
})

describe("scan with helper threads", () => {
  it("gives the tree, counts and warnings the walk alone gives (random trees)", async () => {
    await fc.assert(
      fc.asyncProperty(treeArb, async (spec) => {
        const root = path.join(await tempDir(), "t")
        await buildTree(root, spec)
        const [alone, helped] = await bothWays(root)
        expect(helped).toEqual(alone)
      }),
      { numRuns: 25 },
    )
  })

  it("reports what it leaves out as the walk alone does: special files, names that are not UTF-8, excluded entries", async () => {
    const root = path.join(await tempDir(), "t")
    const dirs: DirSpec = {}
    for (let i = 0; i < 40; i++) dirs[`d${i}`] = { dir: { a: { file: `a${i}` }, b: { symlink: "a" }, sub: { dir: { c: { file: "c" } } }, skip: { file: "x" } } }
    await buildTree(root, { ...dirs, top: { file: "t" } })
    execFileSync("mkfifo", [path.join(root, "d3", "fifo")])
    await fsp.writeFile(Buffer.concat([Buffer.from(path.join(root, "d7") + "/"), Buffer.from([0x61, 0xff])]), "not utf-8")
    const [alone, helped] = await bothWays(root, { exclude: (rel) => rel.endsWith("/skip") })
    expect(listDirs).toHaveBeenCalled()
    expect(helped).toEqual(alone)
    expect(alone.warnings.map((w) => [w.path, w.reason])).toEqual([
      ["d3/fifo", "FIFO skipped"],
      ["d7/a\uFFFD", "name is not valid UTF-8; skipped"],
    ])
    expect(alone.files).toBe(81)
    expect(alone.dirs).toBe(80)
    expect(alone.symlinks).toBe(40)
  })

  it("leaves out the directories it is told to skip (by device and inode) whichever thread listed them", async () => {
    const root = path.join(await tempDir(), "t")
    const dirs: DirSpec = {}
    for (let i = 0; i < 30; i++) dirs[`d${i}`] = { dir: { f: { file: `f${i}` }, repo: { dir: { pack: { file: "p" } } } } }
    await buildTree(root, dirs)
    const ids = new Set<string>()
    for (const i of [3, 17, 29]) {
      const st = await fsp.lstat(path.join(root, `d${i}`, "repo"), { bigint: true })
      ids.add(`${st.dev}:${st.ino}`)
    }
    const skipDirs = { ids, reason: "skipped: it is the repository" }
    const alone = await scanTree(root, { helpFrom: Infinity, skipDirs })
    const helped = await scanTree(root, { helpFrom: 0, skipDirs })
    expect(listDirs).toHaveBeenCalled()
    expect(helped).toEqual(alone)
    expect(alone.warnings).toEqual(["d17/repo", "d29/repo", "d3/repo"].map((p) => ({ path: p, reason: "skipped: it is the repository" })))
  })

  it("lists the directories itself when a helper fails", async () => {
    const root = path.join(await tempDir(), "t")
    const dirs: DirSpec = {}
    for (let i = 0; i < 30; i++) dirs[`d${i}`] = { dir: { f: { file: `f${i}` }, e: { dir: {} } } }
    await buildTree(root, dirs)
    const alone = await scanTree(root, { helpFrom: Infinity })
    listDirs.mockRejectedValue(new Error("the helper crashed"))
    const helped = await scanTree(root, { helpFrom: 0 })
    expect(listDirs).toHaveBeenCalled()
    expect(helped).toEqual(alone)
  })

  it("asks for help only past helpFrom entries", async () => {
    const root = path.join(await tempDir(), "t")
    const dirs: DirSpec = {}
    for (let i = 0; i < 30; i++) dirs[`d${i}`] = { dir: { f: { file: "f" } } }
    await buildTree(root, dirs)
    await scanTree(root, { helpFrom: 1000 })
    expect(listDirs).not.toHaveBeenCalled()
    await scanTree(root, { helpFrom: 10 })
    expect(listDirs).toHaveBeenCalled()
  })
})
