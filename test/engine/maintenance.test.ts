// diff, verify and size accounting on real snapshots.
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { diskUsage, repositoryStats, uniqueBytes } from "../../engine/accounting.js"
import { diffLive, diffTrees } from "../../engine/diff.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { verifyRepository } from "../../engine/verify.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { hashBytes } from "../../store/ids.js"
import { packKey } from "../../store/pack.js"
import { Store } from "../../store/store.js"
import { buildTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir } from "../helpers.js"

async function newStore() {
  const backend = new MemoryObjectStore()
  const store = await Store.init({ backend, cacheDir: await tempDir(), config: { packSize: 32 * 1024 } })
  return { backend, store }
}

function spec(n: number): DirSpec {
  const dirs: DirSpec = {}
  for (let d = 0; d < n; d++) dirs[`d${d}`] = { dir: { "f.txt": { file: `file ${d}` }, deep: { dir: { "g.bin": { file: seededBytes(`g${d}`, 3000) } } } } }
  return dirs
}

describe("diff", () => {
  it("reports exactly the mutations applied, and nothing for a snapshot with itself", async () => {
    const { store } = await newStore()
    await fc.assert(
      fc.asyncProperty(fc.subarray([0, 1, 2, 3, 4, 5, 6, 7], { minLength: 0 }), fc.nat(), async (touched, seed) => {
        const src = await tempDir()
        await buildTree(src, spec(8))
        const a = await createSnapshot(store, src)
        const expected: string[] = []
        for (const d of touched) {
          const op = (seed + d) % 4
          if (op === 0) {
            await fsp.writeFile(path.join(src, `d${d}`, "f.txt"), `changed ${d}!`)
            expected.push(`modified d${d}/f.txt`)
          } else if (op === 1) {
            await fsp.rm(path.join(src, `d${d}`, "deep"), { recursive: true })
            expected.push(`removed d${d}/deep`, `removed d${d}/deep/g.bin`)
          } else if (op === 2) {
            await fsp.writeFile(path.join(src, `d${d}`, "new.txt"), "new")
            expected.push(`added d${d}/new.txt`)
          } else {
            await fsp.chmod(path.join(src, `d${d}`, "f.txt"), 0o600)
            expected.push(`modified d${d}/f.txt`)
          }
        }
        const b = await createSnapshot(store, src)
        const got = (await diffTrees(store, a.snapshot.tree, b.snapshot.tree)).changes.map((c) => `${c.change} ${c.path}`)
        expect(got.sort()).toEqual(expected.sort())
        expect((await diffTrees(store, b.snapshot.tree, b.snapshot.tree)).changes).toEqual([])
        const live = (await diffLive(store, a.snapshot.tree, src)).changes.map((c) => `${c.change} ${c.path}`)
        expect(live.sort()).toEqual(expected.sort())
      }),
      { numRuns: 12 },
    )
    await store.close()
  })

  it("descends only into subtrees whose ids differ", async () => {
    const { store } = await newStore()
    const src = await tempDir()
    await buildTree(src, spec(50))
    const a = await createSnapshot(store, src)
    await fsp.writeFile(path.join(src, "d17", "deep", "g.bin"), "edited")
    const b = await createSnapshot(store, src)
    let reads = 0
    const getBlob = store.getBlob.bind(store)
    store.getBlob = async (id) => {
      reads++
      return getBlob(id)
    }
    const d = await diffTrees(store, a.snapshot.tree, b.snapshot.tree)
    expect(d.changes.map((c) => c.path)).toEqual(["d17/deep/g.bin"])
    expect(reads).toBeLessThanOrEqual(6) // two roots, two d17, two deep
    await store.close()
  })

  it("tells a touched file from an edited one in a live directory", async () => {
    const { store } = await newStore()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "same" }, "b.txt": { file: "four" } })
    const a = await createSnapshot(store, src)
    await fsp.utimes(path.join(src, "a.txt"), 1e9, 1e9)
    await fsp.writeFile(path.join(src, "b.txt"), "FOUR")
    expect((await diffLive(store, a.snapshot.tree, src)).changes.map((c) => c.path)).toEqual(["b.txt"])
    await store.close()
  })
})

describe("verify", () => {
  it("passes a healthy repository and names the snapshot and path behind a damaged blob", async () => {
    const { backend, store } = await newStore()
    const src = await tempDir()
    const victim = seededBytes("victim", 5000)
    await buildTree(src, { "victim.bin": { file: victim }, sub: { dir: { "ok.txt": { file: "ok" } } } })
    const { snapshot } = await createSnapshot(store, src)
    expect(await verifyRepository(store, { readData: true })).toMatchObject({ ok: true, damage: [], snapshots: 1 })
    const [loc] = await store.locateMany([hashBytes(victim)])
    if (!loc || loc === "pending") throw new Error("not indexed")
    backend.tamper(packKey(loc.pack), (b) => {
      const c = Uint8Array.from(b)
      c[loc.offset + 10]! ^= 1
      return c
    })
    expect((await verifyRepository(store)).ok).toBe(true) // metadata checks do not read data
    const report = await verifyRepository(store, { readData: true })
    expect(report.ok).toBe(false)
    expect(report.damage).toEqual([expect.objectContaining({ blob: hashBytes(victim), pack: loc.pack, snapshots: [snapshot.id], paths: ["/victim.bin"] })])
    await backend.delete(packKey(loc.pack))
    const missing = await verifyRepository(store)
    expect(missing.damage.some((d) => d.reason.includes("missing") && d.snapshots.includes(snapshot.id))).toBe(true)
    await store.close()
  })

  it("reports a damaged snapshot record", async () => {
    const { backend, store } = await newStore()
    await backend.put("snapshots/snap_00000000000000ff", Buffer.from("{not json"))
    const report = await verifyRepository(store)
    expect(report.damage).toEqual([expect.objectContaining({ record: "snapshots/snap_00000000000000ff" })])
    await store.close()
  })
})

describe("accounting", () => {
  it("uniqueBytes is what only that snapshot references; stats show dedup", async () => {
    const { store } = await newStore()
    const src = await tempDir()
    // random data is stored raw: stored == raw size
    await buildTree(src, { "shared.bin": { file: seededBytes("shared", 20_000) }, "only-a.bin": { file: seededBytes("a", 12_000) } })
    const a = await createSnapshot(store, src)
    await fsp.rm(path.join(src, "only-a.bin"))
    await fsp.writeFile(path.join(src, "only-b.bin"), seededBytes("b", 9_000))
    const b = await createSnapshot(store, src)
    const unique = await uniqueBytes(store, [a.snapshot.id, b.snapshot.id])
    const treeOf = async (s: typeof a) => (await store.locateMany([s.snapshot.tree]))[0] as { length: number }
    expect(unique.get(a.snapshot.id)).toBe(12_000 + (await treeOf(a)).length)
    expect(unique.get(b.snapshot.id)).toBe(9_000 + (await treeOf(b)).length)
    const du = await diskUsage(store, b.snapshot)
    expect(du[0]).toMatchObject({ path: "/", logicalBytes: 29_000, uniqueBytes: unique.get(b.snapshot.id) })
    const stats = await repositoryStats(store)
    expect(stats).toMatchObject({ snapshots: 2, logicalBytes: 32_000 + 29_000 })
    expect(stats.referencedBytes).toBe(20_000 + 12_000 + 9_000 + (await treeOf(a)).length + (await treeOf(b)).length)
    expect(stats.dedupRatio).toBeGreaterThan(1.3)
    await store.close()
  })
})
