// diffTrees / diffLive: against an oracle read from the filesystem itself.
//
// The oracle lists a directory (type, mode, content hash, size, link target)
// before and after random mutations and derives the expected change set from
// the two listings; the engine's diffs must match it exactly. diff does not
// report mtime-only changes (see engine/diff.ts), so the oracle ignores mtimes.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it, vi } from "vitest"
import { diffLive, diffTrees, type Change, type DiffResult } from "../../engine/diff.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { buildTree, type DirSpec } from "../fixtures.js"
import { tempDir } from "../helpers.js"
import { dirSpec, listing, mutate, type Node } from "./mutations.js"

async function newStore(): Promise<Store> {
  return Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
}

/** The change set a diff must report between two listings, as sorted strings. */
function expectedChanges(before: Map<string, Node>, after: Map<string, Node>): { lines: string[]; added: number; removed: number; modified: number } {
  const lines: string[] = []
  let added = 0
  let removed = 0
  let modified = 0
  for (const [p, x] of before) {
    const y = after.get(p)
    if (!y) {
      lines.push(`removed ${x.type} ${p}`)
      if (x.type === "file") removed += x.size
      continue
    }
    if (x.type !== y.type) {
      lines.push(`modified ${y.type} ${p} type`)
      continue
    }
    const what: string[] = []
    if (x.type === "file" && x.hash !== y.hash) what.push("content")
    if (x.type === "symlink" && x.target !== y.target) what.push("target")
    if (x.mode !== y.mode) what.push("mode")
    if (what.length > 0) lines.push(`modified ${y.type} ${p} ${what.join(",")}`)
    if (what.includes("content")) modified += y.size
  }
  for (const [p, y] of after) {
    if (before.has(p)) continue
    lines.push(`added ${y.type} ${p}`)
    if (y.type === "file") added += y.size
  }
  return { lines: lines.sort(), added, removed, modified }
}

function lines(d: DiffResult): string[] {
  return d.changes.map((c: Change) => `${c.change} ${c.type} ${c.path}${c.what ? ` ${c.what.join(",")}` : ""}`).sort()
}

/** Parents come before their children and siblings are in name order. */
function inTreeOrder(changes: Change[]): boolean {
  const seen = new Set<string>()
  for (const c of changes) {
    const parent = c.path.includes("/") ? c.path.slice(0, c.path.lastIndexOf("/")) : ""
    if (seen.has(c.path)) return false
    seen.add(c.path)
    if (parent !== "" && changes.some((o) => o.path === parent) && !seen.has(parent)) return false
  }
  return true
}

describe("diffTrees and diffLive", () => {
  it("a snapshot diffed with itself, or with its unchanged directory, is empty", async () => {
    const store = await newStore()
    await fc.assert(
      fc.asyncProperty(dirSpec, async (spec) => {
        const src = await tempDir()
        await buildTree(src, spec)
        const { snapshot } = await createSnapshot(store, src, { full: true })
        expect(await diffTrees(store, snapshot.tree, snapshot.tree)).toEqual({ changes: [], addedBytes: 0, removedBytes: 0, modifiedBytes: 0 })
        expect(await diffLive(store, snapshot.tree, src)).toEqual({ changes: [], addedBytes: 0, removedBytes: 0, modifiedBytes: 0 })
        await fsp.rm(src, { recursive: true, force: true })
      }),
      { numRuns: 20 },
    )
    await store.close()
  })

  it("reports exactly the mutations applied to a random tree, and diffLive agrees with diffTrees", async () => {
    const store = await newStore()
    let nonEmpty = 0
    await fc.assert(
      fc.asyncProperty(
        dirSpec,
        fc.array(fc.record({ op: fc.integer({ min: 0, max: 5 }), pick: fc.nat() }), { minLength: 1, maxLength: 6 }),
        async (spec, ops) => {
          const src = await tempDir()
          await buildTree(src, spec)
          const before = await listing(src)
          const a = await createSnapshot(store, src, { full: true })
          for (const [i, { op, pick }] of ops.entries()) await mutate(src, op, pick, i)
          const want = expectedChanges(before, await listing(src))
          if (want.lines.length > 0) nonEmpty++
          const live = await diffLive(store, a.snapshot.tree, src)
          const b = await createSnapshot(store, src, { parent: a.snapshot })
          const trees = await diffTrees(store, a.snapshot.tree, b.snapshot.tree)
          for (const d of [trees, live]) {
            expect(lines(d)).toEqual(want.lines)
            expect({ added: d.addedBytes, removed: d.removedBytes, modified: d.modifiedBytes }).toEqual({
              added: want.added,
              removed: want.removed,
              modified: want.modified,
            })
            expect(inTreeOrder(d.changes)).toBe(true)
          }
          expect(live).toEqual(trees)
          await fsp.rm(src, { recursive: true, force: true })
        },
      ),
      { numRuns: 30 },
    )
    expect(nonEmpty).toBeGreaterThan(15) // the property is not vacuous
    await store.close()
  })

  it("loads only the trees on the path to a change: O(depth), not O(directories)", async () => {
    const store = await newStore()
    const src = await tempDir()
    const spec: DirSpec = {}
    for (let d = 0; d < 50; d++) spec[`d${d}`] = { dir: { x: { dir: { y: { dir: { "f.txt": { file: `file ${d}` } } } } }, "g.txt": { file: `g ${d}` } } }
    await buildTree(src, spec)
    const a = await createSnapshot(store, src)
    await fsp.writeFile(path.join(src, "d31", "x", "y", "f.txt"), "edited")
    const b = await createSnapshot(store, src, { parent: a.snapshot })
    const spy = vi.spyOn(store, "getBlob")
    const d = await diffTrees(store, a.snapshot.tree, b.snapshot.tree)
    expect(d.changes).toEqual([{ path: "d31/x/y/f.txt", change: "modified", type: "file", what: ["content"], oldSize: 7, newSize: 6 }])
    expect(spy.mock.calls.length).toBe(2 * 4) // root, d31, x, y on each side
    spy.mockClear()
    await diffTrees(store, a.snapshot.tree, a.snapshot.tree)
    expect(spy).not.toHaveBeenCalled()
    spy.mockRestore()
    await store.close()
  })

  it("reports a removed or added directory with every path below it, in tree order", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "1" }, a: { dir: { b: { dir: { "c.bin": { file: "333" } } }, "z.txt": { file: "22" } } } })
    const a = await createSnapshot(store, src)
    await fsp.rm(path.join(src, "a"), { recursive: true })
    await buildTree(path.join(src, "new"), { "n.txt": { file: "4444" } })
    const b = await createSnapshot(store, src)
    const d = await diffTrees(store, a.snapshot.tree, b.snapshot.tree)
    expect(d.changes.map((c) => `${c.change} ${c.path}`)).toEqual(["removed a", "removed a/b", "removed a/b/c.bin", "removed a/z.txt", "added new", "added new/n.txt"])
    expect(d).toMatchObject({ addedBytes: 4, removedBytes: 5, modifiedBytes: 0 })
    expect(await diffLive(store, a.snapshot.tree, src)).toEqual(d)
    await store.close()
  })

  it("compares hardlink members by link target and size; their content is compared at the first member", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "h1.txt": { file: "shared inode" }, sub: { dir: { "h2.txt": { hardlink: "h1.txt" } } } })
    const a = await createSnapshot(store, src)
    await fsp.writeFile(path.join(src, "h1.txt"), "SHARED INODE") // same inode, same size: both names see it
    const b = await createSnapshot(store, src, { parent: a.snapshot })
    const d = await diffTrees(store, a.snapshot.tree, b.snapshot.tree)
    expect(d.changes.map((c) => `${c.change} ${c.path} ${c.what}`)).toEqual(["modified h1.txt content"])
    expect(await diffLive(store, a.snapshot.tree, src)).toEqual(d)
    // breaking the link (same bytes, own inode) changes what the member points at
    await fsp.rm(path.join(src, "sub", "h2.txt"))
    await fsp.writeFile(path.join(src, "sub", "h2.txt"), "SHARED INODE")
    const c = await createSnapshot(store, src, { parent: b.snapshot })
    expect((await diffTrees(store, b.snapshot.tree, c.snapshot.tree)).changes.map((x) => `${x.change} ${x.path} ${x.what}`)).toEqual([
      "modified sub/h2.txt content",
    ])
    await store.close()
  })

  it("tells a touched file from an edited one of the same size in a live directory; excludes apply", async () => {
    const store = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "same" }, "b.txt": { file: "four" }, "skip.log": { file: "x" } })
    const a = await createSnapshot(store, src, { exclude: ["*.log"] })
    await fsp.utimes(path.join(src, "a.txt"), 1e9, 1e9)
    await fsp.writeFile(path.join(src, "b.txt"), "FOUR")
    await fsp.utimes(path.join(src, "b.txt"), 1e9, 1e9)
    await fsp.writeFile(path.join(src, "skip.log"), "changed, but excluded")
    const d = await diffLive(store, a.snapshot.tree, src, { exclude: a.snapshot.exclude })
    expect(d.changes).toEqual([{ path: "b.txt", change: "modified", type: "file", what: ["content"], oldSize: 4, newSize: 4 }])
    await store.close()
  })
})
