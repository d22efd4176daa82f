// Tar export and import: a snapshot (or a sub-path of it) as a tar stream, and
// a snapshot straight from a tar stream, without touching the disk.
//
// Export writes ustar entries with PAX records where ustar falls short
// (tar-stream): the mtime as a decimal with up to nine fraction digits when it
// is not a whole second in ustar's range (so nanosecond mtimes survive; the
// ustar field then holds the whole seconds, clamped), the path and link target
// when they are long or not ASCII (UTF-8, any length), uid/gid above ustar's
// range. Order: depth-first by name, directories
// before their contents (tar extractors set a directory's mtime once they
// have left it). Hardlink members (type "link") point at the file holding
// their content by its path below the export root; in snapshots taken from
// disk that file is the group's first member in this very order. When it is
// not (a tree imported from another tar), a member waits and is written right
// after its holder: the archive must name the holder first. A hardlink whose
// holder lies outside an exported sub-path is written as a regular file, and
// later members of its group link to that one. The root directory itself is not an entry
// (its metadata is in no tree). File contents are streamed chunk by chunk with
// a bounded read-ahead (CHUNK_READ_AHEAD chunks, READ_AHEAD_BYTES bytes).
//
// Import reads entries in order into an in-memory directory model (metadata
// and chunk lists only; contents go through the Ingestor as they arrive),
// then writes trees bottom-up, flushes the store, and only then writes the
// snapshot record: a rejected archive leaves no record (its chunks are
// unreferenced and gc reclaims them). The same archive imported into the same
// repository always gives the same root tree, and an archive written by
// exportTar gives back the tree it was written from (tree ids equal).
//
// Rules of import (anything else is BadInputError naming the entry):
//  - names: relative, valid UTF-8, no NUL, no ".." component; "." components
//    and repeated or trailing slashes are dropped; "./" (the root) is ignored.
//    Names of ustar/GNU headers are checked byte-exactly; PAX names are
//    decoded by tar-stream with replacement, so a PAX name holding U+FFFD is
//    refused even if that character was genuinely in the name.
//  - no entry below a symlink or a file; at most MAX_DEPTH levels.
//  - a later entry replaces an earlier one at the same path (as tar does);
//    a directory entry over a directory only updates its metadata; nothing
//    but a directory may replace a directory that has entries.
//  - symlinks: target non-empty, relative, and not leaving the root, checked
//    twice: lexically when the entry is read, and at the end by resolving the
//    target against the final tree, following the archive's own symlinks
//    (so "d" -> "." plus "x" -> "d/.." is refused). With externalSymlinks
//    (a round trip of a snapshot that holds such links) any non-empty target
//    without NUL is kept as it is, as the scan of a directory keeps it.
//  - hardlinks: the target is an earlier regular file (or hardlink) of the
//    archive, named as an entry path; its group's first file holds the
//    content. Link, symlink and directory entries must declare size 0.
//  - a file's delivered bytes must match its declared size; a truncated
//    archive is refused. GNU sparse (PAX) files are refused.
//  - character/block devices, FIFOs and unknown entry types are skipped with
//    a warning. uid/gid come from PAX when present; modes are masked to 07777.
//  - implicit parent directories get mode 0755, the importing process's
//    uid/gid and the import's start time as mtime.

import os from "node:os"
import type { Readable } from "node:stream"
import tarStream from "tar-stream"
import { Semaphore } from "../store/concurrency.js"
import { AbortedError, BadInputError, CairnError, IntegrityError, isCairnError, throwIfAborted } from "../store/errors.js"
import { randomId, type BlobId } from "../store/ids.js"
import type { BlobLocation } from "../store/local-index.js"
import type { Store } from "../store/store.js"
import { Ingestor } from "./ingest.js"
import type { Warning } from "./scan.js"
import { checkRecordFields } from "./records.js"
import { compareNames, isSafeName, type TreeEntry } from "./tree.js"
import type { Progress, SnapshotRecord, SnapshotStats } from "./types.js"
import { placePart, type PlacedEntry } from "./walk.js"

export interface ExportTarOptions {
  /** export only this path of the snapshot ("/" or omitted: everything) */
  subPath?: string
  signal?: AbortSignal
}

export interface ExportTarResult {
  /** file entries written (regular files and hardlinks) */
  files: number
  /** content bytes written */
  bytes: number
}

export interface ImportTarOptions {
  name?: string
  boxId?: string
  labels?: Record<string, string>
  signal?: AbortSignal
  /** totals are unknown while a stream is read: filesTotal and bytesTotal are 0 */
  onProgress?: (p: Progress) => void
  /**
   * Keep symlinks whose targets point outside the archive (absolute, or
   * leaving its root), as a snapshot of a directory keeps them: a tar export
   * of such a snapshot then imports. Off by default: an archive from
   * elsewhere is refused if any of its links would reach out of the tree it
   * restores to. Restores never follow a symlink either way.
   */
  externalSymlinks?: boolean
}

export interface ImportTarResult {
  snapshot: SnapshotRecord
  warnings: Warning[]
}

const CHUNK_READ_AHEAD = 16
const READ_AHEAD_BYTES = 8 << 20
const SMALL_ENTRY = 1 << 20
const SMALL_SLOTS = 8
const MAX_DEPTH = 1000
const MAX_SYMLINK_HOPS = 40
const USTAR_ID_MAX = 0o7777777
const USTAR_MTIME_MAX = 2 ** 31 - 1 // tar-stream writes the field through a 32-bit `| 0`

// ---- export -----------------------------------------------------------

/** A header as tar-stream delivers it (its typings omit the unknown type and the PAX record). */
type TypeHeaders = Omit<tarStream.Header, "type" | "pax"> & { type: tarStream.Header["type"] | null; pax?: Record<string, string> | null }
/** An entry of tar-stream's extract: its header and its data. */
type TarEntry = AsyncIterable<Buffer> & { header: tarStream.Header }

interface PlannedFile {
  rel: string
  entry: TreeEntry
  /** for files written with content */
  chunks?: BlobId[]
  size?: number
  /** for hardlinks: path below the export root of the file holding the content */
  linkTo?: string
}

/** Writes a snapshot (or a sub-path) as a PAX tar stream into out; ends out on success, destroys it (without an error) on failure. */
export async function exportTar(
  store: Store,
  snapshot: SnapshotRecord,
  out: NodeJS.WritableStream,
  opts: ExportTarOptions = {},
): Promise<ExportTarResult> {
  return store.withLock(false, "export", async () => {
    let plan: PlannedFile[]
    try {
      plan = await planExport(store, snapshot, opts.subPath ?? "/")
    } catch (err) {
      destroyStream(out)
      throw err
    }
    return writeArchive(store, plan, out, opts.signal)
  })
}

async function planExport(store: Store, snapshot: SnapshotRecord, subPath: string): Promise<PlannedFile[]> {
  const { base, placed } = await placePart(store, snapshot.tree, subPath, sortDepthFirst)
  const plan: PlannedFile[] = []
  const holders = new Set(placed.filter((p) => p.entry.type === "file" && p.entry.link === undefined).map((p) => p.rel))
  const emitted = new Set<string>()
  const waiting = new Map<string, PlacedEntry[]>() // holder -> links met before it
  for (const p of placed) {
    const e = p.entry
    if (e.type !== "file" || e.link === undefined) {
      plan.push({ rel: p.rel, entry: e, chunks: e.type === "file" ? (e.chunks ?? []) : undefined, size: e.type === "file" ? e.size : undefined })
      if (e.type === "file") {
        emitted.add(p.rel)
        for (const l of waiting.get(p.rel) ?? []) plan.push({ rel: l.rel, entry: l.entry, linkTo: p.rel })
        waiting.delete(p.rel)
      }
      continue
    }
    const link = e.link
    const inside = base === "" ? link : link.startsWith(`${base}/`) ? link.slice(base.length + 1) : undefined
    if (inside === undefined || !holders.has(inside)) {
      // placePart gave every member whose holder is a file in the snapshot one inside the export
      throw new IntegrityError(`hardlink ${p.rel} points at ${link}, which is not a regular file in the snapshot`, { path: p.rel })
    }
    if (emitted.has(inside)) plan.push({ rel: p.rel, entry: e, linkTo: inside })
    else waiting.set(inside, [...(waiting.get(inside) ?? []), p])
  }
  return plan
}

/** Depth-first pre-order by name: every directory right before its contents. */
function sortDepthFirst(placed: PlacedEntry[]): PlacedEntry[] {
  const keyed = placed.map((p) => ({ p, parts: p.rel.split("/") }))
  keyed.sort((a, b) => {
    const n = Math.min(a.parts.length, b.parts.length)
    for (let i = 0; i < n; i++) {
      const c = compareNames(a.parts[i]!, b.parts[i]!)
      if (c !== 0) return c
    }
    return a.parts.length - b.parts.length
  })
  return keyed.map((k) => k.p)
}

async function writeArchive(store: Store, plan: PlannedFile[], out: NodeJS.WritableStream, signal?: AbortSignal): Promise<ExportTarResult> {
  const pack = tarStream.pack()
  const result: ExportTarResult = { files: 0, bytes: 0 }
  const produce = async () => {
    const reader = new ChunkReader(store, plan.flatMap((f) => f.chunks ?? []))
    await reader.locate()
    for (const f of plan) {
      throwIfAborted(signal)
      await writeEntry(pack, f, reader, signal)
      if (f.entry.type === "file") {
        result.files++
        result.bytes += f.size ?? 0
      }
    }
    pack.finalize()
  }
  const consume = async () => {
    for await (const buf of pack as AsyncIterable<Buffer>) {
      if (!out.write(buf)) await waitFor(out, "drain")
    }
  }
  // a failing consumer (out closed, EPIPE) destroys the pack, which wakes a producer waiting for drain
  let consumerError: { err: unknown } | undefined
  const consuming = consume().catch((err: unknown) => {
    consumerError = { err }
    pack.destroy(err instanceof Error ? err : new Error(String(err)))
  })
  try {
    await produce()
    await consuming
    if (consumerError) throw consumerError.err
    const finished = waitFor(out, "finish")
    out.end()
    await finished
  } catch (err) {
    pack.destroy(err instanceof Error ? err : new Error(String(err)))
    await consuming
    const first = consumerError?.err ?? err
    destroyStream(out)
    throw first
  }
  return result
}

async function writeEntry(pack: tarStream.Pack, f: PlannedFile, reader: ChunkReader, signal?: AbortSignal): Promise<void> {
  const e = f.entry
  const ns = BigInt(e.mtime)
  const secs = nsToSeconds(ns)
  const pax: Record<string, string> = {}
  if (ns % 1_000_000_000n !== 0n || secs < 0 || secs > USTAR_MTIME_MAX) pax.mtime = nsToPaxTime(ns)
  if (e.uid > USTAR_ID_MAX) pax.uid = String(e.uid)
  if (e.gid > USTAR_ID_MAX) pax.gid = String(e.gid)
  // without a PAX record tar-stream writes plain ustar, and falls back to PAX by itself for long or non-ASCII names
  const header: Parameters<tarStream.Pack["entry"]>[0] & { pax?: Record<string, string> } = {
    name: f.rel,
    // type bits keep a mode of 0 from being replaced by tar-stream's default; the header field is masked to 07777
    mode: 0,
    uid: Math.min(e.uid, USTAR_ID_MAX),
    gid: Math.min(e.gid, USTAR_ID_MAX),
    mtime: new Date(Math.min(Math.max(secs, 0), USTAR_MTIME_MAX) * 1000),
    pax: Object.keys(pax).length > 0 ? pax : undefined,
  }
  if (e.type === "dir") Object.assign(header, { name: `${f.rel}/`, type: "directory", mode: 0o040000 | e.mode })
  else if (e.type === "symlink") Object.assign(header, { type: "symlink", linkname: e.target, mode: 0o120000 | e.mode })
  else if (f.linkTo !== undefined) Object.assign(header, { type: "link", linkname: f.linkTo, mode: 0o100000 | e.mode })
  else Object.assign(header, { type: "file", size: f.size ?? 0, mode: 0o100000 | e.mode })

  let done!: () => void
  let failed!: (err: unknown) => void
  const entryDone = new Promise<void>((resolve, reject) => {
    done = resolve
    failed = reject
  })
  entryDone.catch(() => {}) // awaited below; observed here in case we leave early
  const sink = pack.entry(header, (err) => (err ? failed(err) : done()))
  sink.on("error", () => {}) // seen through the entry callback
  if (header.type === "file") {
    for (let i = 0; i < (f.chunks ?? []).length; i++) {
      throwIfAborted(signal)
      const bytes = await reader.next()
      if (!sink.write(bytes)) await waitFor(sink, "drain")
    }
    sink.end(undefined) // streamx typings want an argument; undefined writes nothing
  }
  await entryDone
}

/** Reads chunks in a given order, keeping a bounded number of reads ahead. */
class ChunkReader {
  private readonly locs = new Map<BlobId, BlobLocation>()
  private readonly ahead: Array<{ promise: Promise<Uint8Array>; bytes: number }> = []
  private at = 0
  private aheadBytes = 0

  constructor(
    private readonly store: Store,
    private readonly ids: readonly BlobId[],
  ) {}

  async locate(): Promise<void> {
    const distinct = [...new Set(this.ids)]
    for (let i = 0; i < distinct.length; i += 10_000) {
      const batch = distinct.slice(i, i + 10_000)
      const found = await this.store.locateMany(batch)
      batch.forEach((id, k) => {
        const loc = found[k]
        if (loc === undefined) throw new IntegrityError(`chunk ${id} is missing from the repository`, { blob: id })
        if (loc !== "pending") this.locs.set(id, loc)
      })
    }
  }

  next(): Promise<Uint8Array> {
    this.fill()
    const head = this.ahead.shift()
    if (!head) return Promise.reject(new Error("ChunkReader read past its end"))
    this.aheadBytes -= head.bytes
    this.fill()
    return head.promise
  }

  private fill(): void {
    while (this.at < this.ids.length && this.ahead.length < CHUNK_READ_AHEAD && (this.ahead.length === 0 || this.aheadBytes < READ_AHEAD_BYTES)) {
      const id = this.ids[this.at++]!
      const loc = this.locs.get(id)
      const promise = loc ? this.store.readBlob(id, loc) : this.store.getBlob(id)
      promise.catch(() => {}) // observed when its turn comes
      const bytes = loc?.rawLength ?? 0
      this.ahead.push({ promise, bytes })
      this.aheadBytes += bytes
    }
  }
}

function nsToSeconds(ns: bigint): number {
  const s = ns / 1_000_000_000n
  return Number(ns < 0n && ns % 1_000_000_000n !== 0n ? s - 1n : s)
}

/** PAX time: signed decimal seconds, fraction without trailing zeros. */
export function nsToPaxTime(ns: bigint): string {
  const neg = ns < 0n
  const abs = neg ? -ns : ns
  const sec = abs / 1_000_000_000n
  const frac = (abs % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "")
  return `${neg ? "-" : ""}${sec}${frac ? `.${frac}` : ""}`
}

/** Parses a PAX time into nanoseconds (extra fraction digits are truncated); undefined if malformed. */
export function paxTimeToNs(value: string): bigint | undefined {
  const m = /^(-?)(\d{1,15})(?:\.(\d*))?$/.exec(value)
  if (!m) return undefined
  const ns = BigInt(m[2]!) * 1_000_000_000n + BigInt((m[3] ?? "").slice(0, 9).padEnd(9, "0"))
  return m[1] ? -ns : ns
}

// ---- import -----------------------------------------------------------

interface Meta {
  mode: number
  mtime: string
  uid: number
  gid: number
}

interface DirNode extends Meta {
  kind: "dir"
  children: Map<string, Node>
}

interface Group {
  chunks: BlobId[]
  size: number
  /** files sharing this content, in archive order; the first holds it */
  members: FileNode[]
}

interface FileNode extends Meta {
  kind: "file"
  path: string
  group: Group
}

interface SymlinkNode extends Meta {
  kind: "symlink"
  path: string
  target: string
}

type Node = DirNode | FileNode | SymlinkNode

/**
 * Makes a snapshot straight from a tar stream (see the rules above). On
 * failure no record is written, and the input is unpiped and destroyed (what
 * is left of it will not be read).
 */
export async function importTar(store: Store, input: NodeJS.ReadableStream, opts: ImportTarOptions = {}): Promise<ImportTarResult> {
  checkRecordFields({ name: opts.name, labels: opts.labels, boxId: opts.boxId })
  // the input may fail while we wait for the lock: keep that error for read()
  const early: { err?: unknown } = {}
  const onEarlyError = (err: unknown) => void (early.err ??= err)
  input.on("error", onEarlyError)
  return store.withLock(false, "import", async () => {
    const run = new TarImport(store, opts)
    try {
      await run.read(input, early)
    } catch (err) {
      ;(input as Partial<Readable>).unpipe?.()
      ;(input as Partial<Readable>).destroy?.()
      throw err
    }
    if (!opts.externalSymlinks) run.checkSymlinks()
    const root = await run.buildTree(run.root)
    await store.flush()
    throwIfAborted(opts.signal)
    const totals = run.ingest.totals()
    const stats: SnapshotStats = {
      files: run.files,
      dirs: run.dirs,
      symlinks: run.symlinks,
      logicalBytes: root.size,
      storedBytes: totals.storedBytes,
      addedBytes: totals.addedBytes,
    }
    const snapshot: SnapshotRecord = {
      id: randomId("snap"),
      name: opts.name,
      boxId: opts.boxId,
      tree: root.id,
      createdAt: new Date().toISOString(),
      host: os.hostname(),
      source: `tar:${opts.name ?? "-"}`,
      exclude: [],
      labels: opts.labels ?? {},
      sizeBytes: root.size,
      status: "ready",
      stats,
    }
    await store.createRecord("snapshots", snapshot.id, snapshot)
    return { snapshot, warnings: run.warnings }
  }).finally(() => input.removeListener("error", onEarlyError))
}

class TarImport {
  readonly ingest: Ingestor
  readonly warnings: Warning[] = []
  readonly root: DirNode
  private readonly implicit: Meta
  private readonly smallSlots = new Semaphore(SMALL_SLOTS)
  private readonly background = new Set<Promise<void>>()
  private backgroundError: { err: unknown } | undefined
  files = 0
  dirs = 0
  symlinks = 0
  private entries = 0
  private bytesDone = 0
  private filesDone = 0

  constructor(
    readonly store: Store,
    private readonly opts: ImportTarOptions,
  ) {
    this.ingest = new Ingestor(store, opts.signal)
    this.implicit = {
      mode: 0o755,
      mtime: (BigInt(Date.now()) * 1_000_000n).toString(),
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
    }
    this.root = { kind: "dir", ...this.implicit, children: new Map() }
  }

  async read(input: NodeJS.ReadableStream, early: { err?: unknown } = {}): Promise<void> {
    const extract = tarStream.extract({ filenameEncoding: "latin1" } as Parameters<typeof tarStream.extract>[0])
    let inputError: { err: unknown } | undefined
    let tarError: { err: unknown } | undefined // tar-stream refused the bytes (bad header, truncation)
    extract.on("error", (err: unknown) => void (tarError ??= { err }))
    const onInputError = (err: unknown) => {
      inputError ??= { err }
      extract.destroy(err as Error)
    }
    input.on("error", onInputError)
    if (early.err !== undefined) onInputError(early.err)
    else input.pipe(extract)
    let current = "(start of the archive)"
    try {
      for await (const entry of extract as AsyncIterable<TarEntry>) {
        this.entries++
        current = describeRawName(entry.header.name)
        throwIfAborted(this.opts.signal)
        if (this.backgroundError) throw this.backgroundError.err
        current = await this.entry(entry)
      }
    } catch (err) {
      await this.settleBackground()
      if (inputError) {
        throw new CairnError("IO", `reading the tar stream failed: ${describe(inputError.err)}`, { cause: inputError.err })
      }
      if (isCairnError(err)) throw err
      if (this.opts.signal?.aborted) throw new AbortedError()
      if (!tarError) throw err
      throw new BadInputError(`the tar stream is malformed or truncated (at entry ${this.entries}, ${current}): ${describe(tarError.err)}`, {
        entry: this.entries,
      })
    } finally {
      input.removeListener("error", onInputError)
    }
    await this.settleBackground()
    if (this.backgroundError) throw this.backgroundError.err
  }

  /** Handles one entry; returns its name for error messages. */
  private async entry(entry: TarEntry): Promise<string> {
    const h = entry.header as unknown as TypeHeaders
    const name = decodeName(h.name, h.pax?.path !== undefined, "name", h.name)
    const shown = JSON.stringify(name)
    const bad = (why: string) => new BadInputError(`tar entry ${shown} is refused: ${why}`, { entry: name })
    if (h.pax && Object.keys(h.pax).some((k) => k.startsWith("GNU.sparse."))) throw bad("GNU sparse files are not supported")
    const size = h.size ?? 0
    const type = h.type
    if (type === "character-device" || type === "block-device" || type === "fifo" || type === undefined || type === null) {
      await drain(entry)
      const what = type === "fifo" ? "FIFO" : type ? type.replace("-", " ") : "entry of an unknown type"
      this.warnings.push({ path: name, reason: `${what} skipped` })
      return shown
    }
    if (type !== "file" && type !== "contiguous-file" && size !== 0) {
      throw bad(`a ${type} entry declares ${size} bytes of data; it must declare none`)
    }
    const parts = this.splitName(name, bad)
    if (parts.length === 0) {
      if (type !== "directory") throw bad("it names the archive root")
      return shown // "./": the root's own metadata is not kept
    }
    const meta = this.meta(h, bad)
    if (type === "directory") {
      this.place(parts, { kind: "dir", ...meta, children: new Map() }, bad)
    } else if (type === "symlink") {
      const target = decodeName(h.linkname ?? "", h.pax?.linkpath !== undefined, "symlink target", name)
      checkSymlinkLexically(parts, target, bad, this.opts.externalSymlinks === true)
      this.place(parts, { kind: "symlink", ...meta, path: parts.join("/"), target }, bad)
    } else if (type === "link") {
      const target = decodeName(h.linkname ?? "", h.pax?.linkpath !== undefined, "hardlink target", name)
      const holder = this.lookupLinkTarget(target, bad)
      const node: FileNode = { kind: "file", ...meta, path: parts.join("/"), group: holder.group }
      if (this.lookup(parts) === holder) throw bad("it is a hardlink to itself")
      this.place(parts, node, bad)
      holder.group.members.push(node)
    } else {
      // file or contiguous-file
      const group: Group = { chunks: [], size: 0, members: [] }
      const node: FileNode = { kind: "file", ...meta, path: parts.join("/"), group }
      this.place(parts, node, bad)
      group.members.push(node)
      await this.readContent(entry, size, group, bad)
    }
    return shown
  }

  private splitName(name: string, bad: (why: string) => BadInputError): string[] {
    if (name.length === 0) throw bad("its name is empty")
    if (name.startsWith("/")) throw bad("its name is an absolute path")
    if (name.includes("\0")) throw bad("its name contains NUL")
    const parts = name.split("/").filter((p) => p !== "" && p !== ".")
    for (const p of parts) {
      if (p === "..") throw bad('its name has a ".." component')
      if (!isSafeName(p)) throw bad("its name has a component longer than 4096 characters")
    }
    if (parts.length > MAX_DEPTH) throw bad(`it is nested deeper than ${MAX_DEPTH} levels`)
    return parts
  }

  private meta(h: TypeHeaders, bad: (why: string) => BadInputError): Meta {
    const uid = h.pax?.uid !== undefined ? parseId(h.pax.uid) : h.uid
    const gid = h.pax?.gid !== undefined ? parseId(h.pax.gid) : h.gid
    if (!isUint(h.mode)) throw bad("its mode is malformed")
    if (!isUint(uid) || !isUint(gid)) throw bad("its uid or gid is malformed")
    let mtime: bigint | undefined
    if (h.pax?.mtime !== undefined) {
      mtime = paxTimeToNs(h.pax.mtime)
      if (mtime === undefined) throw bad(`its PAX mtime ${JSON.stringify(h.pax.mtime)} is malformed`)
    } else {
      const ms = h.mtime?.getTime() ?? 0
      if (!Number.isSafeInteger(ms)) throw bad("its mtime is malformed")
      mtime = BigInt(ms) * 1_000_000n
    }
    return { mode: h.mode & 0o7777, mtime: mtime.toString(), uid, gid }
  }

  /** The node at a path, without creating anything; undefined if absent or below a non-directory. */
  private lookup(parts: readonly string[]): Node | undefined {
    let node: Node = this.root
    for (const p of parts) {
      if (node.kind !== "dir") return undefined
      const next: Node | undefined = node.children.get(p)
      if (!next) return undefined
      node = next
    }
    return node
  }

  private lookupLinkTarget(target: string, bad: (why: string) => BadInputError): FileNode {
    if (target.length === 0 || target.startsWith("/") || target.includes("\0")) {
      throw bad(`its hardlink target ${JSON.stringify(target)} is outside the archive`)
    }
    const parts = target.split("/").filter((p) => p !== "" && p !== ".")
    if (parts.includes("..")) throw bad(`its hardlink target ${JSON.stringify(target)} is outside the archive`)
    const node = parts.length === 0 ? undefined : this.lookup(parts)
    if (node?.kind !== "file") throw bad(`its hardlink target ${JSON.stringify(target)} is not an earlier regular file of the archive`)
    return node
  }

  /** Puts a node at a path, creating implicit parents; a later entry replaces an earlier one. */
  private place(parts: readonly string[], node: Node, bad: (why: string) => BadInputError): void {
    let dir = this.root
    for (let i = 0; i < parts.length - 1; i++) {
      const p = parts[i]!
      const next = dir.children.get(p)
      if (next === undefined) {
        const created: DirNode = { kind: "dir", ...this.implicit, children: new Map() }
        dir.children.set(p, created)
        dir = created
      } else if (next.kind === "dir") dir = next
      else throw bad(`its path goes through ${JSON.stringify(parts.slice(0, i + 1).join("/"))}, which is a ${next.kind === "symlink" ? "symlink" : "file"}`)
    }
    const last = parts[parts.length - 1]!
    const old = dir.children.get(last)
    if (old?.kind === "dir") {
      if (node.kind === "dir") {
        Object.assign(old, { mode: node.mode, mtime: node.mtime, uid: node.uid, gid: node.gid })
        return
      }
      if (old.children.size > 0) throw bad(`it would replace the directory ${JSON.stringify(parts.join("/"))}, which has entries`)
    }
    if (old?.kind === "file") old.group.members.splice(old.group.members.indexOf(old), 1)
    dir.children.set(last, node)
  }

  private async readContent(entry: TarEntry, declared: number, group: Group, bad: (why: string) => BadInputError): Promise<void> {
    let delivered = 0
    const counted = (async function* () {
      for await (const buf of entry as AsyncIterable<Buffer>) {
        delivered += buf.length
        yield buf
      }
    })()
    const onBytes = (n: number) => {
      this.bytesDone += n
      this.progress()
    }
    const finish = () => {
      if (delivered !== declared) throw bad(`it declares ${declared} bytes but ${delivered} were delivered`)
      this.filesDone++
      this.progress()
    }
    if (declared > SMALL_ENTRY) {
      const { chunks, size } = await this.ingest.ingestStream(counted, onBytes)
      finish()
      Object.assign(group, { chunks, size })
      return
    }
    // small files: read into memory, store in the background (bounded by smallSlots)
    const release = await this.smallSlots.acquire()
    let data: Buffer
    try {
      const parts: Buffer[] = []
      for await (const buf of counted) {
        parts.push(buf)
        onBytes(buf.length)
      }
      finish()
      data = Buffer.concat(parts)
    } catch (err) {
      release()
      throw err
    }
    group.size = data.length
    const job: Promise<void> = this.ingest
      .ingestBuffer(data)
      .then((chunks) => void (group.chunks = chunks))
      .catch((err) => void (this.backgroundError ??= { err }))
      .finally(() => {
        release()
        this.background.delete(job)
      })
    this.background.add(job)
  }

  private async settleBackground(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background])
  }

  private progress(): void {
    this.opts.onProgress?.({ phase: "import", filesDone: this.filesDone, filesTotal: 0, bytesDone: this.bytesDone, bytesTotal: 0 })
  }

  /** Resolves every symlink against the final tree, following the archive's symlinks; refuses any that leaves the root. */
  checkSymlinks(): void {
    const visit = (dir: DirNode, at: string[]) => {
      for (const [name, node] of dir.children) {
        if (node.kind === "dir") visit(node, [...at, name])
        else if (node.kind === "symlink" && this.escapes(at, node.target)) {
          throw new BadInputError(
            `tar entry ${JSON.stringify(node.path)} is refused: its symlink target ${JSON.stringify(node.target)} leaves the archive root through other symlinks of the archive; ${EXTERNAL_SYMLINKS_HINT}`,
            { entry: node.path },
          )
        }
      }
    }
    visit(this.root, [])
  }

  private escapes(start: string[], target: string): boolean {
    const at = [...start]
    const queue = target.split("/")
    let hops = 0
    let real = true // false once a component names nothing (or a file): the rest is lexical
    while (queue.length > 0) {
      const p = queue.shift()!
      if (p === "" || p === ".") continue
      if (p === "..") {
        if (at.length === 0) return true
        at.pop()
        continue
      }
      const node = real ? this.lookup([...at, p]) : undefined
      if (node?.kind === "symlink") {
        if (++hops > MAX_SYMLINK_HOPS) return false // a loop: resolves to nothing
        if (node.target.startsWith("/")) return true
        queue.unshift(...node.target.split("/"))
        continue
      }
      if (node?.kind !== "dir") real = false
      at.push(p)
    }
    return false
  }

  /** Writes the trees of dir and everything below it; returns its id and logical size. */
  async buildTree(dir: DirNode): Promise<{ id: BlobId; size: number }> {
    const children = [...dir.children.entries()]
    const subtrees = await Promise.all(children.map(([, c]) => (c.kind === "dir" ? this.buildTree(c) : undefined)))
    const entries: TreeEntry[] = []
    let size = 0
    children.forEach(([name, c], i) => {
      // one literal per kind, no spread of a shared base (as snapshot.ts's buildTree: a spread gives every entry a hidden class of its own)
      const { mode, mtime, uid, gid } = c
      if (c.kind === "dir") {
        const sub = subtrees[i]!
        entries.push({ name, mode, mtime, uid, gid, type: "dir", size: sub.size, tree: sub.id })
        size += sub.size
        this.dirs++
      } else if (c.kind === "symlink") {
        entries.push({ name, mode, mtime, uid, gid, type: "symlink", target: c.target })
        this.symlinks++
      } else {
        const holder = c.group.members[0]!
        if (holder === c) {
          entries.push({ name, mode, mtime, uid, gid, type: "file", size: c.group.size, chunks: c.group.chunks })
          size += c.group.size
        } else {
          entries.push({ name, mode, mtime, uid, gid, type: "file", size: c.group.size, link: holder.path })
        }
        this.files++
      }
    })
    return { id: await this.ingest.putTree(entries), size }
  }
}

/** Names from ustar/GNU headers arrive as latin1 (raw bytes); PAX names arrive decoded with replacement. */
function decodeName(raw: string, fromPax: boolean, what: string, entry: string): string {
  const refuse = () =>
    new BadInputError(`tar entry ${describeRawName(entry)} is refused: its ${what} is not valid UTF-8`, { entry: describeRawName(entry) })
  if (fromPax) {
    if (raw.includes("\uFFFD")) throw refuse()
    return raw
  }
  const bytes = Buffer.from(raw, "latin1")
  const text = bytes.toString("utf8")
  if (!Buffer.from(text, "utf8").equals(bytes)) throw refuse()
  return text
}

function describeRawName(raw: string): string {
  return JSON.stringify(raw.length > 200 ? `${raw.slice(0, 200)}...` : raw)
}

/** How to import an archive whose symlinks point outside it, for the messages that refuse one. */
const EXTERNAL_SYMLINKS_HINT = "to keep such links as they are (restores never follow them), import with externalSymlinks: true (cairn import --external-symlinks)"

function checkSymlinkLexically(parts: readonly string[], target: string, bad: (why: string) => BadInputError, external: boolean): void {
  if (target.length === 0) throw bad("its symlink target is empty")
  if (target.includes("\0")) throw bad("its symlink target contains NUL")
  if (external) return
  if (target.startsWith("/")) throw bad(`its symlink target ${JSON.stringify(target)} is an absolute path; ${EXTERNAL_SYMLINKS_HINT}`)
  let depth = parts.length - 1
  for (const p of target.split("/")) {
    if (p === "" || p === ".") continue
    if (p === "..") {
      if (--depth < 0) throw bad(`its symlink target ${JSON.stringify(target)} leaves the archive root; ${EXTERNAL_SYMLINKS_HINT}`)
    } else depth++
  }
}

async function drain(entry: TarEntry): Promise<void> {
  if ((entry.header.size ?? 0) === 0) return
  for await (const _ of entry as AsyncIterable<Buffer>) void _
}

function parseId(v: string): number {
  return /^\d{1,15}$/.test(v) ? Number(v) : NaN
}

function isUint(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Resolves on the event; rejects if the emitter errors or closes first. */
function waitFor(emitter: NodeJS.EventEmitter, event: string): Promise<void> {
  // a stream destroyed earlier (stdout whose reader left: a queued write failed) emits nothing more
  const gone = emitter as Partial<{ destroyed: boolean; errored: unknown }>
  if (gone.destroyed) {
    if (event === "finish" && !gone.errored) return Promise.resolve()
    return Promise.reject(gone.errored ?? new CairnError("IO", `the stream closed while waiting for ${event}`))
  }
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      emitter.removeListener(event, onEvent)
      emitter.removeListener("error", onError)
      emitter.removeListener("close", onClose)
    }
    const onEvent = () => {
      cleanup()
      resolve()
    }
    const onError = (err: unknown) => {
      cleanup()
      reject(err)
    }
    const onClose = () => {
      cleanup()
      if (event === "finish") resolve()
      else reject(new CairnError("IO", `the stream closed while waiting for ${event}`))
    }
    emitter.on(event, onEvent)
    emitter.on("error", onError)
    emitter.on("close", onClose)
  })
}

/**
 * Closes the caller's stream after a failure so that its reader sees a cut
 * archive instead of waiting; without an error, so a caller that has no
 * "error" listener on it is not crashed (the error is our rejection).
 */
function destroyStream(out: NodeJS.WritableStream): void {
  const d = (out as Partial<{ destroy(): void }>).destroy
  if (typeof d === "function") d.call(out)
}
