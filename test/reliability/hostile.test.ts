// Hostile input that is not a tar or a tree given to restore (those are in
// test/engine/tar.test.ts and test/engine/restore.property.test.ts):
//   - box file paths that try to leave the box ("..", NUL, through symlinks
//     to a directory or a file outside), fixed cases and fast-check paths;
//     nothing outside the box ever changes, refusals are BAD_INPUT/NOT_FOUND;
//   - the decoders on arbitrary bytes (decodeTree, decodeIndexFile,
//     parsePack), also on inputs whose checksums are valid, so the structure
//     checks behind them are reached: a CairnError or a result, never another
//     exception, never a hang;
//   - records: Store.getRecord on garbage, and snapshot records whose fields
//     are garbage, through snapshots.list/get/walk/restore.

import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Box } from "../../engine/box.js"
import { Repository } from "../../engine/repository.js"
import { decodeTree } from "../../engine/tree.js"
import { CairnError } from "../../store/errors.js"
import { decodeIndexFile, encodeIndexFile } from "../../store/index-file.js"
import { encodeHeader, encodeTrailer, parsePack, TRAILER_BYTES } from "../../store/pack.js"
import { buildTree } from "../fixtures.js"
import { FULL, SEED, describeTree, report, tempDir } from "./harness.js"

const RUNS = FULL ? 5_000 : 300
const figures = { boxPathsTried: 0, boxEscapes: 0, decoderInputs: 0, recordsTried: 0, nonCairnErrors: 0, slowCalls: 0 }
const failures: string[] = []
let root: string

beforeAll(async () => {
  root = await tempDir("cairn-rel-hostile-")
})

afterAll(async () => {
  report("hostile", { ...figures, failures: failures.length })
  await fsp.rm(root, { recursive: true, force: true })
})

/** Runs fn on input; anything but a result or a CairnError (or a call slower than 2 s) is a failure. */
function guarded(what: string, input: unknown, fn: () => unknown): void {
  figures.decoderInputs++
  const t0 = performance.now()
  try {
    fn()
  } catch (err) {
    if (!(err instanceof CairnError)) {
      figures.nonCairnErrors++
      failures.push(`${what}: ${String(err)} on ${JSON.stringify(input)?.slice(0, 200)}`)
    }
  }
  if (performance.now() - t0 > 2_000) {
    figures.slowCalls++
    failures.push(`${what}: took ${(performance.now() - t0).toFixed(0)} ms`)
  }
}

describe("box paths that try to leave the box", () => {
  let box: Box
  let outside: string
  let before: Awaited<ReturnType<typeof describeTree>>

  beforeAll(async () => {
    const repo = await Repository.open({ path: path.join(root, "repo") })
    outside = path.join(root, "outside")
    await buildTree(outside, { "secret.txt": { file: "secret\n" }, sub: { dir: { "x.txt": { file: "x\n" } } } })
    before = await describeTree(outside)
    box = await Box.create({ repo, dir: path.join(root, "box") })
    await buildTree(box.dir, {
      "ok.txt": { file: "ok\n" },
      dir: { dir: { "in.txt": { file: "in\n" } } },
      "to-outside": { symlink: outside },
      "to-secret": { symlink: path.join(outside, "secret.txt") },
      "rel-out": { symlink: "../outside" },
      "to-self": { symlink: "dir" },
    })
  })

  afterAll(async () => {
    await box.repo.close()
  })

  const attempts = async (p: string) => {
    const results: Array<{ op: string; err?: unknown }> = []
    const run = async (op: string, fn: () => Promise<unknown>) => {
      try {
        await fn()
        results.push({ op })
      } catch (err) {
        results.push({ op, err })
      }
    }
    await run("write", () => box.files.write({ path: p, content: "PWNED" }))
    await run("read", () => box.files.read(p))
    await run("list", () => box.files.list(p))
    await run("remove", () => box.files.remove(p))
    return results
  }

  const fixed = [
    "../escape.txt",
    "/../escape.txt",
    "dir/../../escape.txt",
    "/dir/../../../outside/secret.txt",
    "../outside/secret.txt",
    "to-outside/secret.txt",
    "/to-outside/new.txt",
    "to-outside/sub/x.txt",
    "to-secret",
    "/rel-out/secret.txt",
    "to-self/in.txt",
    "dir/\0/x",
    "ok.txt\0.png",
    "",
    "/",
  ]

  it("fixed escapes are refused with BAD_INPUT (or NOT_FOUND), and nothing outside changes", async () => {
    const mark = failures.length
    for (const p of fixed) {
      figures.boxPathsTried++
      for (const { op, err } of await attempts(p)) {
        if (err === undefined) {
          // allowed only when the path stays in the box ("/" lists the root; "" is the root too)
          if (!["list"].includes(op) || !(p === "" || p === "/")) failures.push(`box ${op} ${JSON.stringify(p)} succeeded`)
          continue
        }
        if (!(err instanceof CairnError) || !["BAD_INPUT", "NOT_FOUND"].includes(err.code)) {
          figures.nonCairnErrors++
          failures.push(`box ${op} ${JSON.stringify(p)}: ${String(err)}`)
        }
      }
      if (JSON.stringify(await describeTree(outside)) !== JSON.stringify(before)) {
        figures.boxEscapes++
        failures.push(`box path ${JSON.stringify(p)} changed a file outside the box`)
        await fsp.rm(outside, { recursive: true, force: true })
        await buildTree(outside, { "secret.txt": { file: "secret\n" }, sub: { dir: { "x.txt": { file: "x\n" } } } })
      }
    }
    await expect(fsp.readFile(path.join(root, "escape.txt"))).rejects.toThrow()
    expect(failures.slice(mark)).toEqual([])
  })

  it("random paths built from hostile segments never reach outside the box", async () => {
    const mark = failures.length
    const segment = fc.constantFrom("..", ".", "", "dir", "to-outside", "to-secret", "rel-out", "to-self", "new", "ok.txt", "a\0b", "sub", "secret.txt")
    const realBox = await fsp.realpath(box.dir)
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 6 }), fc.boolean(), async (parts, absolute) => {
        const p = (absolute ? "/" : "") + parts.join("/")
        figures.boxPathsTried++
        try {
          const resolved = await box.files.resolve(p, { allowMissing: true })
          const rel = path.relative(realBox, resolved)
          if (rel.startsWith("..") || path.isAbsolute(rel)) failures.push(`box resolve ${JSON.stringify(p)} -> ${resolved}`)
        } catch (err) {
          if (!(err instanceof CairnError)) failures.push(`box resolve ${JSON.stringify(p)}: ${String(err)}`)
        }
        await box.files.write({ path: p, content: "PWNED" }).catch((err) => {
          if (!(err instanceof CairnError) && !["EISDIR", "ENOTDIR", "ENOENT"].includes(err.code)) failures.push(`box write ${JSON.stringify(p)}: ${String(err)}`)
        })
        if (JSON.stringify(await describeTree(outside)) !== JSON.stringify(before)) {
          figures.boxEscapes++
          failures.push(`box write ${JSON.stringify(p)} changed a file outside the box`)
        }
      }),
      { numRuns: FULL ? 2_000 : 150, seed: SEED },
    )
    expect(failures.slice(mark)).toEqual([])
  })
})

describe("decoders on arbitrary bytes", () => {
  it("decodeTree: arbitrary bytes and arbitrary JSON give a tree or a CairnError", () => {
    const mark = failures.length
    const entry = fc.record(
      {
        name: fc.oneof(fc.string(), fc.constantFrom("..", ".", "", "a/b", "a\0b", "ok")),
        type: fc.oneof(fc.constantFrom("file", "dir", "symlink", "fifo"), fc.anything()),
        mode: fc.oneof(fc.integer(), fc.double(), fc.anything()),
        mtime: fc.oneof(fc.string(), fc.bigInt().map(String), fc.anything()),
        uid: fc.oneof(fc.nat(), fc.integer(), fc.anything()),
        gid: fc.oneof(fc.nat(), fc.anything()),
        size: fc.oneof(fc.nat(), fc.double(), fc.anything()),
        chunks: fc.oneof(fc.array(fc.stringMatching(/^[0-9a-f]{64}$/)), fc.anything()),
        link: fc.oneof(fc.string(), fc.constantFrom("../x", "/abs", "a//b")),
        target: fc.oneof(fc.string(), fc.anything()),
        tree: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.anything()),
      },
      { requiredKeys: [] },
    )
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 512 }),
          fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
          fc.array(entry, { maxLength: 6 }).map((entries) => Buffer.from(JSON.stringify({ v: 1, entries }))),
        ),
        (bytes) => guarded("decodeTree", Buffer.from(bytes).toString("base64"), () => decodeTree(bytes, "f".repeat(64))),
      ),
      { numRuns: RUNS, seed: SEED },
    )
    expect(failures.slice(mark)).toEqual([])
  })

  it("decodeIndexFile: arbitrary bytes, and valid files with damaged fields and fixed checksums", () => {
    const mark = failures.length
    const entryArb = fc.record({
      id: fc.stringMatching(/^[0-9a-f]{64}$/),
      kind: fc.nat(255),
      codec: fc.nat(255),
      offset: fc.nat(),
      length: fc.nat(),
      rawLength: fc.nat(),
    })
    const valid = fc
      .array(fc.record({ pack: fc.stringMatching(/^[0-9a-f]{64}$/), entries: fc.array(entryArb, { maxLength: 4 }) }), { maxLength: 4 })
      .map((packs) => encodeIndexFile(packs as never).bytes)
    const reseal = (b: Buffer) => {
      // recompute the trailing checksum so that the structure checks are reached
      if (b.length >= 48) createHash("sha256").update(b.subarray(0, b.length - 32)).digest().copy(b, b.length - 32)
      return b
    }
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
          fc.tuple(valid, fc.nat(), fc.nat(255)).map(([b, at, v]) => {
            const c = Buffer.from(b)
            c[at % c.length] = v
            return reseal(c)
          }),
          fc.tuple(valid, fc.nat(), fc.nat(0xffffffff)).map(([b, at, v]) => {
            const c = Buffer.from(b)
            if (c.length >= 52) c.writeUInt32LE(v, 12 + (at % Math.max(1, c.length - 48 - 4 + 1 - 12)))
            return reseal(c)
          }),
          fc.tuple(valid, fc.nat()).map(([b, cut]) => reseal(Buffer.from(b.subarray(0, cut % (b.length + 1))))),
        ),
        (bytes) => guarded("decodeIndexFile", bytes.toString("base64"), () => decodeIndexFile(bytes, "fuzz")),
      ),
      { numRuns: RUNS, seed: SEED },
    )
    expect(failures.slice(mark)).toEqual([])
  })

  it("parsePack: arbitrary bytes, and packs with damaged headers under valid trailers", () => {
    const mark = failures.length
    const validPack = fc
      .tuple(fc.uint8Array({ maxLength: 300 }), fc.array(fc.record({ id: fc.stringMatching(/^[0-9a-f]{64}$/), offset: fc.nat(400), length: fc.nat(400) }), { maxLength: 4 }))
      .map(([data, es]) => {
        const header = encodeHeader(es.map((e) => ({ ...e, id: e.id as never, kind: 0, codec: 0, rawLength: e.length })))
        return { data: Buffer.from(data), header }
      })
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
          validPack.map(({ data, header }) => Buffer.concat([data, header, encodeTrailer(header)])),
          fc.tuple(validPack, fc.nat(0xffffffff)).map(([{ data, header }, len]) => {
            const t = encodeTrailer(header)
            t.writeUInt32LE(len, 32) // a header length that lies
            return Buffer.concat([data, header, t])
          }),
          fc.tuple(validPack, fc.nat(), fc.nat(255)).map(([{ data, header }, at, v]) => {
            const h = Buffer.from(header)
            if (h.length > 0) h[at % h.length] = v
            return Buffer.concat([data, h, encodeTrailer(h)]) // damaged, but its digest matches
          }),
        ),
        (bytes) =>
          guarded("parsePack", bytes.length, () => {
            const entries = parsePack(bytes, "fuzz")
            for (const e of entries) {
              if (e.offset + e.length > bytes.length - TRAILER_BYTES) throw new Error(`parsePack accepted an entry beyond the data: ${JSON.stringify(e)}`)
            }
          }),
      ),
      { numRuns: RUNS, seed: SEED },
    )
    expect(failures.slice(mark)).toEqual([])
  })
})

describe("records with garbage", () => {
  let repo: Repository
  let repoDir: string

  beforeAll(async () => {
    repoDir = path.join(root, "records-repo")
    repo = await Repository.open({ path: repoDir })
    const src = path.join(root, "records-src")
    await buildTree(src, { "a.txt": { file: "a\n" } })
    await repo.snapshots.create(src, { name: "good" })
  })

  afterAll(async () => {
    await repo.close()
  })

  it("Store.getRecord on garbage bytes gives INTEGRITY, never another exception", async () => {
    const mark = failures.length
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        figures.recordsTried++
        await fsp.writeFile(path.join(repoDir, "snapshots", "snap_00000000000000ff"), bytes)
        try {
          await repo.store.getRecord("snapshots", "snap_00000000000000ff")
        } catch (err) {
          if (!(err instanceof CairnError)) failures.push(`getRecord: ${String(err)}`)
        }
      }),
      { numRuns: FULL ? 1_000 : 100, seed: SEED },
    )
    await fsp.rm(path.join(repoDir, "snapshots", "snap_00000000000000ff"))
    expect(failures.slice(mark)).toEqual([])
  })

  const garbageRecords: Array<[string, unknown]> = [
    ["null", null],
    ["a number", 42],
    ["a string", "snap"],
    ["an array", [1, 2]],
    ["an empty object", {}],
    ["a numeric tree", { id: "snap_00000000000000aa", tree: 5, createdAt: "2026-01-01T00:00:00Z", stats: {} }],
    ["a path as tree", { id: "snap_00000000000000aa", tree: "../../../etc/passwd", createdAt: "2026-01-01T00:00:00Z" }],
    ["an unknown tree", { id: "snap_00000000000000aa", tree: "a".repeat(64), createdAt: "2026-01-01T00:00:00Z" }],
    ["an object createdAt and labels", { id: "snap_00000000000000aa", tree: "b".repeat(64), createdAt: { x: 1 }, labels: 7, stats: null }],
    ["an id that is not its name", { id: "../../x", tree: "c".repeat(64), createdAt: "2026-01-01T00:00:00Z" }],
  ]

  it.each(garbageRecords)("a record that is %s: list/get/walk/restore give a result or a CairnError", async (_label, value) => {
    figures.recordsTried++
    const name = "snap_00000000000000aa"
    await fsp.writeFile(path.join(repoDir, "snapshots", name), JSON.stringify(value))
    const bad: string[] = []
    const check = async (op: string, fn: () => Promise<unknown>) => {
      try {
        await fn()
      } catch (err) {
        if (!(err instanceof CairnError)) {
          figures.nonCairnErrors++
          bad.push(`${op}: ${(err as Error).stack?.split("\n").slice(0, 3).join(" | ")}`)
        }
      }
    }
    await check("list", () => repo.snapshots.list())
    await check("list by label", () => repo.snapshots.list({ label: "k=v" }))
    await check("get", () => repo.snapshots.get(name))
    await check("get by name", () => repo.snapshots.get("good"))
    await check("walk", () => repo.snapshots.walk(name))
    const dest = path.join(root, `garbage-out-${Math.random().toString(16).slice(2)}`)
    await check("restore", () => repo.snapshots.restore(name, dest))
    // nothing is written outside the destination
    await expect(fsp.stat(path.join(root, "etc"))).rejects.toThrow()
    await fsp.rm(path.join(repoDir, "snapshots", name))
    failures.push(...bad)
    expect(bad).toEqual([])
  })
})
