// Commands that inspect and maintain a repository: diff, du, stats, verify,
// gc, forget. Each calls one library method and prints its result.

import { promises as fsp } from "node:fs"
import { isCairnError, NotFoundError, type Change, type KeepPolicy, type SnapshotRecord, type VerifyDamage } from "../engine/index.js"
import { fraction, int, UsageError, type FlagSpec } from "./args.js"
import type { Command, Context } from "./commands.js"
import { bytes, kv, plural, ratio, seconds, shownPath, table } from "./format.js"

const isDir = async (p: string) => (await fsp.stat(p).catch(() => undefined))?.isDirectory() === true
const list = (v: string | string[] | undefined) => (v === undefined ? "" : Array.isArray(v) ? v.join(",") : v)
const sign = { added: "+", removed: "-", modified: "M" } as const

function diffLine(c: Change): string[] {
  const size =
    c.change === "modified" && c.oldSize !== undefined && c.newSize !== undefined && c.oldSize !== c.newSize
      ? `${bytes(c.oldSize)} -> ${bytes(c.newSize)}`
      : c.newSize !== undefined
        ? bytes(c.newSize)
        : c.oldSize !== undefined
          ? bytes(c.oldSize)
          : ""
  return [sign[c.change], c.type, shownPath(c.path), list(c.what), size]
}

/**
 * Damage for people: problems that differ only in their blob (every blob of
 * a missing pack) become one line that counts the blobs and joins what they
 * hit; --json keeps one entry per blob.
 */
function damageLines(damage: readonly VerifyDamage[]): string[] {
  const groups = new Map<string, VerifyDamage[]>()
  for (const d of damage) {
    const key = JSON.stringify([d.reason, d.pack, d.record, d.blob !== undefined && d.reason.includes(d.blob) ? d.blob : undefined])
    const group = groups.get(key)
    if (group) group.push(d)
    else groups.set(key, [d])
  }
  return [...groups.values()].map((group) => {
    const d = group[0]!
    const union = (pick: (x: VerifyDamage) => string[]) => [...new Set(group.flatMap(pick))]
    const blobs = union((x) => (x.blob ? [x.blob] : []))
    // the ids the reason does not already name
    const ids: Array<[string, string | undefined]> = [["pack", d.pack], ["record", d.record]]
    const what = [
      ...(blobs.length > 1 ? [`${blobs.length} blobs`] : blobs.filter((b) => !d.reason.includes(b)).map((b) => `blob ${b}`)),
      ...ids.filter(([, id]) => id !== undefined && !d.reason.includes(id)).map(([kind, id]) => `${kind} ${id}`),
    ].join(", ")
    const snapshots = union((x) => x.snapshots)
    const paths = union((x) => x.paths)
    const hit = [
      snapshots.length ? `snapshots ${snapshots.join(", ")}` : "",
      paths.length ? `paths ${paths.slice(0, 5).map(shownPath).join(", ")}${paths.length > 5 ? ` and ${paths.length - 5} more` : ""}` : "",
    ]
      .filter(Boolean)
      .join("; ")
    return `  ${d.reason}${what ? ` (${what})` : ""}${hit ? `; affects ${hit}` : ""}`
  })
}

const keepFlag = (unit: string): FlagSpec => ({ kind: "string", help: `keep the newest snapshot of each of the last N ${unit}` })

const FORGET_FLAGS = {
  "keep-last": { kind: "string", help: "keep the N newest snapshots" },
  "keep-hourly": keepFlag("hours"),
  "keep-daily": keepFlag("days"),
  "keep-weekly": keepFlag("weeks"),
  "keep-monthly": keepFlag("months"),
  "keep-within": { kind: "string", help: "keep every snapshot younger than DUR (e.g. 36h, 7d, 2w, 1y)" },
  "group-by": { kind: "string", choices: ["box", "name", "none"], help: "apply the policy per box, per name, or to all (default: the library's)" },
  "dry-run": { kind: "bool", help: "only say what would be removed" },
} satisfies Record<string, FlagSpec>

function forgetPolicy(ctx: Context): KeepPolicy {
  const n = (flag: string) => int(ctx.flags[flag], flag, "forget")
  const policy: KeepPolicy = {
    keepLast: n("keep-last"),
    keepHourly: n("keep-hourly"),
    keepDaily: n("keep-daily"),
    keepWeekly: n("keep-weekly"),
    keepMonthly: n("keep-monthly"),
    keepWithin: ctx.flags["keep-within"] as string | undefined,
    groupBy: ctx.flags["group-by"] as KeepPolicy["groupBy"],
  }
  const defined = Object.fromEntries(Object.entries(policy).filter(([, v]) => v !== undefined)) as KeepPolicy
  if (!Object.keys(defined).some((k) => k.startsWith("keep"))) {
    throw new UsageError('"forget" needs at least one --keep-* option; nothing is removed without a policy', "forget")
  }
  return defined
}

export const MAINTENANCE_COMMANDS: Command[] = [
  {
    spec: {
      name: "diff",
      summary: "what changed between two snapshots, or a snapshot and a directory",
      args: ["A", "B|DIR"],
      flags: {},
      details: "B is read as a directory when one exists at that path, else as a snapshot id or name.",
    },
    async run(ctx) {
      const [a, b] = [ctx.args[0]!, ctx.args[1]!]
      const repo = await ctx.repo()
      const result = await repo.snapshots.diff(a, b, { live: await isDir(b) }).catch((err: unknown) => {
        if (!(isCairnError(err, "NOT_FOUND") && err.data.snapshot === b && a !== b)) throw err
        throw new NotFoundError(`${b} is neither a directory nor a snapshot's id or name; "cairn ls" lists the snapshots`, { snapshot: b })
      })
      if (ctx.json) return ctx.out("", result)
      if (result.changes.length === 0) return ctx.out("no differences")
      const count = (k: Change["change"]) => result.changes.filter((c) => c.change === k).length
      ctx.out(
        `${table(["", "type", "path", "what", "size"], result.changes.map(diffLine))}\n\n` +
          `${count("added")} added (${bytes(result.addedBytes)}), ${count("removed")} removed (${bytes(result.removedBytes)}), ` +
          `${count("modified")} modified (${bytes(result.modifiedBytes)})`,
      )
    },
  },
  {
    spec: { name: "du", summary: "per-directory logical, stored and unique bytes of a snapshot", args: ["SNAP"], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const rows = await repo.snapshots.du(ctx.args[0]!)
      ctx.out(
        table(
          ["logical", "stored", "unique", "path"],
          rows.map((r) => [bytes(r.logicalBytes), bytes(r.storedBytes), bytes(r.uniqueBytes), shownPath(r.path)]),
        ),
        rows,
      )
    },
  },
  {
    spec: { name: "stats", summary: "repository totals and the deduplication ratio", args: [], flags: {} },
    async run(ctx) {
      const repo = await ctx.repo()
      const s = await repo.stats()
      ctx.out(
        kv([
          ["snapshots", String(s.snapshots)],
          ["packs", String(s.packs)],
          ["logical (all snapshots)", bytes(s.logicalBytes)],
          ["referenced (stored, live)", bytes(s.referencedBytes)],
          ["physical (packs, index, records)", bytes(s.physicalBytes)],
          ["dedup ratio", ratio(s.logicalBytes, s.dedupRatio)],
        ]),
        s,
      )
    },
  },
  {
    spec: {
      name: "verify",
      summary: "check the repository's structure; with --read-data, every byte",
      args: [],
      flags: { "read-data": { kind: "bool", help: "read and hash-check every blob (slow)" } },
      details: "Exits 3 when anything is damaged, and names the snapshots and paths it affects.",
    },
    async run(ctx) {
      const repo = await ctx.repo()
      const r = await repo.verify({ readData: Boolean(ctx.flags["read-data"]), onProgress: ctx.progress.update, signal: ctx.signal })
      ctx.progress.done()
      if (ctx.json) ctx.out("", r)
      else {
        for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
        const checked = `${r.snapshots} snapshots, ${r.trees} trees, ${r.blobs} blobs, ${r.packs} packs${r.bytesRead ? `, ${bytes(r.bytesRead)} read` : ""}`
        ctx.out(r.ok ? `no damage found (${checked})` : [`DAMAGE: ${plural(r.damage.length, "problem")} (${checked}):`, ...damageLines(r.damage)].join("\n"))
      }
      return r.ok ? 0 : 3
    },
  },
  {
    spec: {
      name: "gc",
      summary: "delete data no snapshot references; repack sparse packs",
      args: [],
      flags: {
        "dry-run": { kind: "bool", help: "only say what would be freed" },
        "repack-threshold": { kind: "string", help: "repack packs whose dead fraction exceeds F (0..1)" },
      },
    },
    async run(ctx) {
      const repackThreshold = fraction(ctx.flags["repack-threshold"], "repack-threshold", "gc")
      const repo = await ctx.repo()
      const r = await repo.gc({ dryRun: Boolean(ctx.flags["dry-run"]), repackThreshold, onProgress: ctx.progress.update, signal: ctx.signal })
      ctx.progress.done()
      ctx.out(
        r.dryRun
          ? `would delete ${plural(r.packsDeleted, "pack")} and repack ${r.packsRepacked}, freeing ${bytes(r.reclaimableBytes)} (dry run, nothing changed)`
          : `deleted ${plural(r.packsDeleted, "pack")}, repacked ${r.packsRepacked}, freed ${bytes(r.bytesFreed)} in ${seconds(r.durationMs)}` +
              (r.tempFilesRemoved ? `; removed ${plural(r.tempFilesRemoved, "temp file")} of crashed writers` : ""),
        r,
      )
    },
  },
  {
    spec: {
      name: "forget",
      summary: "remove the snapshots a retention policy does not keep (gc reclaims their data)",
      args: [],
      flags: FORGET_FLAGS,
    },
    async run(ctx) {
      const policy = forgetPolicy(ctx)
      const dryRun = Boolean(ctx.flags["dry-run"])
      const repo = await ctx.repo()
      const before = new Map((await repo.snapshots.list()).map((s) => [s.id, s] as const))
      const r = await repo.forget(policy, { dryRun })
      if (ctx.json) return ctx.out("", r)
      const row = (id: string, action: string, why: string) => {
        const s: SnapshotRecord | undefined = before.get(id)
        return [id, s?.name ?? "", s?.boxId ?? "", s ? s.createdAt.replace("T", " ").replace(/\.\d+Z$/, "Z") : "", action, why]
      }
      const rows = [...r.keep.map((k) => row(k.id, "keep", k.reasons.join(", "))), ...r.remove.map((x) => row(x.id, dryRun ? "would remove" : "removed", x.reason))]
      const tail = dryRun
        ? `${plural(r.remove.length, "snapshot")} would be removed (dry run, nothing changed)`
        : `${plural(r.remove.length, "snapshot")} removed${r.remove.length ? '; run "cairn gc" to reclaim space' : ""}`
      ctx.out(`${rows.length ? table(["id", "name", "box", "created", "action", "why"], rows) + "\n\n" : ""}${tail}`)
    },
  },
]
