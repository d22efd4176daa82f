// A directory's snapshot follows its previous one (engine/records.ts's
// newestSnapshot): found without reading every record of the repository,
// and still exact when another host made one, one was forgotten, or the
// host's file of origins is damaged.
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it, vi } from "vitest"
import { Repository } from "../../engine/index.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { tempDir } from "../helpers.js"

describe("a snapshot's parent", () => {
  it("is the newest snapshot of its directory, found reading only the records this host has not seen", async () => {
    const r = await Repository.open({ path: path.join(await tempDir(), "repo") })
    const a = await tempDir()
    const b = await tempDir()
    await fsp.writeFile(path.join(a, "f"), "a")
    await fsp.writeFile(path.join(b, "f"), "b")
    const snap = async (dir: string) => (await r.snapshots.create(dir)).snapshot
    const a1 = await snap(a)
    expect(a1.parent).toBeUndefined()
    const others: SnapshotRecord[] = []
    for (let i = 0; i < 8; i++) others.push(await snap(b))
    expect(others.map((s) => s.parent)).toEqual([undefined, ...others.slice(0, -1).map((s) => s.id)])
    const reads = vi.spyOn(r.store, "getRecord")
    const a2 = await snap(a)
    expect(a2.parent).toBe(a1.id)
    // the one record made since this host last looked (b's last), and the parent itself: not all ten
    expect(reads.mock.calls.map(([kind, name]) => `${kind}/${name}`).sort()).toEqual([`snapshots/${a1.id}`, `snapshots/${others[7]!.id}`].sort())

    // another host's newer snapshot of the same directory is read and followed
    const elsewhere = { ...a2, id: "snap_00000000000000aa", createdAt: new Date(Date.parse(a2.createdAt) + 1000).toISOString(), host: "other" }
    await r.store.createRecord("snapshots", elsewhere.id, elsewhere)
    reads.mockClear()
    const a3 = await snap(a)
    expect(a3.parent).toBe(elsewhere.id)
    expect(reads.mock.calls.length).toBe(3) // a2 and elsewhere, unseen; the parent

    // a forgotten one is not followed; a damaged file of origins costs reading them all, nothing else
    await r.store.deleteRecord("snapshots", a3.id)
    await fsp.writeFile(path.join(r.store.cacheDir, "snapshot-origins.json"), "{not json")
    reads.mockClear()
    const a4 = await snap(a)
    expect(a4.parent).toBe(elsewhere.id)
    expect(reads.mock.calls.length).toBe(12) // the 11 records, then the parent
    expect((await snap(b)).parent).toBe(others[7]!.id)
    // the same answers as listing every snapshot gives
    const listed = await r.snapshots.list()
    expect(listed.filter((s) => s.source === path.resolve(a) && s.id !== a4.id).at(-1)?.id).toBe(a4.parent)
    reads.mockRestore()
    await r.close()
  })

  it("is looked for while the snapshot is taken: a search that fails fails the snapshot, which lists nothing; one that fails after it leaves no rejection unhandled", async () => {
    const r = await Repository.open({ path: path.join(await tempDir(), "repo") })
    const dir = await tempDir()
    await fsp.writeFile(path.join(dir, "f"), "content")
    const first = (await r.snapshots.create(dir)).snapshot
    const listing = vi.spyOn(r.store, "listRecordNames").mockRejectedValueOnce(new Error("the listing failed"))
    await expect(r.snapshots.create(dir)).rejects.toThrow("the listing failed")
    expect((await r.snapshots.list()).map((s) => s.id)).toEqual([first.id])
    // the snapshot fails first (not a directory), the search after it: the snapshot's error, and nothing unhandled (vitest fails a test file on one)
    listing.mockImplementationOnce(() => new Promise((_, reject) => setTimeout(() => reject(new Error("late")), 50)))
    await expect(r.snapshots.create(path.join(dir, "f"))).rejects.toThrow("it is not a directory")
    await new Promise((resolve) => setTimeout(resolve, 100))
    // and a search that finds the parent, as before
    expect((await r.snapshots.create(dir)).snapshot.parent).toBe(first.id)
    listing.mockRestore()
    await r.close()
  })
})
