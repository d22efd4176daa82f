// Verify: check that every snapshot can be restored, and say what cannot.
//
// 1. Every snapshot record parses; every tree it reaches loads (which reads
//    and hash-checks the tree blob) and passes the tree checks.
// 2. Every referenced blob is in the index, its pack exists, and the pack's
//    own header lists the blob at the indexed offset and length.
// 3. Every index file in the repository decodes (other hosts rebuild their
//    caches from them, so a damaged one hides blobs from them).
// 4. With readData, every referenced blob is read, decoded and hash-checked,
//    reading each pack once, in offset order; and what each such pack's name
//    vouches for must check out too: for a pack named by its header's sha256
//    (pack.ts), every other blob its header lists, decoded and hash-checked;
//    for one named by the sha256 of all its bytes (before 2026-12-07), those
//    bytes. A pack damaged there while every blob snapshots use in it checks
//    out is damaged only where nothing reads: a warning, not damage.
// Damage is reported per blob with the snapshots and file paths that depend
// on it (hardlink members included), so a user knows exactly what a restore
// would miss. Only integrity failures are damage: an I/O error of the backend
// (a network blip) aborts the verify instead of being reported as damage.

import { mapLimit } from "../store/concurrency.js"
import { IntegrityError, NotFoundError, throwIfAborted } from "../store/errors.js"
import type { BlobId } from "../store/ids.js"
import type { BlobLocation } from "../store/local-index.js"
import { decodeHeader, decodeTrailer, packName, TRAILER_BYTES, type PackEntry } from "../store/pack.js"
import type { Store } from "../store/store.js"
import type { Tree } from "./tree.js"
import type { Progress } from "./types.js"
import { loadTree } from "./walk.js"
import { listSnapshots } from "./records.js"

export interface VerifyDamage {
  blob?: string
  pack?: string
  record?: string
  reason: string
  snapshots: string[]
  paths: string[]
}

export interface VerifyReport {
  ok: boolean
  snapshots: number
  trees: number
  blobs: number
  packs: number
  bytesRead: number
  damage: VerifyDamage[]
  warnings: string[]
}

export interface VerifyOptions {
  readData?: boolean
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

const MAX_PATHS = 50

export async function verifyRepository(store: Store, opts: VerifyOptions = {}): Promise<VerifyReport> {
  return store.withLock(false, "verify", () => new Verifier(store, opts).run())
}

class Verifier {
  private readonly report: VerifyReport = { ok: true, snapshots: 0, trees: 0, blobs: 0, packs: 0, bytesRead: 0, damage: [], warnings: [] }
  /** blob -> who depends on it */
  private readonly refs = new Map<BlobId, { snapshots: Set<string>; paths: Set<string> }>()
  private readonly trees = new Map<BlobId, Promise<Tree | undefined>>()
  private readonly damaged = new Map<string, VerifyDamage>()
  /** snapshot + "\0" + path of a hardlink group's first member -> the members that link to it */
  private readonly links = new Map<string, string[]>()

  constructor(
    private readonly store: Store,
    private readonly opts: VerifyOptions,
  ) {}

  async run(): Promise<VerifyReport> {
    const index = await this.store.checkIndexFiles()
    for (const d of index.damaged) {
      this.addDamage(`index:${d.file}`, {
        record: d.file,
        reason: `the index file is damaged (${d.reason}); hosts without a cache cannot find the blobs it lists: run "cairn rebuild-index"`,
        snapshots: [],
        paths: [],
      })
    }
    const { records, damaged } = await listSnapshots(this.store)
    for (const name of damaged) this.addDamage(`record:${name}`, { record: `snapshots/${name}`, reason: "the snapshot record is damaged (not valid JSON, or not a snapshot record)", snapshots: [name], paths: [] })
    this.report.snapshots = records.length
    for (const s of records) {
      throwIfAborted(this.opts.signal)
      await this.walk(s.id, s.tree, "/", new Set())
    }
    this.report.trees = this.trees.size
    this.report.blobs = this.refs.size
    await this.checkBlobs()
    for (const [key, d] of this.damaged) {
      const r = this.refs.get(key as BlobId)
      if (!r) continue
      d.snapshots = [...new Set([...d.snapshots, ...r.snapshots])].sort()
      const paths = new Set([...d.paths, ...r.paths])
      for (const s of r.snapshots) for (const p of r.paths) for (const member of this.links.get(`${s}\0${p}`) ?? []) paths.add(member)
      d.paths = [...paths].sort()
    }
    this.report.damage = [...this.damaged.values()]
    this.report.ok = this.report.damage.length === 0
    return this.report
  }

  private ref(id: BlobId, snapshot: string, p: string): void {
    let r = this.refs.get(id)
    if (!r) this.refs.set(id, (r = { snapshots: new Set(), paths: new Set() }))
    r.snapshots.add(snapshot)
    if (r.paths.size < MAX_PATHS) r.paths.add(p)
  }

  private async walk(snapshot: string, treeId: BlobId, dirPath: string, seen: Set<BlobId>): Promise<void> {
    this.ref(treeId, snapshot, dirPath)
    if (seen.has(treeId)) return
    seen.add(treeId)
    throwIfAborted(this.opts.signal)
    let pending = this.trees.get(treeId)
    if (!pending) {
      pending = loadTree(this.store, treeId).catch((err) => {
        if (!isDamage(err)) throw err
        this.addDamage(treeId, { blob: treeId, pack: (err.data.pack as string) ?? undefined, reason: err.message, snapshots: [], paths: [] })
        return undefined
      })
      this.trees.set(treeId, pending)
    }
    const tree = await pending
    if (!tree) return
    const subdirs: Promise<void>[] = []
    for (const e of tree.entries) {
      const p = dirPath === "/" ? `/${e.name}` : `${dirPath}/${e.name}`
      if (e.type === "file") {
        for (const c of e.chunks ?? []) this.ref(c, snapshot, p)
        if (e.link !== undefined) {
          const key = `${snapshot}\0/${e.link}`
          const members = this.links.get(key)
          if (members) members.push(p)
          else this.links.set(key, [p])
        }
      } else if (e.type === "dir") subdirs.push(this.walk(snapshot, e.tree, p, seen))
    }
    // siblings load concurrently (loadTree bounds the reads in flight)
    await Promise.all(subdirs)
  }

  private async checkBlobs(): Promise<void> {
    const ids = [...this.refs.keys()]
    const byPack = new Map<string, Array<{ id: BlobId; loc: BlobLocation }>>()
    for (let i = 0; i < ids.length; i += 10_000) {
      const batch = ids.slice(i, i + 10_000)
      const locs = await this.store.locateForRead(batch)
      batch.forEach((id, k) => {
        const loc = locs[k]
        if (!loc || loc === "pending") {
          if (!loc) this.addDamage(id, { blob: id, reason: "the blob is not in the index (its pack or index file is lost)", snapshots: [], paths: [] })
          return
        }
        let list = byPack.get(loc.pack)
        if (!list) byPack.set(loc.pack, (list = []))
        list.push({ id, loc })
      })
    }
    const present = new Map((await this.store.backend.list("data/")).map((o) => [o.key.slice(o.key.lastIndexOf("/") + 1), o.size]))
    this.report.packs = byPack.size
    let packsDone = 0
    await mapLimit([...byPack], 2, async ([pack, blobs]) => {
      throwIfAborted(this.opts.signal)
      const size = present.get(pack)
      if (size === undefined) {
        for (const b of blobs) this.addDamage(b.id, { blob: b.id, pack, reason: `pack ${pack} is missing`, snapshots: [], paths: [] })
        return
      }
      let header: Map<BlobId, PackEntry>
      try {
        header = await this.readHeader(pack, size)
      } catch (err) {
        if (!isDamage(err)) throw err
        for (const b of blobs) this.addDamage(b.id, { blob: b.id, pack, reason: err.message, snapshots: [], paths: [] })
        return
      }
      for (const b of blobs) {
        const e = header.get(b.id)
        if (!e || e.offset !== b.loc.offset || e.length !== b.loc.length) {
          this.addDamage(b.id, { blob: b.id, pack, reason: `pack ${pack} does not hold the blob where the index says`, snapshots: [], paths: [] })
        }
      }
      if (this.opts.readData) await this.readData(pack, size, blobs, header)
      this.opts.onProgress?.({ phase: "verify", filesDone: ++packsDone, filesTotal: byPack.size, bytesDone: this.report.bytesRead, bytesTotal: 0 })
    })
  }

  private async readHeader(pack: string, size: number): Promise<Map<BlobId, PackEntry>> {
    if (size < TRAILER_BYTES) throw new IntegrityError(`pack ${pack} is truncated`, { pack })
    const trailer = await this.store.readPackRange(pack, size - TRAILER_BYTES, TRAILER_BYTES)
    const { headerLength, digest } = decodeTrailer(trailer, pack)
    const start = size - TRAILER_BYTES - headerLength
    if (start < 0) throw new IntegrityError(`pack ${pack} is truncated`, { pack })
    const header = await this.store.readPackRange(pack, start, headerLength)
    return new Map(decodeHeader(header, digest, size, pack).map((e) => [e.id, e]))
  }

  /**
   * Decodes and checks every blob a snapshot uses in the pack (damage), then
   * what its name vouches for: all its bytes when it is named by them, else
   * its header (checked already) and so its other blobs, decoded and checked
   * in turn. Damage no snapshot reads is a warning.
   */
  private async readData(pack: string, size: number, blobs: Array<{ id: BlobId; loc: BlobLocation }>, header: Map<BlobId, PackEntry>): Promise<void> {
    blobs.sort((a, b) => a.loc.offset - b.loc.offset)
    let bytes: Uint8Array
    try {
      bytes = await this.store.readPackRange(pack, 0, size)
    } catch (err) {
      if (!isDamage(err)) throw err
      for (const b of blobs) this.addDamage(b.id, { blob: b.id, pack, reason: err.message, snapshots: [], paths: [] })
      return
    }
    this.report.bytesRead += bytes.length
    let blobsIntact = true
    for (const b of blobs) {
      try {
        await this.store.decodeChecked(b.id, b.loc.codec, bytes.subarray(b.loc.offset, b.loc.offset + b.loc.length), b.loc.rawLength, pack)
      } catch (err) {
        if (!isDamage(err)) throw err
        blobsIntact = false
        this.addDamage(b.id, { blob: b.id, pack, reason: err.message, snapshots: [], paths: [] })
      }
    }
    if (!blobsIntact) return
    const named = packName(pack, bytes)
    let unread = named === undefined ? "its bytes do not hash to its name" : undefined
    if (named === "header") {
      const used = new Set(blobs.map((b) => b.id))
      for (const e of header.values()) {
        if (used.has(e.id)) continue
        try {
          await this.store.decodeChecked(e.id, e.codec, bytes.subarray(e.offset, e.offset + e.length), e.rawLength, pack)
        } catch (err) {
          if (!isDamage(err)) throw err
          unread = `blob ${e.id}, which no snapshot uses, is damaged`
          break
        }
      }
    }
    if (unread !== undefined) this.report.warnings.push(`pack ${pack}: ${unread}, but every blob a snapshot uses in it checks out (the damage is in bytes no snapshot reads)`)
  }

  /** Records damage once per key; who depends on it is filled in at the end. */
  private addDamage(key: string, d: VerifyDamage): void {
    if (!this.damaged.has(key)) this.damaged.set(key, d)
  }
}

/** Stored data that is missing or wrong; anything else (I/O, abort) is not damage and propagates. */
function isDamage(err: unknown): err is IntegrityError | NotFoundError {
  return err instanceof IntegrityError || err instanceof NotFoundError
}
