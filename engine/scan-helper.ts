// A helper thread that lists directories for a large scan: for each
// directory it is given, readdir, then an lstat of every entry and a
// readlink of every symlink, all synchronous there; the stats come back
// packed, one BigInt64Array per directory. The walk (scan.ts) hands it
// directories once a tree proves large, and applies the same rules to its
// listings as to its own, so that a tree scans to the same result either way.
//
// Why: a scan is system calls (an lstat per entry, ~4 us on this project's
// VM) and the walk makes them one after another on the main thread: on a
// tree of 100,000 small files that was ~0.9 s of a ~1.4 s snapshot with
// nothing changed. A helper makes part of them at the same time, on the
// other core. Its start costs ~40 ms and 12-15 MiB, which a tree of ten or
// twenty thousand entries does not repay: the walk asks for help only past
// HELP_FROM entries (scan.ts).

import os from "node:os"
import { SMALL_HEAP, WorkerPool } from "../store/worker-pool.js"
import { makeLstatEntry, type EntryStat } from "./lstat.js"

export type { EntryStat }

/** A directory as a helper listed it. */
export type Listing =
  /** readdir failed (its code) */
  | { code: string }
  /** some names are not valid UTF-8: the walk lists the directory itself (it reports and skips them) */
  | { undecodable: true }
  | {
      names: string[]
      /** STAT_FIELDS per entry, in EntryStat's order */
      stats: BigInt64Array
      /** per entry: why its lstat failed (ENOENT: it vanished), else undefined */
      codes: Array<string | undefined>
      /** per symlink: its target, or why readlink failed (targetCodes) */
      targets: Array<string | undefined>
      targetCodes: Array<string | undefined>
    }

const STAT_FIELDS = 9

const SOURCE = `
const { parentPort } = require("node:worker_threads")
const fs = require("node:fs")
const lstatEntry = (${makeLstatEntry.toString()})({ fs, process })
function list(dir) {
  let names
  try {
    names = fs.readdirSync(dir)
  } catch (err) {
    return { code: String(err.code) }
  }
  if (names.some((n) => n.includes("\\uFFFD"))) return { undecodable: true }
  const stats = new BigInt64Array(names.length * ${STAT_FIELDS})
  const codes = []
  const targets = []
  const targetCodes = []
  names.forEach((name, i) => {
    const full = dir + "/" + name
    let st
    try {
      st = lstatEntry(full)
    } catch (err) {
      codes[i] = String(err.code)
      return
    }
    if (!st) {
      codes[i] = "ENOENT"
      return
    }
    const o = i * ${STAT_FIELDS}
    stats[o] = BigInt(st.mode)
    stats[o + 1] = st.mtimeNs
    stats[o + 2] = st.ctimeNs
    stats[o + 3] = st.ino
    stats[o + 4] = st.dev
    stats[o + 5] = BigInt(st.nlink)
    stats[o + 6] = BigInt(st.uid)
    stats[o + 7] = BigInt(st.gid)
    stats[o + 8] = BigInt(st.size)
    if ((st.mode & 0o170000) === 0o120000) {
      try {
        targets[i] = fs.readlinkSync(full)
      } catch (err) {
        targetCodes[i] = String(err.code)
      }
    }
  })
  return { names, stats, codes, targets, targetCodes }
}
parentPort.on("message", (job) => {
  try {
    const dirs = job.dirs.map(list)
    parentPort.postMessage({ id: job.id, dirs }, dirs.flatMap((d) => (d.stats ? [d.stats.buffer] : [])))
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String((err && err.message) || err) })
  }
})
`

let shared: WorkerPool | undefined

/** Helpers a walk may keep busy at once: the other cores (one on this project's two). */
export function helpers(): number {
  return Math.max(1, Math.min(3, os.availableParallelism() - 1))
}

/** Lists directories (absolute paths) on a helper thread; rejects only if the helper failed (the walk then lists them itself). */
export async function listDirs(dirs: readonly string[]): Promise<Listing[]> {
  shared ??= new WorkerPool(SOURCE, helpers(), SMALL_HEAP)
  return (await shared.run<{ dirs: Listing[] }>({ dirs })).dirs
}

/** Entry i of a listing's packed stats. */
export function entryStat(stats: BigInt64Array, i: number): EntryStat {
  const o = i * STAT_FIELDS
  return {
    mode: Number(stats[o]),
    mtimeNs: stats[o + 1]!,
    ctimeNs: stats[o + 2]!,
    // unsigned: stored in a signed array, an inode number past 2^63 wraps
    ino: BigInt.asUintN(64, stats[o + 3]!),
    dev: BigInt.asUintN(64, stats[o + 4]!),
    nlink: Number(stats[o + 5]),
    uid: Number(stats[o + 6]),
    gid: Number(stats[o + 7]),
    size: Number(stats[o + 8]),
  }
}
