// Tar export/import. Round trips are checked by root tree id: PAX mtimes carry
// nine fraction digits, so nanosecond mtimes (and modes, owners, hardlink
// groups, symlink targets) survive exactly, and equal tree ids are the
// strongest check there is. Only the system-tar test compares trees on disk
// (describeTree, microseconds), because the filesystem is the limit there.
import { spawn } from "node:child_process"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { PassThrough, Readable, Writable } from "node:stream"
import fc from "fast-check"
import tarStream from "tar-stream"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Ingestor } from "../../engine/ingest.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { exportTar, importTar, nsToPaxTime, paxTimeToNs } from "../../engine/tar.js"
import type { TreeEntry } from "../../engine/tree.js"
import type { SnapshotRecord } from "../../engine/types.js"
import { resolvePath } from "../../engine/walk.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { CairnError, isCairnError } from "../../store/errors.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

async function newStore(): Promise<Store> {
  return Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 256 * 1024 } })
}

async function exportToBuffer(store: Store, snapshot: SnapshotRecord, subPath?: string): Promise<Buffer> {
  const out = new PassThrough()
  const parts: Buffer[] = []
  out.on("data", (b: Buffer) => parts.push(b))
  await exportTar(store, snapshot, out, { subPath })
  return Buffer.concat(parts)
}

function importBuffer(store: Store, bytes: Uint8Array, name = "t") {
  return importTar(store, Readable.from([Buffer.from(bytes)]), { name })
}

type PackEntry = { header: Parameters<tarStream.Pack["entry"]>[0] & { pax?: Record<string, string> }; data?: string | Buffer }

/** A tar made with tar-stream's pack(). */
async function packTar(entries: PackEntry[]): Promise<Buffer> {
  const pack = tarStream.pack()
  const parts: Buffer[] = []
  const done = (async () => {
    for await (const b of pack as AsyncIterable<Buffer>) parts.push(b)
  })()
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve())
      if (e.data !== undefined) pack.entry(e.header, e.data, cb)
      else pack.entry(e.header, cb)
    })
  }
  pack.finalize()
  await done
  return Buffer.concat(parts)
}

// ---- raw ustar blocks, for what pack() cannot write (bad UTF-8, lying sizes) ----

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0"
}

function rawHeader(o: { name: Buffer | string; type: string; size?: number; mode?: number; linkname?: Buffer | string }): Buffer {
  const b = Buffer.alloc(512)
  Buffer.from(o.name).copy(b, 0, 0, 100)
  b.write(octal(o.mode ?? 0o644, 8), 100, "latin1")
  b.write(octal(0, 8), 108, "latin1")
  b.write(octal(0, 8), 116, "latin1")
  b.write(octal(o.size ?? 0, 12), 124, "latin1")
  b.write(octal(1_700_000_000, 12), 136, "latin1")
  b.write("        ", 148, "latin1")
  b.write(o.type, 156, "latin1")
  if (o.linkname !== undefined) Buffer.from(o.linkname).copy(b, 157, 0, 100)
  b.write("ustar\u000000", 257, "latin1")
  let sum = 0
  for (const x of b) sum += x
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1")
  return b
}

function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)])
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")])
  let len = body.length + 1
  while (String(len).length + body.length !== len) len = String(len).length + body.length
  return Buffer.concat([Buffer.from(String(len)), body])
}

function rawTar(...blocks: Buffer[]): Buffer {
  return Buffer.concat([...blocks, Buffer.alloc(1024)])
}

// ---- fixtures -----------------------------------------------------------

const US = 1_000n // ns per microsecond

const diskSpec: DirSpec = {
  "a.txt": { file: "hello", mode: 0o640, mtimeNs: 1_700_000_000_123_456_000n },
  "big.bin": { file: seededBytes("big", 3_000_000) },
  "text.txt": { file: textBytes("t", 500_000), mtimeNs: 1_600_000_000_000_001n * US },
  empty: { file: "" },
  "exec.sh": { file: "#!/bin/sh\n", mode: 0o755 },
  "zero-mode": { file: "secret", mode: 0o000 },
  "setgid-ish": { file: "s", mode: 0o2750 },
  aa: { dir: { deep: { dir: { "holder.txt": { file: "shared content" } } } } },
  sub: {
    dir: {
      deeper: { dir: { "x y é.txt": { file: "unicode" }, "日本語-ファイル": { file: "nihongo" }, "🦀.rs": { file: "crab" } } },
      nothing: { dir: {} },
      "rel-link": { symlink: "deeper/x y é.txt" },
      "up-link": { symlink: "../a.txt" },
      "inner-1": { file: "inner group" },
    },
    mode: 0o750,
  },
  "empty-dir": { dir: {}, mode: 0o700 },
  link: { symlink: "a.txt" },
  "dir-link": { symlink: "sub/deeper" },
  ["long-name-".padEnd(180, "x")]: { file: "a name longer than ustar's 100 bytes" },
  "long-target": { symlink: "sub/" + "./".repeat(80) + "deeper" },
  // hardlinks: the group's holder (first in depth-first order) sits deep, members elsewhere
  "h-root": { hardlink: "aa/deep/holder.txt" },
  zz: { dir: { "h-deep": { hardlink: "aa/deep/holder.txt" }, "inner-2": { hardlink: "sub/inner-1" } } },
}

let store: Store
let src: string
let original: SnapshotRecord

beforeAll(async () => {
  store = await newStore()
  src = await tempDir()
  await buildTree(src, diskSpec)
  const { snapshot, warnings } = await createSnapshot(store, src, { name: "orig" })
  expect(warnings).toEqual([])
  original = snapshot
})

afterAll(async () => {
  await store?.close()
})

describe("exportTar / importTar round trip", () => {
  it("gives back the same root tree (files, empty files and dirs, symlinks, hardlinks, unicode, modes, ns mtimes)", async () => {
    const tar = await exportToBuffer(store, original)
    const { snapshot, warnings } = await importBuffer(store, tar, "copy")
    expect(warnings).toEqual([])
    expect(snapshot.tree).toBe(original.tree)
    expect(snapshot.source).toBe("tar:copy")
    expect(snapshot.sizeBytes).toBe(original.sizeBytes)
    expect(snapshot.stats).toMatchObject({
      files: original.stats.files,
      dirs: original.stats.dirs,
      symlinks: original.stats.symlinks,
      logicalBytes: original.stats.logicalBytes,
      storedBytes: original.stats.storedBytes,
      addedBytes: 0,
    })
    expect(await store.listRecordNames("snapshots")).toContain(snapshot.id)
  })

  it("keeps what a disk cannot: ns mtimes, pre-1970 and post-2038 times, mode 0, large uid/gid", async () => {
    const s = await newStore()
    const ingest = new Ingestor(s)
    const chunks = await ingest.ingestBuffer(Buffer.from("content"))
    const inner: TreeEntry[] = [
      { name: "ns", type: "file", mode: 0o644, mtime: "1700000000123456789", uid: 1000, gid: 1000, size: 7, chunks },
      { name: "old", type: "file", mode: 0, mtime: "-1500000001", uid: 0, gid: 0, size: 7, chunks },
      { name: "future", type: "file", mode: 0o4755, mtime: "4102444800000000007", uid: 4_000_000_000, gid: 3_000_000, size: 7, chunks },
      { name: "epoch", type: "symlink", mode: 0o777, mtime: "0", uid: 5, gid: 6, target: "ns" },
      { name: "grp", type: "file", mode: 0o600, mtime: "1", uid: 0, gid: 0, size: 7, link: "d/ns" },
      // 101 bytes with its dir: plain ustar with the name split into prefix and name
      { name: "n".repeat(99), type: "file", mode: 0o644, mtime: "1700000000000000000", uid: 1, gid: 1, size: 7, chunks },
    ]
    const innerTree = await ingest.putTree(inner)
    const root = await ingest.putTree([
      { name: "d", type: "dir", mode: 0o711, mtime: "999999999999999999", uid: 2_097_152, gid: 7, size: 28, tree: innerTree },
    ])
    await s.flush()
    const fake = { ...original, tree: root }
    const { snapshot } = await importBuffer(s, await exportToBuffer(s, fake))
    expect(snapshot.tree).toBe(root)
    await s.close()
  })

  it("PAX times parse and print exactly", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 18n), max: 10n ** 19n }), (ns) => {
        expect(paxTimeToNs(nsToPaxTime(ns))).toBe(ns)
      }),
    )
    expect(paxTimeToNs("12.5")).toBe(12_500_000_000n)
    expect(paxTimeToNs("1.1234567891")).toBe(1_123_456_789n)
    expect(paxTimeToNs("x")).toBeUndefined()
  })

  it("exports a sub-path: a directory gives back its subtree", async () => {
    const sub = await resolvePath(store, original.tree, "aa")
    if (sub.type !== "dir") throw new Error("fixture")
    const { snapshot } = await importBuffer(store, await exportToBuffer(store, original, "/aa/"))
    expect(snapshot.tree).toBe(sub.tree)
  })

  it("exports a sub-path whose hardlinks point outside it: the first member carries the content", async () => {
    const tar = await exportToBuffer(store, original, "zz")
    const { snapshot } = await importBuffer(store, tar)
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(store, snapshot, dest)
    const listing = await describeTree(dest, { mtimes: false })
    const want = await describeTree(path.join(src, "zz"), { mtimes: false })
    // on disk they are hardlinked to files outside zz; in the export each stands alone
    expect(Object.keys(listing).sort()).toEqual(Object.keys(want).sort())
    expect(listing["h-deep"]?.split(" ").slice(0, 4)).toEqual(want["h-deep"]?.split(" ").slice(0, 4))
    expect(listing["inner-2"]?.split(" ").slice(0, 4)).toEqual(want["inner-2"]?.split(" ").slice(0, 4))
  })

  it("exports a single file as a one-entry archive", async () => {
    const tar = await exportToBuffer(store, original, "sub/deeper/x y é.txt")
    const names: string[] = []
    const extract = tarStream.extract()
    const reading = (async () => {
      for await (const e of extract) {
        names.push(e.header.name)
        e.resume()
      }
    })()
    Readable.from([tar]).pipe(extract as unknown as NodeJS.WritableStream)
    await reading
    expect(names).toEqual(["x y é.txt"])
  })

  it("round-trips a hardlink whose holder sorts after its member (holder written first, member right after)", async () => {
    const s = await newStore()
    const tar = await packTar([file("z/holder", "content"), hardlink("a", "z/holder"), hardlink("m/b", "a")])
    const first = await importBuffer(s, tar)
    const a = await resolvePath(s, first.snapshot.tree, "a")
    const b = await resolvePath(s, first.snapshot.tree, "m/b")
    expect(a).toMatchObject({ type: "file", link: "z/holder", size: 7 })
    expect(b).toMatchObject({ type: "file", link: "z/holder", size: 7 })
    const again = await importBuffer(s, await exportToBuffer(s, first.snapshot))
    expect(again.snapshot.tree).toBe(first.snapshot.tree)
    await s.close()
  })

  it("stops without hanging when the output fails, and destroys it", async () => {
    let taken = 0
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        taken += chunk.length
        setImmediate(() => cb(taken > 200_000 ? new Error("disk full") : null))
      },
    })
    await expect(exportTar(store, original, out)).rejects.toThrow("disk full")
    expect(out.destroyed).toBe(true)
    expect(await store.listRecordNames("locks")).toEqual([])
  })

  it("stops, its lock released, when the output failed before export waited for it (stdout after EPIPE)", async () => {
    // like process.stdout on a pipe whose reader left: a queued write failed, the stream is destroyed,
    // its error and close events are past, and each write returns false with no event to come
    const out = new Writable({ write: (_chunk: Buffer, _enc, cb) => cb() })
    out.on("error", () => {}) // the CLI's own listener, which keeps the error from being unhandled
    out.destroy(Object.assign(new Error("write EPIPE"), { code: "EPIPE" }))
    await new Promise((resolve) => setImmediate(resolve))
    const outcome = await Promise.race([
      exportTar(store, original, out).then(
        () => "finished",
        (err: Error) => err.message,
      ),
      new Promise((resolve) => setTimeout(() => resolve("hung"), 5_000)),
    ])
    expect(outcome).toMatch(/EPIPE|closed/)
    expect(await store.listRecordNames("locks")).toEqual([])
  })

  it("honours an aborted signal on export and import", async () => {
    const ctl = new AbortController()
    ctl.abort()
    await expect(exportTar(store, original, new PassThrough(), { signal: ctl.signal })).rejects.toMatchObject({ code: "ABORTED" })
    const s = await newStore()
    const tar = await exportToBuffer(store, original)
    await expect(importTar(s, Readable.from([tar]), { signal: ctl.signal })).rejects.toMatchObject({ code: "ABORTED" })
    expect(await s.listRecordNames("snapshots")).toEqual([])
    await s.close()
  })

  it("reports a failing input stream as IO, not as bad input", async () => {
    const s = await newStore()
    const tar = await exportToBuffer(store, original)
    const input = new Readable({ read() {} })
    input.push(tar.subarray(0, 4096))
    setImmediate(() => input.destroy(new Error("connection reset")))
    await expect(importTar(s, input)).rejects.toMatchObject({ code: "IO", message: expect.stringMatching(/connection reset/) })
    expect(await s.listRecordNames("snapshots")).toEqual([])
    await s.close()
  })

  it("is read by the system tar, and what it extracts equals what cairn restores", async () => {
    const listing = await runTar(["-tvf", "-"], original)
    expect(listing).toContain("sub/deeper/x y é.txt")
    expect(listing).toMatch(/h-root link to aa\/deep\/holder\.txt/)
    expect(listing).toMatch(/link -> a\.txt/)
    const extracted = await tempDir()
    await runTar(["-xpf", "-", "-C", extracted], original)
    const restored = path.join(await tempDir(), "out")
    await restoreSnapshot(store, original, restored)
    expect(await describeTree(extracted)).toEqual(await describeTree(restored))
    expect(await describeTree(extracted)).toEqual(await describeTree(src))
  })
})

async function runTar(args: string[], snapshot: SnapshotRecord): Promise<string> {
  const child = spawn("tar", args, { stdio: ["pipe", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString("utf8")))
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString("utf8")))
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
  await exportTar(store, snapshot, child.stdin)
  const code = await exited
  if (code !== 0) throw new Error(`tar ${args.join(" ")} exited ${code}: ${stderr}`)
  expect(stderr).toBe("")
  return stdout
}

// ---- hostile input ---------------------------------------------------------

const file = (name: string, data = "x", extra: Partial<PackEntry["header"]> = {}): PackEntry => ({ header: { name, type: "file", ...extra }, data })
const dir = (name: string): PackEntry => ({ header: { name, type: "directory" } })
const symlink = (name: string, target: string): PackEntry => ({ header: { name, type: "symlink", linkname: target } })
const hardlink = (name: string, target: string): PackEntry => ({ header: { name, type: "link", linkname: target } })

const hostile: Array<[string, () => Promise<Buffer>, RegExp]> = [
  ["a '..' component", () => packTar([file("a/../../etc/passwd")]), /"a\/\.\.\/\.\.\/etc\/passwd".*"\.\."/],
  ["a leading '..'", () => packTar([file("../x")]), /"\.\.\/x"/],
  ["an absolute path", () => packTar([file("/etc/passwd")]), /"\/etc\/passwd".*absolute/],
  ["NUL in a (PAX) name", () => packTar([file("a\0b", "x", { pax: {} })]), /NUL/],
  ["an empty name", () => packTar([file("")]), /empty/],
  ["a name that is not UTF-8 (ustar)", async () => rawTar(rawHeader({ name: Buffer.from([0x61, 0xff, 0x62]), type: "0" })), /not valid UTF-8/],
  [
    "a name that is not UTF-8 (PAX)",
    async () => {
      const pax = paxRecord("path", Buffer.from([0x63, 0xc3, 0x28]))
      return rawTar(rawHeader({ name: "PaxHeader", type: "x", size: pax.length }), padded(pax), rawHeader({ name: "c", type: "0" }))
    },
    /not valid UTF-8/,
  ],
  ["a symlink target that is not UTF-8", async () => rawTar(rawHeader({ name: "l", type: "2", linkname: Buffer.from([0x80]) })), /symlink target is not valid UTF-8/],
  ["an absolute symlink target", () => packTar([symlink("l", "/etc/passwd")]), /"l".*absolute/],
  ["a symlink escaping the root", () => packTar([symlink("l", "../outside")]), /"l".*leaves the archive root/],
  ["a deep symlink escaping the root", () => packTar([dir("a"), symlink("a/b/l", "../../../x")]), /"a\/b\/l".*leaves/],
  ["a symlink escaping through another symlink", () => packTar([symlink("d", "."), symlink("x", "d/..")]), /"x".*through other symlinks/],
  ["a symlink escaping through a later symlink", () => packTar([symlink("x", "d/.."), symlink("d", ".")]), /"x".*through other symlinks/],
  ["an empty symlink target", async () => rawTar(rawHeader({ name: "l", type: "2" })), /"l".*empty/],
  ["a hardlink to an absolute path", () => packTar([hardlink("h", "/etc/passwd")]), /"h".*outside the archive/],
  ["a hardlink out of the archive", () => packTar([file("a"), hardlink("h", "../a")]), /"h".*outside the archive/],
  ["a hardlink to a later file", () => packTar([hardlink("h", "later"), file("later")]), /"h".*not an earlier regular file/],
  ["a hardlink to a directory", () => packTar([dir("d"), hardlink("h", "d")]), /"h".*not an earlier regular file/],
  ["a hardlink to a symlink", () => packTar([symlink("s", "x"), hardlink("h", "s")]), /"h".*not an earlier regular file/],
  ["a hardlink through a symlink", () => packTar([dir("d"), file("d/f"), symlink("s", "d"), hardlink("h", "s/f")]), /"h".*not an earlier/],
  ["a hardlink to itself", () => packTar([file("f"), hardlink("f", "f")]), /"f".*itself/],
  ["a file below a symlink", () => packTar([symlink("a", "b"), dir("b"), file("a/x")]), /"a\/x".*goes through "a", which is a symlink/],
  ["a directory below a symlink", () => packTar([symlink("a", "."), dir("a/d")]), /"a\/d".*symlink/],
  ["a file below a file", () => packTar([file("a"), file("a/x")]), /"a\/x".*which is a file/],
  ["a file replacing a directory with entries", () => packTar([file("d/x"), file("d")]), /"d".*replace the directory/],
  ["a symlink replacing a directory with entries", () => packTar([file("d/x"), symlink("d", "e")]), /"d".*replace the directory/],
  [
    "a file shorter than declared (truncated archive)",
    async () => (await packTar([file("big", "y".repeat(5000))])).subarray(0, 512 + 1024),
    /malformed or truncated.*"big"/,
  ],
  [
    "a header cut short",
    async () => (await packTar([file("a", "data"), file("b", "more")])).subarray(0, 1024 + 100),
    /malformed or truncated/,
  ],
  ["a directory declaring data", async () => rawTar(rawHeader({ name: "d/", type: "5", size: 1 }), padded(Buffer.from("z"))), /"d\/".*declares 1 bytes/],
  ["a symlink declaring data", async () => rawTar(rawHeader({ name: "l", type: "2", size: 3, linkname: "x" }), padded(Buffer.from("abc"))), /"l".*declares 3 bytes/],
  ["a hardlink declaring data", async () => rawTar(rawHeader({ name: "f", type: "0", size: 1 }), padded(Buffer.from("a")), rawHeader({ name: "h", type: "1", size: 1, linkname: "f" }), padded(Buffer.from("a"))), /"h".*declares 1 bytes/],
  ["a malformed PAX mtime", () => packTar([file("f", "x", { pax: { mtime: "soon" } })]), /"f".*PAX mtime/],
  ["a GNU sparse file", () => packTar([file("f", "x", { pax: { "GNU.sparse.major": "1", "GNU.sparse.minor": "0" } })]), /"f".*sparse/],
  ["a path deeper than 1000 levels", () => packTar([file(Array.from({ length: 1001 }, () => "d").join("/"))]), /deeper than 1000/],
  ["garbage", async () => Buffer.from("this is not a tar archive at all".repeat(40)), /malformed or truncated/],
]

describe("importTar refuses hostile archives, writing no snapshot", () => {
  for (const [what, make, message] of hostile) {
    it(`refuses ${what}`, async () => {
      const s = await newStore()
      try {
        const err = await importBuffer(s, await make()).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(err).toBeInstanceOf(CairnError)
        expect((err as CairnError).code).toBe("BAD_INPUT")
        expect((err as CairnError).message).toMatch(message)
        expect(await s.listRecordNames("snapshots")).toEqual([])
        expect(await s.listRecordNames("locks")).toEqual([])
      } finally {
        await s.close()
      }
    })
  }

  it("keeps symlinks that point outside the archive only when asked, and a restore never follows them", async () => {
    const outside = await tempDir()
    const entries = [symlink("abs", outside), symlink("up", "../../x"), dir("d"), symlink("d/loop", "../d/.."), symlink("d/self", "."), symlink("esc", "d/self/..")]
    const tar = await packTar(entries)
    const s = await newStore()
    try {
      const refused = await importBuffer(s, tar).then(
        () => undefined,
        (e: unknown) => e as CairnError,
      )
      expect(refused?.code).toBe("BAD_INPUT")
      expect(refused?.message).toMatch(/"abs".*absolute path; .*externalSymlinks: true \(cairn import --external-symlinks\)/)
      const { snapshot } = await importTar(s, Readable.from([tar]), { name: "t", externalSymlinks: true })
      expect(snapshot.stats).toMatchObject({ files: 0, symlinks: 5 })
      // entries below a symlink stay refused: that would write through the link
      const below = await importTar(s, Readable.from([await packTar([symlink("abs", outside), file("abs/x")])]), { externalSymlinks: true }).then(
        () => undefined,
        (e: unknown) => e as CairnError,
      )
      expect(below?.message).toMatch(/"abs\/x".*goes through "abs", which is a symlink/)
      const dest = path.join(await tempDir(), "out")
      await restoreSnapshot(s, snapshot, dest)
      expect(await fsp.readlink(path.join(dest, "abs"))).toBe(outside)
      expect(await fsp.readlink(path.join(dest, "up"))).toBe("../../x")
      expect(await fsp.readlink(path.join(dest, "d", "loop"))).toBe("../d/..")
      expect(await fsp.readdir(outside)).toEqual([])
    } finally {
      await s.close()
    }
  })

  it("a snapshot holding a link to outside its directory exports and imports back with externalSymlinks", async () => {
    const src = await tempDir()
    await buildTree(src, { "f.txt": { file: "x" }, abs: { symlink: "/usr/bin/env" }, up: { symlink: "../sibling" } })
    const s = await newStore()
    try {
      const snap = (await createSnapshot(s, src, { name: "links" })).snapshot
      const tar = await exportToBuffer(s, snap)
      await expect(importBuffer(s, tar)).rejects.toThrow(/absolute path/)
      const { snapshot } = await importTar(s, Readable.from([tar]), { externalSymlinks: true })
      expect(snapshot.tree).toBe(snap.tree)
    } finally {
      await s.close()
    }
  })

  it("skips devices and FIFOs with a warning", async () => {
    const s = await newStore()
    const tar = await packTar([
      file("keep", "kept"),
      { header: { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3 } },
      { header: { name: "dev/sda", type: "block-device", devmajor: 8, devminor: 0 } },
      { header: { name: "pipe", type: "fifo" } },
    ])
    const { snapshot, warnings } = await importBuffer(s, tar)
    expect(warnings).toEqual([
      { path: "dev/null", reason: "character device skipped" },
      { path: "dev/sda", reason: "block device skipped" },
      { path: "pipe", reason: "FIFO skipped" },
    ])
    // a skipped entry leaves no trace, not even its implicit parent
    expect(snapshot.stats).toMatchObject({ files: 1, dirs: 0, symlinks: 0 })
    await s.close()
  })

  it("lets a later entry replace an earlier one, as tar does", async () => {
    const s = await newStore()
    const tar = await packTar([
      file("f", "first"),
      hardlink("g", "f"),
      file("f", "second"), // g keeps "first": it becomes the holder of that content
      dir("e"),
      file("e", "an empty dir may be replaced"),
      file("./d/x", "one"),
      { header: { name: "d", type: "directory", mode: 0o700 } }, // a dir over a dir: metadata only
      symlink("s", "f"),
      symlink("s", "e"),
    ])
    const { snapshot } = await importBuffer(s, tar)
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(s, snapshot, dest)
    expect(await fsp.readFile(path.join(dest, "f"), "utf8")).toBe("second")
    expect(await fsp.readFile(path.join(dest, "g"), "utf8")).toBe("first")
    expect(await fsp.readFile(path.join(dest, "e"), "utf8")).toBe("an empty dir may be replaced")
    expect(await fsp.readFile(path.join(dest, "d", "x"), "utf8")).toBe("one")
    expect((await fsp.stat(path.join(dest, "d"))).mode & 0o7777).toBe(0o700)
    expect(await fsp.readlink(path.join(dest, "s"))).toBe("e")
    await s.close()
  })

  it("creates implicit parents with mode 0755 and the import's time", async () => {
    const s = await newStore()
    const before = BigInt(Date.now()) * 1_000_000n
    const { snapshot } = await importBuffer(s, await packTar([file("p/q/r", "deep")]))
    const p = await resolvePath(s, snapshot.tree, "p/q")
    expect(p.type).toBe("dir")
    expect(p.mode).toBe(0o755)
    expect(BigInt(p.mtime) >= before - 1_000_000n).toBe(true)
    await s.close()
  })
})

describe("importTar on arbitrary bytes", () => {
  const settle = async (s: Store, bytes: Uint8Array) => {
    let timer: NodeJS.Timeout | undefined
    const hang = new Promise<"hang">((resolve) => (timer = setTimeout(() => resolve("hang"), 10_000)))
    const outcome = await Promise.race([
      importBuffer(s, bytes).then(
        () => "ok" as const,
        (err: unknown) => (isCairnError(err) ? ("refused" as const) : err),
      ),
      hang,
    ])
    clearTimeout(timer)
    return outcome
  }

  it("never crashes or hangs: random bytes import or are refused with a CairnError", async () => {
    const s = await newStore()
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), async (bytes) => {
        const outcome = await settle(s, bytes)
        expect(outcome === "ok" || outcome === "refused").toBe(true)
      }),
      { numRuns: 150 },
    )
    await s.close()
  })

  it("never crashes or hangs: damaged real archives import or are refused with a CairnError", async () => {
    const s = await newStore()
    const base = await packTar([
      dir("d"),
      file("d/a", "alpha"),
      { header: { name: "d/ü-long-".padEnd(150, "n"), type: "file", pax: { mtime: "1.5" } }, data: "beta" },
      symlink("d/l", "a"),
      hardlink("h", "d/a"),
      file("e", "x".repeat(1500)),
    ])
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat({ max: base.length }),
        async (edits, cut) => {
          const bytes = Buffer.from(base.subarray(0, Math.max(cut, base.length - 2048)))
          for (const [at, v] of edits) if (at < bytes.length) bytes[at] = v
          const outcome = await settle(s, bytes)
          expect(outcome === "ok" || outcome === "refused").toBe(true)
        },
      ),
      { numRuns: 200 },
    )
    await s.close()
  })
})
