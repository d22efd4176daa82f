// Shape checks for the records the engine reads back from a repository.
//
// A record is JSON written by cairn, but a repository is a directory or a
// bucket that anything can write to: a record that parses yet is not a
// snapshot (null, a number, a tree id that is a path, labels that are not
// strings) must surface as damage (IntegrityError, via Store.getRecord), not
// as a TypeError deep in a restore.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { mapLimit } from "../store/concurrency.js"
import { BadInputError, IntegrityError, NotFoundError } from "../store/errors.js"
import { isBlobId } from "../store/ids.js"
import type { Store } from "../store/store.js"
import type { SnapshotRecord } from "./types.js"

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
const optional = (v: unknown, type: "string" | "boolean") => v === undefined || typeof v === type

const isUint = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0

function isRootMeta(v: unknown): boolean {
  return isObject(v) && isUint(v.mode) && (v.mode as number) <= 0o7777 && typeof v.mtime === "string" && /^-?\d{1,30}$/.test(v.mtime) && isUint(v.uid) && isUint(v.gid)
}

/** What is wrong with a stored snapshot record, or undefined when it is well formed. */
export function snapshotRecordProblem(v: unknown, name: string): string | undefined {
  if (!isObject(v)) return "it is not a JSON object"
  if (v.id !== name) return `its id ${JSON.stringify(v.id)} is not its name ${name}`
  if (!isBlobId(v.tree)) return "it names no valid root tree"
  if (typeof v.createdAt !== "string" || Number.isNaN(Date.parse(v.createdAt))) return "its createdAt is not a date"
  for (const key of ["name", "boxId", "parent", "host", "source", "expiresAt"] as const) {
    if (!optional(v[key], "string")) return `its ${key} is not a string`
  }
  if (!optional(v.pinned, "boolean")) return "its pinned flag is not a boolean"
  if (v.labels !== undefined && (!isObject(v.labels) || Object.values(v.labels).some((x) => typeof x !== "string"))) {
    return "its labels are not a map of strings"
  }
  if (v.exclude !== undefined && (!Array.isArray(v.exclude) || v.exclude.some((x) => typeof x !== "string"))) {
    return "its exclude patterns are not a list of strings"
  }
  if (v.stats !== undefined && !isObject(v.stats)) return "its stats are not an object"
  if (v.sizeBytes !== undefined && typeof v.sizeBytes !== "number") return "its size is not a number"
  if (v.root !== undefined && !isRootMeta(v.root)) return "its root metadata is not { mode, mtime, uid, gid }"
  return undefined
}

/**
 * Refuses what a caller asks a snapshot (or box) record to hold (name,
 * labels, box id, expiry) when a snapshot record with it would not read back
 * as well formed: a JavaScript caller's numeric label was written, and the
 * snapshot then read back as damage. Undefined and null mean "not given".
 */
export function checkRecordFields(fields: { name?: unknown; labels?: unknown; boxId?: unknown; expiresAt?: unknown }, what = "snapshot"): void {
  const { expiresAt } = fields
  if (expiresAt != null && (typeof expiresAt !== "string" || Number.isNaN(Date.parse(expiresAt)))) {
    throw new BadInputError(`expiresAt ${JSON.stringify(expiresAt)} is not a date; give an ISO-8601 time`)
  }
  const given = Object.fromEntries(Object.entries(fields).filter(([, v]) => v != null))
  const problem = snapshotRecordProblem({ id: "snap_probe", tree: "0".repeat(64), createdAt: new Date(0).toISOString(), ...given }, "snap_probe")
  if (problem) throw new BadInputError(`cannot record this ${what}: ${problem}; names, labels (keys and values) and expiry must be strings`)
}

/** Fills the optional fields older or hand-written records may lack, so callers can rely on the type. */
export function normalizeSnapshotRecord(v: SnapshotRecord): SnapshotRecord {
  return {
    ...v,
    host: v.host ?? "",
    source: v.source ?? "",
    exclude: v.exclude ?? [],
    labels: v.labels ?? {},
    sizeBytes: v.sizeBytes ?? 0,
    stats: v.stats ?? { files: 0, dirs: 0, symlinks: 0, logicalBytes: v.sizeBytes ?? 0, storedBytes: 0, addedBytes: 0 },
  }
}

/** Every well-formed snapshot record; the names of damaged ones are reported, not thrown. */
export async function listSnapshots(store: Store): Promise<{ records: SnapshotRecord[]; damaged: string[] }> {
  const { records, damaged } = await store.listRecords<SnapshotRecord>("snapshots", snapshotRecordProblem)
  return { records: records.map(normalizeSnapshotRecord), damaged }
}

/** One snapshot record by id; IntegrityError when it is damaged, NotFoundError when absent. */
export async function readSnapshot(store: Store, id: string): Promise<SnapshotRecord> {
  return normalizeSnapshotRecord(await store.getRecord<SnapshotRecord>("snapshots", id, snapshotRecordProblem))
}

/** Snapshots oldest first, as `cairn ls` lists them: by creation time, then by id. */
export function creationOrder(a: { id: string; createdAt: string }, b: { id: string; createdAt: string }): number {
  return a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/** What never changes in a snapshot record once it is made (an update changes its name, labels, pin or expiry only). */
interface Origin {
  source: string
  boxId?: string
  createdAt: string
}

const ORIGINS_FILE = "snapshot-origins.json"

/**
 * The newest snapshot (by createdAt, then id, as `cairn ls` orders them)
 * whose origin matches: a directory's or a box's previous one.
 *
 * Why not read every record: finding it that way costs one read per
 * snapshot in the repository, at every snapshot (on S3, a GET each). The
 * origins of the snapshots this host has seen are kept in its cache
 * directory instead, and only records it has not seen are read: one listing
 * and, usually, the one record the last snapshot added. The listing keeps
 * it exact: a snapshot another host made is read, a forgotten one dropped.
 * A damaged or missing file of origins only costs reading them all again;
 * a damaged record is passed over, as listing snapshots does.
 */
export async function newestSnapshot(store: Store, matches: (o: Origin) => boolean): Promise<SnapshotRecord | undefined> {
  const known = await fsp
    .readFile(path.join(store.cacheDir, ORIGINS_FILE), "utf8")
    .then((text) => JSON.parse(text) as unknown)
    .catch(() => undefined)
  const kept = typeof known === "object" && known !== null && !Array.isArray(known) ? (known as Record<string, unknown>) : {}
  const names = await store.listRecordNames("snapshots")
  const origins = new Map<string, Origin>()
  const unseen: string[] = []
  for (const name of names) {
    const o = kept[name]
    if (isOrigin(o)) origins.set(name, o)
    else unseen.push(name)
  }
  await mapLimit(unseen, 32, async (name) => {
    try {
      const r = await readSnapshot(store, name)
      origins.set(name, { source: r.source, ...(r.boxId !== undefined ? { boxId: r.boxId } : {}), createdAt: r.createdAt })
    } catch (err) {
      if (!(err instanceof NotFoundError) && !(err instanceof IntegrityError)) throw err
    }
  })
  // a lost race between two writers only costs the other's entries
  if (unseen.length > 0 || Object.keys(kept).length !== origins.size) await store.keepCacheFile(ORIGINS_FILE, JSON.stringify(Object.fromEntries(origins)))
  let newest: { id: string; createdAt: string } | undefined
  for (const [id, o] of origins) if (matches(o) && (!newest || creationOrder({ id, createdAt: o.createdAt }, newest) > 0)) newest = { id, createdAt: o.createdAt }
  if (!newest) return undefined
  // read now: it may have been forgotten since the listing (then there is none to follow)
  return readSnapshot(store, newest.id).catch((err: unknown) => {
    if (err instanceof NotFoundError || err instanceof IntegrityError) return undefined
    throw err
  })
}

function isOrigin(v: unknown): v is Origin {
  return isObject(v) && typeof v.source === "string" && typeof v.createdAt === "string" && optional(v.boxId, "string")
}
