// The scan's lstat: one entry's metadata as the walk uses it, from the
// kernel's numbers rather than from node's Stats object.
//
// Why: `fs.lstatSync(p, { bigint: true })` builds a BigIntStats of ~1.4 KB
// per call (22 BigInts, four Dates) from the numbers the kernel gave, of
// which the walk keeps nine. On the bench's unchanged workspace (14,837
// entries) those objects were 41% of everything the process allocated and
// the largest share of its ~65 ms of garbage collection; a walk that reads
// the numbers as node's own binding leaves them (one shared BigInt64Array,
// overwritten by the next call) took ~150 ms where the API took ~190-210
// (cold, median of 6). The binding is node's internal `fs` module
// (`process.binding`, documented as deprecated but kept for compatibility),
// whose calling convention has changed between versions (node 20's early
// releases passed a context object for errors where later ones throw), so
// it is used only where node's own `fs.lstatSync` calls it exactly as this
// module does (its source says so), and only after a probe: it must give,
// for the file system's root, exactly what `fs.lstatSync` gives. Otherwise,
// or where it is absent, where node's permission model is on (whose checks
// `fs.lstatSync` makes in JavaScript), or where it would print a deprecation
// warning (`--pending-deprecation`), every call goes through `fs.lstatSync`
// as before. Errors are node's own either way: undefined for an entry that
// does not exist, an exception with `code` for anything else.
//
// makeLstatEntry is self-contained (it sees only its arguments) so that the
// scan's helper threads, whose code is a string (scan-helper.ts), build the
// same function from its source.

import fs from "node:fs"

/** An entry's lstat as the walk uses it. */
export interface EntryStat {
  /** st_mode: type and permission bits */
  mode: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  dev: bigint
  nlink: number
  uid: number
  gid: number
  size: number
}

/** What makeLstatEntry needs of `node:fs` and `process`: passed in, so that a test can take the binding away. */
export interface LstatHost {
  fs: { lstatSync(path: string, opts: { bigint: true; throwIfNoEntry: false }): import("node:fs").BigIntStats | undefined }
  process: { binding?: (name: string) => unknown; permission?: unknown; execArgv: readonly string[]; env: Record<string, string | undefined> }
}

/** An lstat: the entry's stat, undefined if it does not exist; throws (with `code`) for any other failure. */
export type LstatEntry = ((full: string) => EntryStat | undefined) & { bare: boolean }

export function makeLstatEntry(host: LstatHost): LstatEntry {
  const viaApi = (full: string): EntryStat | undefined => {
    const st = host.fs.lstatSync(full, { bigint: true, throwIfNoEntry: false })
    if (st === undefined) return undefined
    return {
      mode: Number(st.mode),
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
      ino: st.ino,
      dev: st.dev,
      nlink: Number(st.nlink),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
    }
  }
  const api = Object.assign(viaApi, { bare: false })
  const proc = host.process
  const pending = proc.execArgv.includes("--pending-deprecation") || (proc.env.NODE_OPTIONS ?? "").includes("--pending-deprecation") || proc.env.NODE_PENDING_DEPRECATION === "1"
  // node's own call, whose arguments (path, bigint, no request: synchronous, throwIfNoEntry) are copied below
  const sameCall = /binding\.lstat\(\s*pathModule\.toNamespacedPath\(path\),\s*options\.bigint,\s*undefined,\s*options\.throwIfNoEntry,?\s*\)/.test(String(host.fs.lstatSync))
  if (pending || proc.permission !== undefined || !sameCall || typeof proc.binding !== "function") return api
  let bare: LstatEntry
  try {
    // node's FillStatsArray order: dev, mode, nlink, uid, gid, rdev, blksize, ino, size, blocks, then
    // seconds and nanoseconds of atime, mtime, ctime, birthtime
    const binding = proc.binding("fs") as { lstat?: (path: string, bigint: true, req: undefined, throwIfNoEntry: false) => unknown }
    const lstat = binding.lstat
    if (typeof lstat !== "function") return api
    const viaBinding = (full: string): EntryStat | undefined => {
      const v = lstat(full, true, undefined, false)
      if (v === undefined) return undefined
      if (!(v instanceof BigInt64Array)) throw new Error(`node's fs binding gave ${Object.prototype.toString.call(v)} for an lstat`)
      return {
        mode: Number(v[1]),
        mtimeNs: v[12]! * 1_000_000_000n + v[13]!,
        ctimeNs: v[14]! * 1_000_000_000n + v[15]!,
        ino: v[7]!,
        dev: v[0]!,
        nlink: Number(v[2]),
        uid: Number(v[3]),
        gid: Number(v[4]),
        size: Number(v[8]),
      }
    }
    bare = Object.assign(viaBinding, { bare: true })
    const a = api("/")
    const b = bare("/")
    const same = a !== undefined && b !== undefined && (Object.keys(a) as Array<keyof EntryStat>).every((k) => a[k] === b[k])
    return same ? bare : api
  } catch {
    return api
  }
}

let shared: LstatEntry | undefined

/** lstat for this thread: the binding's numbers when the probe passed, else fs.lstatSync's. */
export function lstatEntry(full: string): EntryStat | undefined {
  shared ??= makeLstatEntry({ fs, process })
  return shared(full)
}
