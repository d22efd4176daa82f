import { describe, expect, it } from "vitest"
import { forgetSnapshots, parseDuration, planForget } from "../../engine/forget.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { tempDir } from "../helpers.js"

const NOW = new Date("2026-11-28T12:00:00Z")

function snap(id: string, createdAt: string, extra: Partial<SnapshotRecord> = {}): SnapshotRecord {
  return {
    id, createdAt, tree: "0".repeat(64) as never, host: "h", source: "/w", exclude: [], labels: {}, sizeBytes: 0, status: "ready",
    stats: { files: 0, dirs: 0, symlinks: 0, logicalBytes: 0, storedBytes: 0, addedBytes: 0 }, boxId: "box_1", ...extra,
  }
}

// one snapshot every 6 hours for 10 days, newest first by id number
const history = Array.from({ length: 40 }, (_, i) => snap(`s${String(i).padStart(2, "0")}`, new Date(NOW.getTime() - i * 6 * 3600_000).toISOString()))
const kept = (plan: ReturnType<typeof planForget>) => plan.keep.map((k) => k.id).sort()

describe("planForget", () => {
  it("keepLast keeps the N newest per box", () => {
    expect(kept(planForget(history, { keepLast: 3 }, NOW))).toEqual(["s00", "s01", "s02"])
  })
  it("keepDaily keeps the newest of each of the last N days", () => {
    // s00 is 12:00 on the 28th, s02 00:00 on the 28th; s03 18:00 on the 27th...
    expect(kept(planForget(history, { keepDaily: 3 }, NOW))).toEqual(["s00", "s03", "s07"])
  })
  it("keepHourly and keepWeekly bucket by hour and ISO week", () => {
    expect(kept(planForget(history, { keepHourly: 2 }, NOW))).toEqual(["s00", "s01"])
    expect(planForget(history, { keepWeekly: 5 }, NOW).keep).toHaveLength(2) // 10 days span two ISO weeks
  })
  it("keepWithin keeps everything newer than the duration", () => {
    expect(kept(planForget(history, { keepWithin: "1d" }, NOW))).toEqual(["s00", "s01", "s02", "s03", "s04"])
  })
  it("rules combine: kept if any rule keeps it", () => {
    expect(kept(planForget(history, { keepLast: 1, keepDaily: 2 }, NOW))).toEqual(["s00", "s03"])
  })
  it("pinned is always kept; expired is removed even without rules", () => {
    const list = [snap("a", "2026-11-01T00:00:00Z", { pinned: true }), snap("b", "2026-11-02T00:00:00Z", { expiresAt: "2026-11-20T00:00:00Z" }), snap("c", "2026-11-03T00:00:00Z")]
    const plan = planForget(list, {}, NOW)
    expect(kept(plan)).toEqual(["a", "c"])
    expect(plan.remove).toEqual([{ id: "b", reason: "expired at 2026-11-20T00:00:00Z" }])
    expect(kept(planForget(list, { keepLast: 1 }, NOW))).toEqual(["a", "c"])
  })
  it("groups by box, by name, or not at all", () => {
    const list = [snap("a1", "2026-11-27T00:00:00Z", { boxId: "A", name: "x" }), snap("a2", "2026-11-28T00:00:00Z", { boxId: "A", name: "y" }), snap("b1", "2026-11-26T00:00:00Z", { boxId: "B", name: "x" })]
    expect(kept(planForget(list, { keepLast: 1 }, NOW))).toEqual(["a2", "b1"])
    expect(kept(planForget(list, { keepLast: 1, groupBy: "name" }, NOW))).toEqual(["a1", "a2"])
    expect(kept(planForget(list, { keepLast: 1, groupBy: "none" }, NOW))).toEqual(["a2"])
  })
  it("a count of 0 is no rule: it removes nothing (only expired snapshots go)", () => {
    expect(planForget(history, { keepLast: 0 }, NOW).remove).toEqual([])
    expect(planForget(history, { keepLast: 0, keepDaily: 0 }, NOW).keep).toHaveLength(40)
  })
  it("an expired snapshot takes no rule's slot, and a pinned one outlives its expiry", () => {
    const list = [
      snap("new", "2026-11-28T10:00:00Z", { expiresAt: "2026-11-28T11:00:00Z" }),
      snap("mid", "2026-11-27T10:00:00Z"),
      snap("old", "2026-11-26T10:00:00Z", { pinned: true, expiresAt: "2026-11-27T00:00:00Z" }),
      snap("older", "2026-11-25T10:00:00Z"),
    ]
    const plan = planForget(list, { keepLast: 2 }, NOW)
    expect(kept(plan)).toEqual(["mid", "old"])
    expect(plan.keep.find((k) => k.id === "old")!.reasons).toEqual(["pinned", "last 2"])
    expect(plan.remove.map((r) => r.id).sort()).toEqual(["new", "older"])
  })
  it("keepMonthly buckets by UTC month; an unreadable createdAt is kept, not removed", () => {
    const list = [snap("nov", "2026-11-02T00:00:00Z"), snap("oct2", "2026-10-30T00:00:00Z"), snap("oct1", "2026-10-01T00:00:00Z"), snap("bad", "yesterday")]
    const plan = planForget(list, { keepMonthly: 2 }, NOW)
    expect(kept(plan)).toEqual(["bad", "nov", "oct2"])
    expect(plan.remove).toEqual([{ id: "oct1", reason: "no keep rule matched" }])
  })
  it("refuses bad policies", () => {
    expect(() => planForget(history, { keepLast: -1 }, NOW)).toThrow(/keepLast/)
    expect(() => planForget(history, { groupBy: "host" as never }, NOW)).toThrow(/groupBy/)
  })
})

describe("parseDuration", () => {
  it("parses units and combinations", () => {
    expect(parseDuration("36h")).toBe(36 * 3600_000)
    expect(parseDuration("1w3d")).toBe(10 * 86_400_000)
    expect(parseDuration("90m")).toBe(90 * 60_000)
  })
  it("rejects garbage with a clear error", () => {
    for (const bad of ["", "3", "h", "2 days", "1d-", "-1d", "1.5d", "2x"]) expect(() => parseDuration(bad)).toThrow(/invalid duration/)
  })
})

describe("forgetSnapshots", () => {
  it("deletes the removed records (never data), honours dryRun and filter", async () => {
    const backend = new MemoryObjectStore()
    const store = await Store.init({ backend, cacheDir: await tempDir() })
    for (const s of history.slice(0, 6)) await store.putRecord("snapshots", s.id, s)
    await store.putRecord("snapshots", "other", snap("other", "2020-01-01T00:00:00Z", { boxId: "box_2" }))
    const dry = await forgetSnapshots(store, { keepLast: 2 }, { dryRun: true, now: NOW })
    expect(dry.remove.map((r) => r.id).sort()).toEqual(["s02", "s03", "s04", "s05"])
    expect((await store.listRecordNames("snapshots")).length).toBe(7)
    const plan = await forgetSnapshots(store, { keepLast: 1 }, { now: NOW, filter: (s) => s.boxId === "box_1" })
    expect(plan.keep.map((k) => k.id)).toEqual(["s00"])
    expect((await store.listRecordNames("snapshots")).sort()).toEqual(["other", "s00"])
    await store.close()
  })
})
