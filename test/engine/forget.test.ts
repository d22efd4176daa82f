import { describe, expect, it } from "vitest"
import { parseDuration, planForget } from "../../engine/forget.js"
import type { SnapshotRecord } from "../../engine/types.js"

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
    for (const bad of ["", "3", "h", "2 days", "1d-", "-1d"]) expect(() => parseDuration(bad)).toThrow(/invalid duration/)
  })
})
