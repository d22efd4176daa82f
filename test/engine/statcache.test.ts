// The incremental cache's file (engine/statcache.ts): what is saved loads back
// exactly; anything else, old or damaged, loads as no cache.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { loadStatCache, saveStatCache, StatCacheWriter, writeStatCache, type CachedBlob, type CachedEntry, type StatCache, type StatCacheView } from "../../engine/statcache.js"
import { hashBytes, type BlobId } from "../../store/ids.js"
import { runWithNatives, tempDir } from "../helpers.js"

const id = (seed: string): BlobId => hashBytes(Buffer.from(seed))

const name = fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }).filter((s) => !s.includes("/"))
const ns = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })
const blob: fc.Arbitrary<CachedBlob> = fc.record({ id: fc.string().map(id), length: fc.oneof(fc.constant(-1), fc.nat()) })
const entry: fc.Arbitrary<CachedEntry> = fc
  .record({
    kind: fc.constantFrom("file", "link", "dir", "symlink"),
    size: fc.maxSafeNat(),
    mtimeNs: ns,
    ctimeNs: ns,
    ino: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    chunks: fc.array(blob, { maxLength: 4 }),
    treeMtime: fc.option(ns.map(String), { nil: undefined }),
    tree: fc.option(fc.record({ id: fc.string().map(id), length: fc.integer({ min: -1, max: 1e9 }), size: fc.maxSafeNat(), entries: fc.nat() }), { nil: undefined }),
    names: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
  })
  .map((e) => {
    const { treeMtime, tree, names, ...rest } = e
    return {
      ...rest,
      chunks: e.kind === "file" ? e.chunks : [],
      ...(treeMtime !== undefined && treeMtime !== String(e.mtimeNs) ? { treeMtime } : {}),
      ...(tree !== undefined && e.kind === "dir" ? { tree } : {}),
      ...(names !== undefined && e.kind === "dir" ? { names } : {}),
    }
  })

/** The names the cache's listing of rel must give: its entries in rel, when the cache has as many as its listing had. */
function listingOf(list: ReadonlyArray<readonly [string, CachedEntry]>, rel: string): string[] | undefined {
  const e = list.find(([r]) => r === rel)?.[1]
  const prefix = rel === "" ? "" : `${rel}/`
  const names = list.filter(([r]) => r !== "" && r.startsWith(prefix) && !r.slice(prefix.length).includes("/")).map(([r]) => r.slice(prefix.length))
  return e?.kind === "dir" && e.names === names.length ? names.sort() : undefined
}

/** Every entry of a view, for the rels given. */
const entriesOf = (view: StatCacheView, rels: Iterable<string>) => new Map([...rels].map((rel) => [rel, view.get(rel)]))

describe("stat cache file", () => {
  it("gives the trees of the directories it loads one hidden class (a no-change snapshot asks for every directory's)", async () => {
    const dir = await tempDir()
    const same = runWithNatives(`
      const { saveStatCache, loadStatCache } = await build("engine/statcache.js")
      const entries = new Map()
      for (let i = 0; i < 300; i++) {
        const tree = { id: i.toString(16).padStart(64, "0"), length: 100 + i, size: i, entries: 1 }
        entries.set("d" + i, { kind: "dir", size: 0, mtimeNs: 1n, ctimeNs: 1n, ino: BigInt(i + 1), chunks: [], tree })
      }
      await saveStatCache(${JSON.stringify(dir)}, "k", { entries, patterns: [], indexFiles: [] })
      const cache = await loadStatCache(${JSON.stringify(dir)}, "k")
      const trees = [...Array(300).keys()].map((i) => cache.get("d" + i).tree)
      console.log(trees.filter((t) => t.size >= 0 && %HaveSameMap(t, trees[0])).length)`)
    expect(Number(same)).toBe(300)
  })

  it("loads back what was saved", async () => {
    const dir = await tempDir()
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(fc.array(name, { minLength: 0, maxLength: 3 }).map((n) => n.join("/")), entry), { selector: ([rel]) => rel, maxLength: 30 }),
        fc.option(fc.array(fc.string()), { nil: undefined }),
        fc.option(fc.array(fc.string().map((s) => id(s).slice(0, 16))), { nil: undefined }),
        fc.option(fc.maxSafeNat(), { nil: undefined }),
        async (list, patterns, indexFiles, storedBytes) => {
          const cache: StatCache = { entries: new Map(list), ...(patterns ? { patterns } : {}), ...(indexFiles ? { indexFiles } : {}), ...(storedBytes !== undefined ? { storedBytes } : {}) }
          await saveStatCache(dir, "k", cache)
          const view = await loadStatCache(dir, "k")
          expect(entriesOf(view, cache.entries.keys())).toEqual(cache.entries)
          expect(view.get("no/such/entry")).toBeUndefined()
          for (const [rel, e] of list) {
            expect(view.matches(rel, e.kind, e)).toBe(true)
            expect(view.matches(rel, e.kind === "file" ? "link" : "file", e)).toBe(false)
            for (const field of ["size", "mtimeNs", "ctimeNs", "ino"] as const) {
              const other = typeof e[field] === "bigint" ? (e[field] as bigint) ^ 1n : (e[field] as number) + 1
              expect(view.matches(rel, e.kind, { ...e, [field]: other })).toBe(false)
            }
          }
          expect(view.matches("no/such/entry", "file", list[0]?.[1] ?? { size: 0, mtimeNs: 0n, ctimeNs: 0n, ino: 0n })).toBe(false)
          for (const [rel, e] of list) {
            const names = listingOf(list, rel)
            expect(view.listing(rel, e)?.names.sort()).toEqual(names)
            if (names) for (const field of ["mtimeNs", "ctimeNs", "ino"] as const) expect(view.listing(rel, { ...e, [field]: e[field] ^ 1n })).toBeUndefined()
          }
          expect(view.patterns).toEqual(patterns)
          expect(view.indexFiles).toEqual(indexFiles)
          expect(view.storedBytes).toEqual(storedBytes)
          const blobs = list.flatMap(([, e]) => (e.tree ? [e.tree] : e.chunks)).map((b) => ({ id: b.id, length: b.length }))
          expect([...view.blobs()].map((b) => ({ id: b.id, length: b.length }))).toEqual(blobs)
          expect(view.someLengthUnknown).toBe(blobs.some((b) => b.length < 0))
        },
      ),
      { numRuns: 200 },
    )
  })

  it("lists a directory from its entries only while its stat is as cached and they are as many as its listing had, in whatever order they were written", async () => {
    const dir = await tempDir()
    const d = (names: number | undefined, ino: bigint): CachedEntry => ({ kind: "dir", size: 0, mtimeNs: 5n, ctimeNs: 6n, ino, chunks: [], ...(names !== undefined ? { names } : {}) })
    const f: CachedEntry = { kind: "file", size: 1, mtimeNs: 5n, ctimeNs: 6n, ino: 9n, chunks: [{ id: id("x"), length: 1 }] }
    const rows: Array<[string, CachedEntry]> = [
      ["", d(5, 1n)],
      ["empty", d(0, 6n)],
      ["a", f],
      ["sub", d(3, 2n)],
      ["sub/x y", f],
      ["sub/ünï", { ...f, kind: "symlink", chunks: [] }],
      ["sub/deep", d(1, 3n)], // its listing had 1 name, the cache holds 3: not its listing
      ["sub/deep/1", f],
      ["sub/deep/2", f],
      ["sub/deep/3", f],
      ["short", d(2, 4n)], // its listing had 2, the cache holds 1 (one left out, or ignored)
      ["short/only", f],
      ["unknown", d(undefined, 5n)],
      ["unknown/z", f],
    ]
    const at = (rel: string) => rows.find(([r]) => r === rel)![1]
    const shuffled = rows.map((r, i) => [r, (i * 7) % rows.length] as const).sort((x, y) => x[1] - y[1]).map(([r]) => r)
    for (const order of [rows, [...rows].reverse(), shuffled]) {
      await saveStatCache(dir, "k", { entries: new Map(order) })
      const view = await loadStatCache(dir, "k")
      expect(view.listing("", at(""))?.names.sort()).toEqual(["a", "empty", "short", "sub", "unknown"])
      expect(view.listing("empty", at("empty"))?.names).toEqual([])
      expect(view.listing("sub", at("sub"))?.names.sort()).toEqual(["deep", "x y", "ünï"])
      for (const rel of ["sub/deep", "short", "unknown", "a", "nowhere"]) expect(view.listing(rel, rel === "nowhere" ? at("") : at(rel))).toBeUndefined()
      // the numbers a listing gives find the entries without their paths; a wrong number is only a hint (the path decides)
      const sub = view.listing("sub", at("sub"))!
      sub.names.forEach((name, k) => {
        const rel = `sub/${name}`
        expect(view.get(rel, sub.at[k])).toEqual(at(rel))
        expect(view.matches(rel, at(rel).kind, at(rel), sub.at[k])).toBe(true)
        for (const wrong of [sub.at[(k + 1) % 3]!, -1, 1e6]) expect(view.get(rel, wrong)).toEqual(at(rel))
      })
      expect(view.get("sub/none", sub.at[0])).toBeUndefined()
      expect(view.listing("sub/deep", at("sub/deep"), sub.at[sub.names.indexOf("deep")])).toBeUndefined()
      // changed since: a name made, removed or renamed in it changes its mtime and ctime; another inode is another directory
      for (const change of [{ mtimeNs: 7n }, { ctimeNs: 7n }, { ino: 99n }]) expect(view.listing("sub", { ...at("sub"), ...change })).toBeUndefined()
    }
  })

  it("entries copied from a loaded cache, mixed with new ones in any order, load back as they were", async () => {
    const dir = await tempDir()
    const entries = fc.uniqueArray(fc.tuple(fc.array(name, { minLength: 0, maxLength: 3 }).map((n) => n.join("/")), entry), { selector: ([rel]) => rel, maxLength: 30 })
    await fc.assert(
      fc.asyncProperty(entries, entries, fc.array(fc.nat(3), { minLength: 30, maxLength: 30 }), async (old, added, pick) => {
        await saveStatCache(dir, "old", { entries: new Map(old), patterns: ["x"] })
        const view = await loadStatCache(dir, "old")
        // a small capacity, so that the writer grows on the way
        const w = new StatCacheWriter(1)
        const expected = new Map<string, CachedEntry>()
        const fresh = added.filter(([rel]) => !old.some(([o]) => o === rel))
        const copy = (rel: string, e: CachedEntry) => {
          const unknownLength = (e.tree ? [e.tree] : e.chunks).some((b) => b.length < 0)
          expect(view.copyTo(rel, w)).toBe(!unknownLength)
          if (!unknownLength) expected.set(rel, e)
        }
        const addFresh = () => {
          const next = fresh.pop()
          if (!next) return
          w.add(...next)
          expected.set(...next)
        }
        // in the cache's order (consecutive entries are copied as runs), with new entries between them
        // (pick 1: copy; 2: copy, then add one; 3: add one), then the rest backwards, then the other new ones
        for (const [i, [rel, e]] of old.entries()) {
          if (pick[i] === 1 || pick[i] === 2) copy(rel, e)
          if (pick[i]! >= 2) addFresh()
        }
        for (const [i, [rel, e]] of [...old.entries()].reverse()) if (pick[i] === 0 || pick[i] === 3) copy(rel, e)
        while (fresh.length > 0) addFresh()
        expect(view.copyTo("no/such/entry", w)).toBe(false)
        expect(w.entries).toBe(expected.size)
        await writeStatCache(dir, "new", w, { indexFiles: ["i1"], storedBytes: 7 })
        const back = await loadStatCache(dir, "new")
        expect(entriesOf(back, expected.keys())).toEqual(expected)
        expect([back.indexFiles, back.storedBytes, back.patterns]).toEqual([["i1"], 7, undefined])
      }),
      { numRuns: 150 },
    )
  })

  it("a large cache loads back whole, with names in ASCII only or not (the text is written and read as latin1 when it is all ASCII), written piece by piece", async () => {
    const dir = await tempDir()
    for (const stem of ["foo", "föö", "f\u{1F600}o"]) {
      const entries = new Map<string, CachedEntry>()
      for (let i = 0; i < 5000; i++) {
        const chunks = Array.from({ length: i % 5 }, (_, k) => ({ id: id(`${i}:${k}`), length: i * k }))
        entries.set(`d${i % 50}/${stem}-${i}`, { kind: "file", size: i, mtimeNs: BigInt(i) * 1_000_000_007n, ctimeNs: BigInt(-i), ino: 2n ** 64n - BigInt(i + 1), chunks })
      }
      // a file of 6,000 chunks: its text (rel and ids) is longer than the piece a cache is written through
      const many = Array.from({ length: 6000 }, (_, k) => ({ id: id(`many:${k}`), length: k }))
      entries.set(`${stem}-huge`, { kind: "file", size: 6000 * 131072, mtimeNs: 5n, ctimeNs: 6n, ino: 7n, chunks: many })
      await saveStatCache(dir, "big", { entries, indexFiles: [] })
      expect(entriesOf(await loadStatCache(dir, "big"), entries.keys())).toEqual(entries)
    }
  })

  it("an older, foreign or damaged file loads as no cache; saving replaces the format-2 JSON file", async () => {
    const dir = await tempDir()
    const entries = new Map<string, CachedEntry>([["a.txt", { kind: "file", size: 5, mtimeNs: 1n, ctimeNs: 2n, ino: 3n, chunks: [{ id: id("a"), length: 9 }] }]])
    const legacy = path.join(dir, "statcache", "k.json")
    await fsp.mkdir(path.dirname(legacy), { recursive: true })
    await fsp.writeFile(legacy, JSON.stringify({ v: 2, patterns: [], index: [], rows: [["a.txt", "f", 5, "1", "2", "3", `${id("a")}:9`, ""]] }))
    expect((await loadStatCache(dir, "k")).get("a.txt")).toBeUndefined()
    await saveStatCache(dir, "k", { entries })
    await expect(fsp.access(legacy)).rejects.toThrow()
    const file = path.join(dir, "statcache", "k.bin")
    const good = await fsp.readFile(file)
    expect((await loadStatCache(dir, "k")).get("a.txt")).toEqual(entries.get("a.txt"))
    // damage with the checksum made to match again, so that the structural checks are what refuses it
    const resum = (b: Buffer) => {
      const body = b.subarray(0, b.length - 32)
      return Buffer.concat([body, createHash("sha256").update(body).digest()])
    }
    const version = Buffer.from(good)
    version.writeUInt32LE(2, 16)
    const badKind = Buffer.from(good)
    const kindAt = good.length - 32 - 1 - Buffer.byteLength("a.txt") - Buffer.byteLength('{"patterns":null,"index":null}')
    expect(good[kindAt]).toBe(0) // a file's kind code
    badKind[kindAt] = 7
    // one bit of the chunk id (stored as bytes) flipped, still a valid id: only the checksum can tell
    const otherId = Buffer.from(good)
    const at = good.indexOf(Buffer.from(id("a"), "hex"))
    expect(at).toBeGreaterThan(0)
    otherId[at + 31] ^= 1
    for (const junk of [Buffer.alloc(0), good.subarray(0, 40), good.subarray(0, good.length - 1), Buffer.concat([good, Buffer.from("x")]), resum(version), resum(badKind), otherId, Buffer.from("{not json")]) {
      await fsp.writeFile(file, junk)
      expect((await loadStatCache(dir, "k")).get("a.txt")).toBeUndefined()
    }
  })
})
