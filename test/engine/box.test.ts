import { spawnSync } from "node:child_process"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { Box, Repository, isCairnError, type RestoreResult } from "../../engine/index.js"
import { buildTree, describeTree } from "../fixtures.js"
import { pastTick, seededBytes, tempDir } from "../helpers.js"

async function repo() {
  return Repository.open({ path: path.join(await tempDir(), "repo") })
}

describe("Box API", () => {
  it("create, write, exec, snapshot, branch three boxes in parallel, delete", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r, name: "dev" })
    await box.files.write({ path: "/app/a.txt", content: "hi" })
    const run = await box.exec("mkdir -p lib && echo built > lib/out.txt && echo done")
    expect(run).toMatchObject({ exitCode: 0, stdout: "done\n" })
    const snap = await box.snapshot({ name: "after-setup" })
    expect(snap).toMatchObject({ name: "after-setup", boxId: box.id, status: "ready", sizeBytes: 2 + 6 })
    expect(snap.id).toMatch(/^snap_[0-9a-f]{16}$/)
    expect(snap.stats).toMatchObject({ files: 2, dirs: 2, symlinks: 0, logicalBytes: 8 })
    expect(new Date(snap.createdAt).toISOString()).toBe(snap.createdAt)

    const boxes = await Promise.all([Box.fromSnapshot(snap.id, { repo: r }), Box.fromSnapshot(snap.id, { repo: r }), Box.fromSnapshot("after-setup", { repo: r })])
    expect(new Set(boxes.map((b) => b.dir)).size).toBe(3)
    for (const b of boxes) expect(await describeTree(b.dir)).toEqual(await describeTree(box.dir))
    await boxes[0]!.files.write({ path: "/app/a.txt", content: "changed" })
    expect((await boxes[1]!.files.read("/app/a.txt")).toString()).toBe("hi")
    expect((await box.files.read("/app/a.txt")).toString()).toBe("hi")
    const files = await boxes[2]!.files.list("/app")
    expect(files).toEqual([expect.objectContaining({ name: "a.txt", path: "/app/a.txt", size: 2, isDir: false })])

    await box.delete()
    expect(await r.snapshots.get(snap.id)).toMatchObject({ id: snap.id })
    await expect(fsp.stat(box.dir)).rejects.toThrow()
    expect((await Box.list({ repo: r })).map((b) => b.id).sort()).toEqual(boxes.map((b) => b.id).sort())
  })

  it("a box restored from a snapshot re-snapshots incrementally and keeps lineage", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r })
    for (let i = 0; i < 50; i++) await box.files.write({ path: `/d${i % 5}/sub/f${i}`, content: `file ${i}` })
    await box.exec("ln -s d0 link")
    const first = await box.snapshot()
    const copy = await Box.fromSnapshot(first.id, { repo: r })
    const second = await copy.snapshot()
    expect(second.tree).toBe(first.tree)
    expect(second.parent).toBe(first.id)
    expect(second.stats.addedBytes).toBe(0)
    expect(await copy.listSnapshots()).toHaveLength(1)
  })

  it("restores asked for together share one pass; each settles on its own, and a restore with a signal runs alone", async () => {
    const r = await repo()
    const src = await tempDir()
    await buildTree(src, { a: { file: "one" }, big: { file: seededBytes("big", 600_000) }, d: { dir: { l: { symlink: "../a" } } } })
    const { snapshot } = await r.snapshots.create(src, { name: "deps" })
    const root = await tempDir()
    const taken = path.join(root, "taken")
    await fsp.mkdir(taken)
    await fsp.writeFile(path.join(taken, "x"), "mine")
    const dests = ["p", "q", "r"].map((n) => path.join(root, n))
    // by id, by name and as "latest": one snapshot, one pass; a taken destination or an unknown name fails alone
    const outcomes = await Promise.allSettled([
      ...[snapshot.id, "deps", "latest"].map((idOrName, i) => r.snapshots.restore(idOrName, dests[i]!)),
      r.snapshots.restore(snapshot.id, taken),
      r.snapshots.restore("no-such-snapshot", path.join(root, "none")),
    ])
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "rejected", "rejected"])
    for (const o of outcomes.slice(0, 3)) expect((o as PromiseFulfilledResult<RestoreResult>).value.sharedWith).toBe(2)
    expect(isCairnError((outcomes[3] as PromiseRejectedResult).reason, "ALREADY_EXISTS")).toBe(true)
    expect(isCairnError((outcomes[4] as PromiseRejectedResult).reason, "NOT_FOUND")).toBe(true)
    await expect(fsp.stat(path.join(root, "none"))).rejects.toThrow()
    const want = await describeTree(src)
    for (const d of dests) expect(await describeTree(d)).toEqual(want)
    // other options, a signal, or a restore asked for after the pass began: a pass of its own
    const [other, signalled] = await Promise.all([
      r.snapshots.restore(snapshot.id, path.join(root, "s"), { subPath: "/d" }),
      r.snapshots.restore(snapshot.id, path.join(root, "t"), { signal: new AbortController().signal }),
    ])
    expect(other.sharedWith).toBeUndefined()
    expect(signalled.sharedWith).toBeUndefined()
  })

  it("boxes branched together are each their own, and each re-snapshots without reading a file", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r })
    for (let i = 0; i < 30; i++) await box.files.write({ path: `/d${i % 3}/f${i}`, content: `file ${i}` })
    await box.files.write({ path: "/big.bin", content: seededBytes("big", 500_000) })
    await pastTick() // files written within a tick of the restore are not vouched for (statcache.ts, tooRecent)
    const snap = await box.snapshot()
    const boxes = await Promise.all([1, 2, 3].map(() => Box.fromSnapshot(snap.id, { repo: r })))
    for (const b of boxes) expect(await describeTree(b.dir)).toEqual(await describeTree(box.dir))
    await boxes[0]!.files.write({ path: "/d0/f0", content: "edited" })
    expect((await boxes[1]!.files.read("/d0/f0")).toString()).toBe("file 0")
    for (const b of boxes.slice(1)) {
      const again = await r.snapshots.create(b.dir, { boxId: b.id })
      expect(again.readBytes).toBe(0)
      expect(again.snapshot.tree).toBe(snap.tree)
    }
  })

  it("fromSnapshotMany makes N boxes in one pass, each its own; all or none", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r, labels: { team: "a" } })
    for (let i = 0; i < 12; i++) await box.files.write({ path: `/d${i % 3}/f${i}`, content: `file ${i}` })
    await box.files.write({ path: "/big.bin", content: seededBytes("many", 400_000) })
    await pastTick() // files written within a tick of the restore are not vouched for (statcache.ts, tooRecent)
    const snap = await box.snapshot({ labels: { stage: "deps" } })
    const progress: number[] = []
    const boxes = await Box.fromSnapshotMany(snap.id, 3, { repo: r, onProgress: (p) => progress.push(p.filesDone ?? 0) })
    expect(boxes).toHaveLength(3)
    expect(new Set(boxes.map((b) => b.dir)).size).toBe(3)
    expect(progress.at(-1)).toBe(13)
    for (const b of boxes) {
      expect(b.info).toMatchObject({ fromSnapshot: snap.id, lastSnapshot: snap.id, labels: { stage: "deps" } })
      expect(await describeTree(b.dir)).toEqual(await describeTree(box.dir))
      expect((await Box.get(b.id, { repo: r })).dir).toBe(b.dir)
    }
    await boxes[0]!.files.write({ path: "/big.bin", content: "changed" })
    expect((await boxes[1]!.files.read("/big.bin")).equals(seededBytes("many", 400_000))).toBe(true)
    const again = await r.snapshots.create(boxes[2]!.dir, { boxId: boxes[2]!.id })
    expect(again.readBytes).toBe(0)

    await expect(Box.fromSnapshotMany(snap.id, 0, { repo: r })).rejects.toMatchObject({ code: "BAD_INPUT" })
    // the packs gone (and the restore cache): the restore fails, and no box of the batch is kept
    const before = (await Box.list({ repo: r })).length
    const workspaces = await fsp.readdir(r.workspaceRoot)
    await fsp.rm(path.join(r.location, "data"), { recursive: true })
    await fsp.rm(path.join(r.store.cacheDir, "files"), { recursive: true, force: true })
    await expect(Box.fromSnapshotMany(snap.id, 2, { repo: r, labels: {} })).rejects.toThrow(/pack [0-9a-f]+/)
    expect((await Box.list({ repo: r })).length).toBe(before)
    expect((await fsp.readdir(r.workspaceRoot)).sort()).toEqual(workspaces.sort())
  })

  it("refuses box paths that leave the box", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r })
    const outside = await tempDir()
    await fsp.symlink(outside, path.join(box.dir, "escape"))
    for (const bad of ["../x", "/../../etc/passwd", "/escape/file", "a/../../b", "x\0y"]) {
      const err = await box.files.write({ path: bad, content: "nope" }).catch((e) => e)
      expect(isCairnError(err, "BAD_INPUT"), bad).toBe(true)
    }
    expect(await fsp.readdir(outside)).toEqual([])
    await expect(box.files.read("/escape/../../x")).rejects.toMatchObject({ code: "BAD_INPUT" })
  })

  it("exec reports exit codes and times out", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r })
    expect((await box.exec("exit 3")).exitCode).toBe(3)
    const slow = await box.exec("sleep 5", { timeoutMs: 100 })
    expect(slow.timedOut).toBe(true)
    // a timeout sends SIGTERM first: the command's own cleanup runs
    const tidy = await box.exec("trap 'echo cleaned > cleaned.txt; exit 7' TERM; sleep 30 & wait", { timeoutMs: 300 })
    expect(tidy).toMatchObject({ timedOut: true, exitCode: 7 })
    expect(await fsp.readFile(path.join(box.dir, "cleaned.txt"), "utf8")).toBe("cleaned\n")
    // and SIGKILL to the whole group when it ignores SIGTERM
    const started = Date.now()
    const stubborn = await box.exec("trap '' TERM; sleep 30", { timeoutMs: 200, killAfterMs: 300 })
    expect(stubborn).toMatchObject({ timedOut: true, exitCode: 137 })
    expect(Date.now() - started).toBeLessThan(10_000)
    expect((await box.exec("pwd")).stdout.trim()).toBe(await fsp.realpath(box.dir))
    expect((await box.exec("echo $FOO", { env: { FOO: "bar" } })).stdout).toBe("bar\n")
  })

  it("typed errors with stable codes", async () => {
    const r = await repo()
    expect(await r.snapshots.get("nope").catch((e) => e.code)).toBe("NOT_FOUND")
    expect(await Box.get("box_0000000000000000", { repo: r }).catch((e) => e.code)).toBe("NOT_FOUND")
  })
})

describe("box names", () => {
  it("name one box: a taken name or one read as an id is refused before any work; a removed box frees its name", async () => {
    const r = await repo()
    const dev = await Box.create({ repo: r, name: "dev" })
    await dev.files.write({ path: "/a.txt", content: "a" })
    const snap = await dev.snapshot({ name: "s" })
    const workspaces = async () => (await fsp.readdir(r.workspaceRoot)).sort()
    const before = await workspaces()
    for (const attempt of [() => Box.create({ repo: r, name: "dev" }), () => Box.fromSnapshot(snap.id, { repo: r, name: "dev" })]) {
      const err = await attempt().catch((e: unknown) => e)
      expect(isCairnError(err, "ALREADY_EXISTS")).toBe(true)
      expect((err as Error).message).toBe(`a box named "dev" already exists (${dev.id}); choose another name, or remove that box first (cairn box rm ${dev.id})`)
    }
    const idLike = await Box.create({ repo: r, name: "box_1" }).catch((e: unknown) => e)
    expect(isCairnError(idLike, "BAD_INPUT")).toBe(true)
    expect(await workspaces()).toEqual(before)
    expect((await Box.list({ repo: r })).map((b) => b.id)).toEqual([dev.id])
    expect((await Box.get("dev", { repo: r })).id).toBe(dev.id)
    await dev.delete()
    const again = await Box.fromSnapshot(snap.id, { repo: r, name: "dev" })
    expect((await Box.get("dev", { repo: r })).id).toBe(again.id)
  })

  it("boxes created at once with one name: one gets it, the others are refused and leave nothing", async () => {
    const r = await repo()
    const seed = await Box.create({ repo: r })
    await seed.files.write({ path: "/a.txt", content: "a" })
    const snap = await seed.snapshot()
    for (const make of [() => Box.create({ repo: r, name: "twin" }), () => Box.fromSnapshot(snap.id, { repo: r, name: "twin" })]) {
      const before = (await fsp.readdir(r.workspaceRoot)).length
      const results = await Promise.allSettled([make(), make(), make(), make()])
      expect(results.filter((x) => x.status === "fulfilled")).toHaveLength(1)
      for (const x of results) if (x.status === "rejected") expect(isCairnError(x.reason, "ALREADY_EXISTS")).toBe(true)
      const twins = (await Box.list({ repo: r })).filter((b) => b.name === "twin")
      expect(twins).toHaveLength(1)
      expect((await fsp.readdir(r.workspaceRoot)).length).toBe(before + 1)
      await twins[0]!.delete()
    }
  })
})

describe("a box name's claim in the repository (boxnames/)", () => {
  const claims = async (r: Repository) => (await r.store.listRecords<{ name: string; box: string; at: string }>("boxnames")).records

  it("is taken by a named box, refuses a second process's box meanwhile, and goes with the box", async () => {
    const r = await repo()
    const dev = await Box.create({ repo: r, name: "dev" })
    expect((await claims(r)).map((c) => [c.name, c.box])).toEqual([["dev", dev.id]])
    await Box.create({ repo: r })
    expect(await claims(r)).toHaveLength(1) // an unnamed box claims nothing
    await dev.delete()
    expect(await claims(r)).toEqual([])
  })

  it("a claim whose box is not registered yet (another process mid-create) refuses the name; once stale, it is taken over", async () => {
    const r = await repo()
    const dev = await Box.create({ repo: r, name: "dev" })
    const [claim] = await claims(r)
    // another process claimed "ci" a moment ago and is still restoring its box
    const key = (await r.store.listRecordNames("boxnames"))[0]!
    await dev.delete()
    await r.store.createRecord("boxnames", key, { ...claim!, box: "box_00000000000000aa", at: new Date().toISOString() })
    const err = await Box.create({ repo: r, name: "dev" }).catch((e: unknown) => e)
    expect(isCairnError(err, "ALREADY_EXISTS")).toBe(true)
    expect((err as Error).message).toBe('another process is creating a box named "dev" (box_00000000000000aa); choose another name, or wait and try again')
    expect(await Box.list({ repo: r })).toEqual([])
    // ... and crashed: ten minutes on, its claim is stale
    await r.store.deleteRecord("boxnames", key)
    await r.store.createRecord("boxnames", key, { ...claim!, box: "box_00000000000000aa", at: new Date(Date.now() - 11 * 60_000).toISOString() })
    const again = await Box.create({ repo: r, name: "dev" })
    expect((await claims(r)).map((c) => c.box)).toEqual([again.id])
  })

  it("a claim whose creating process exited on this host is taken over at once; one from another pid space waits", async () => {
    const r = await repo()
    const dev = await Box.create({ repo: r, name: "dev" })
    const [claim] = await claims(r)
    expect(claim).toMatchObject({ host: os.hostname(), pid: process.pid })
    const key = (await r.store.listRecordNames("boxnames"))[0]!
    await dev.delete()
    // a process of this host claimed "dev" a moment ago and crashed before it registered its box
    const gone = spawnSync(process.execPath, ["-e", ""]).pid
    await r.store.createRecord("boxnames", key, { ...claim!, box: "box_00000000000000bb", pid: gone, at: new Date().toISOString() })
    const again = await Box.create({ repo: r, name: "dev" })
    expect((await claims(r)).map((c) => c.box)).toEqual([again.id])
    await again.delete()
    // the same pid in another pid space (another host or container) proves nothing: the claim holds for now
    await r.store.createRecord("boxnames", key, { ...claim!, box: "box_00000000000000cc", pid: gone, pidSpace: "other-boot/pid:[1]", host: "elsewhere", at: new Date().toISOString() })
    const err = await Box.create({ repo: r, name: "dev" }).catch((e: unknown) => e)
    expect(isCairnError(err, "ALREADY_EXISTS")).toBe(true)
    expect((await claims(r)).map((c) => c.box)).toEqual(["box_00000000000000cc"])
  })

  it("a named box made before claims existed (no claim) keeps its name, and is removed cleanly", async () => {
    const r = await repo()
    const old = await Box.create({ repo: r, name: "dev" })
    for (const key of await r.store.listRecordNames("boxnames")) await r.store.deleteRecord("boxnames", key)
    const err = await Box.create({ repo: r, name: "dev" }).catch((e: unknown) => e)
    expect(isCairnError(err, "ALREADY_EXISTS")).toBe(true)
    await old.delete()
    const next = await Box.create({ repo: r, name: "dev" })
    expect((await claims(r)).map((c) => c.box)).toEqual([next.id])
  })

  it("a box that fails to be made gives its claim back", async () => {
    const r = await repo()
    const file = path.join(await tempDir(), "file")
    await fsp.writeFile(file, "x")
    const err = await Box.create({ repo: r, name: "dev", dir: path.join(file, "box") }).catch((e: unknown) => e)
    expect(isCairnError(err, "IO")).toBe(true)
    expect(await claims(r)).toEqual([])
    await Box.create({ repo: r, name: "dev" })
  })
})

describe("a box whose directory was removed by hand", () => {
  it("exec and snapshot say so (NOT_FOUND, how to clean up), not that the shell is missing; delete still works", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r, name: "gone" })
    await fsp.rm(box.dir, { recursive: true })
    const expected = `box ${box.id}'s directory ${box.dir} no longer exists; remove the box (cairn box rm ${box.id}) or make a new one from its last snapshot`
    for (const attempt of [() => box.exec("true"), () => box.snapshot()]) {
      const err = await attempt().catch((e: unknown) => e)
      expect(isCairnError(err, "NOT_FOUND")).toBe(true)
      expect((err as Error).message).toBe(expected)
    }
    expect((await r.snapshots.list()).length).toBe(0)
    await box.delete()
    expect(await Box.list({ repo: r })).toEqual([])
  })
})

describe("values a JavaScript caller can pass that a record could not hold", () => {
  it("are refused before any work, and nothing unreadable is ever written", async () => {
    const r = await repo()
    const box = await Box.create({ repo: r, name: "dev" })
    await fsp.writeFile(path.join(box.dir, "a.txt"), "a")
    const bad = { a: 1 } as unknown as Record<string, string>
    const refused = async (p: Promise<unknown>, message: RegExp) => {
      const err = await p.then(() => undefined, (e: unknown) => e)
      expect(isCairnError(err, "BAD_INPUT"), String(err)).toBe(true)
      expect((err as Error).message).toMatch(message)
    }
    await refused(box.snapshot({ labels: bad }), /cannot record this snapshot: its labels are not a map of strings/)
    await refused(box.snapshot({ name: 7 as unknown as string }), /its name is not a string/)
    await refused(box.snapshot({ expiresAt: "someday" }), /expiresAt "someday" is not a date/)
    await refused(box.snapshot({ exclude: [1] as unknown as string[] }), /exclude must be a list/)
    await refused(Box.create({ repo: r, labels: bad }), /cannot record this box/)
    const good = await box.snapshot({ name: "ok" })
    await refused(r.snapshots.update(good.id, { labels: bad }), /its labels are not a map of strings/)
    await refused(r.snapshots.restore(good.id, null as unknown as string), /a restore needs a destination directory/)
    // every snapshot that was written reads back: only the good one exists
    expect((await r.snapshots.list()).map((s) => s.name)).toEqual(["ok"])
    expect((await r.verify()).ok).toBe(true)
    await r.close()
  })
})
