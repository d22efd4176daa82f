// Retention: decide which snapshots a keep policy removes (restic's rules).
//
// Snapshots are grouped (by box, by name, or not at all) and, within a group,
// ordered newest first. A snapshot is kept if any rule keeps it:
//   keepLast N     the N newest;
//   keepHourly N   the newest snapshot of each of the N most recent hours that
//                  have one (likewise Daily, Weekly, Monthly; UTC buckets);
//   keepWithin D   every snapshot newer than now - D;
//   pinned         always.
// A snapshot whose expiresAt has passed is removed even if a rule would keep
// it (unless pinned), and takes no rule's slot: keepLast 3 keeps the 3 newest
// unexpired ones. A policy with no rules (every count absent or 0, no
// keepWithin) removes only expired snapshots: "--keep-last 0" is not "remove
// everything".
// Removing deletes the record only; `gc` reclaims the data.

import { BadInputError } from "../store/errors.js"
import type { Store } from "../store/store.js"
import type { SnapshotRecord } from "./types.js"
import { creationOrder, listSnapshots } from "./records.js"

export interface KeepPolicy {
  keepLast?: number
  keepHourly?: number
  keepDaily?: number
  keepWeekly?: number
  keepMonthly?: number
  /** e.g. "2d", "36h", "1w3d", "90m" */
  keepWithin?: string
  /** default "box" */
  groupBy?: "box" | "name" | "none"
}

export interface ForgetPlan {
  keep: Array<{ id: string; reasons: string[] }>
  remove: Array<{ id: string; reason: string }>
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000, y: 365 * 86_400_000 }

/** Parses "1w3d12h" into milliseconds. */
export function parseDuration(text: string): number {
  const re = /(\d+)([smhdwy])/gy
  let total = 0
  let at = 0
  let m: RegExpExecArray | null
  while ((m = re.exec(text))) {
    total += Number(m[1]) * UNITS[m[2]!]!
    at = re.lastIndex
  }
  if (text === "" || at !== text.length) {
    throw new BadInputError(`invalid duration ${JSON.stringify(text)}: use a number and a unit (s, m, h, d, w, y), e.g. 36h or 1w3d`)
  }
  return total
}

function checkPolicy(p: KeepPolicy): void {
  for (const key of ["keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly"] as const) {
    const v = p[key]
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new BadInputError(`${key} must be a whole number, not ${v}`)
  }
  if (p.groupBy !== undefined && !["box", "name", "none"].includes(p.groupBy)) {
    throw new BadInputError(`groupBy must be box, name or none, not ${JSON.stringify(p.groupBy)}`)
  }
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()))
  const day = t.getUTCDay() || 7
  t.setUTCDate(t.getUTCDate() + 4 - day)
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1)
  return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7)}`
}

const BUCKETS = {
  keepHourly: (d: Date) => d.toISOString().slice(0, 13),
  keepDaily: (d: Date) => d.toISOString().slice(0, 10),
  keepWeekly: isoWeek,
  keepMonthly: (d: Date) => d.toISOString().slice(0, 7),
} as const

export function planForget(snapshots: readonly SnapshotRecord[], policy: KeepPolicy, now = new Date()): ForgetPlan {
  checkPolicy(policy)
  const within = policy.keepWithin !== undefined ? parseDuration(policy.keepWithin) : undefined
  const groupBy = policy.groupBy ?? "box"
  const groups = new Map<string, SnapshotRecord[]>()
  const expired = (s: SnapshotRecord) => !s.pinned && s.expiresAt !== undefined && Date.parse(s.expiresAt) <= now.getTime()
  const plan: ForgetPlan = { keep: [], remove: [] }
  for (const s of snapshots) {
    if (expired(s)) {
      plan.remove.push({ id: s.id, reason: `expired at ${s.expiresAt}` })
      continue
    }
    if (Number.isNaN(Date.parse(s.createdAt))) {
      plan.keep.push({ id: s.id, reasons: ["unreadable createdAt"] }) // what cannot be placed is not removed
      continue
    }
    const key = groupBy === "box" ? (s.boxId ?? `dir:${s.source}`) : groupBy === "name" ? (s.name ?? "") : ""
    let g = groups.get(key)
    if (!g) groups.set(key, (g = []))
    g.push(s)
  }
  for (const group of groups.values()) {
    group.sort((a, b) => creationOrder(b, a)) // newest first
    const reasons = new Map<string, string[]>(group.map((s) => [s.id, []]))
    group.slice(0, policy.keepLast ?? 0).forEach((s, i) => reasons.get(s.id)!.push(`last ${i + 1}`))
    for (const rule of Object.keys(BUCKETS) as Array<keyof typeof BUCKETS>) {
      const n = policy[rule] ?? 0
      const seen = new Set<string>()
      for (const s of group) {
        if (seen.size >= n) break
        const bucket = BUCKETS[rule](new Date(s.createdAt))
        if (seen.has(bucket)) continue
        seen.add(bucket)
        reasons.get(s.id)!.push(`${rule.slice(4).toLowerCase()} ${bucket}`)
      }
    }
    if (within !== undefined) {
      for (const s of group) if (now.getTime() - Date.parse(s.createdAt) <= within) reasons.get(s.id)!.push(`within ${policy.keepWithin}`)
    }
    const anyRule = within !== undefined || [policy.keepLast, policy.keepHourly, policy.keepDaily, policy.keepWeekly, policy.keepMonthly].some((v) => (v ?? 0) > 0)
    for (const s of group) {
      const why = reasons.get(s.id)!
      if (s.pinned) plan.keep.push({ id: s.id, reasons: ["pinned", ...why] })
      else if (why.length > 0 || !anyRule) plan.keep.push({ id: s.id, reasons: why.length ? why : ["no rule removes it"] })
      else plan.remove.push({ id: s.id, reason: "no keep rule matched" })
    }
  }
  return plan
}

export async function forgetSnapshots(
  store: Store,
  policy: KeepPolicy,
  opts: { dryRun?: boolean; filter?: (s: SnapshotRecord) => boolean; now?: Date } = {},
): Promise<ForgetPlan> {
  const { records } = await listSnapshots(store)
  const plan = planForget(records.filter(opts.filter ?? (() => true)), policy, opts.now)
  if (!opts.dryRun) for (const r of plan.remove) await store.deleteRecord("snapshots", r.id)
  return plan
}
