// The ObjectStore contract: every backend (memory, filesystem, S3, and the
// wrappers around them) runs this one suite, as restic's backend/test and
// kopia's blobtesting/verify.go do. It checks the invariants written in
// store/backend.ts and nothing a backend is free to choose (list order is
// compared as a set; sizes and mtimes within a slack for coarse clocks).
//
// Usage, from a *.test.ts file:
//   objectStoreContract("memory", async () => ({ store: new MemoryObjectStore(), cleanup: async () => {} }))
// make() is called once per test and must return an empty store.

import fc from "fast-check"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { ObjectInfo, ObjectStore } from "../../store/backend.js"
import { isCairnError } from "../../store/errors.js"

export interface ContractOptions {
  /** fast-check runs for the model property (remote backends want fewer). */
  numRuns?: number
  /** Allowed clock difference between this process and the store, ms. */
  clockSlackMs?: number
  /** Per-test timeout, ms. */
  timeoutMs?: number
  /**
   * Contract tests a backend is known to fail today. Each entry is a bug to
   * fix (or a rule to add to store/backend.ts), not a permanent exemption.
   */
  knownGaps?: KnownGap[]
}

export type KnownGap =
  /** list(prefix) with ".." in the prefix must not reach outside the store. */
  | "list-prefix-outside"
  /** valid keys that look like a backend's temp files (".tmp-") must be listed. */
  | "temp-like-keys"
  /** "a" and "a/b" can both exist (backend.ts does not forbid it). */
  | "nested-keys"

export type MakeStore = () => Promise<{ store: ObjectStore; cleanup: () => Promise<void> }>

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text)
}

/** Deterministic pseudo-random bytes, so failures reproduce. */
export function seededBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

export async function expectNotFound(promise: Promise<unknown>): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, "expected a NotFoundError").toBeDefined()
  expect(isCairnError(err, "NOT_FOUND"), `expected code NOT_FOUND, got ${String(err)}`).toBe(true)
}

/** Byte equality that ignores the Buffer/Uint8Array distinction (fs returns Buffers). */
export function expectBytes(got: Uint8Array, want: Uint8Array, message?: string): void {
  expect(got).toBeInstanceOf(Uint8Array)
  if (got.length <= 4096 && want.length <= 4096) {
    expect(new Uint8Array(got.buffer, got.byteOffset, got.byteLength), message).toEqual(
      new Uint8Array(want.buffer, want.byteOffset, want.byteLength),
    )
    return
  }
  // large objects: a diff of millions of elements would exhaust the heap
  let first = -1
  for (let i = 0; i < Math.min(got.length, want.length) && first < 0; i++) if (got[i] !== want[i]) first = i
  expect(
    { length: got.length, firstDifference: first },
    message ?? "bytes differ",
  ).toEqual({ length: want.length, firstDifference: -1 })
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0
}

function keysOf(infos: ObjectInfo[]): string[] {
  return infos.map((i) => i.key).sort()
}

export function objectStoreContract(name: string, make: MakeStore, options: ContractOptions = {}): void {
  const numRuns = options.numRuns ?? 25
  const slack = options.clockSlackMs ?? 5_000
  const timeout = options.timeoutMs ?? 30_000
  const gap = (name: KnownGap) => (options.knownGaps ?? []).includes(name)

  describe(`ObjectStore contract: ${name}`, { timeout }, () => {
    let store: ObjectStore
    let cleanup: () => Promise<void>

    beforeEach(async () => {
      ;({ store, cleanup } = await make())
    })
    afterEach(async () => {
      await store.close()
      await cleanup()
    })

    it("has a location", () => {
      expect(typeof store.location).toBe("string")
      expect(store.location.length).toBeGreaterThan(0)
    })

    describe("put and get", () => {
      it("round-trips bytes", async () => {
        const data = seededBytes(10_000, 1)
        await store.put("data/ab/abcd", data)
        expectBytes(await store.get("data/ab/abcd"), data)
      })

      it("round-trips an empty object", async () => {
        await store.put("config", new Uint8Array(0))
        expectBytes(await store.get("config"), new Uint8Array(0))
        expect((await store.stat("config"))?.size).toBe(0)
      })

      it("does not alias the caller's buffer", async () => {
        const data = bytes("hello")
        await store.put("k", data)
        data[0] = 0
        const got = await store.get("k")
        expectBytes(got, bytes("hello"))
        got[1] = 0
        expectBytes(await store.get("k"), bytes("hello"))
      })

      it("overwrites: a reader sees the whole old or the whole new object", async () => {
        const a = seededBytes(200_000, 2)
        const b = seededBytes(150_000, 3)
        await store.put("index/x", a)
        const reads: Promise<Uint8Array>[] = []
        const write = store.put("index/x", b)
        for (let i = 0; i < 8; i++) reads.push(store.get("index/x"))
        await write
        for (const got of await Promise.all(reads)) {
          expect(sameBytes(got, a) || sameBytes(got, b), "a torn read").toBe(true)
        }
        expectBytes(await store.get("index/x"), b)
        expect((await store.stat("index/x"))?.size).toBe(b.length)
      })

      it("a volatile put (a lock's) is as atomic: readers see the whole old or the whole new object", async () => {
        const a = seededBytes(120_000, 20)
        const b = seededBytes(90_000, 21)
        await store.put("locks/lock_volatile", a, { volatile: true })
        const reads: Promise<Uint8Array>[] = []
        const write = store.put("locks/lock_volatile", b, { volatile: true })
        for (let i = 0; i < 8; i++) reads.push(store.get("locks/lock_volatile"))
        await write
        for (const got of await Promise.all(reads)) expect(sameBytes(got, a) || sameBytes(got, b), "a torn read").toBe(true)
        expectBytes(await store.get("locks/lock_volatile"), b)
        expect((await store.list("locks/")).map((o) => o.key)).toEqual(["locks/lock_volatile"])
      })

      it("racing puts of one key leave exactly one of the values", async () => {
        const values = Array.from({ length: 6 }, (_, i) => seededBytes(20_000 + i, 10 + i))
        await Promise.all(values.map((v) => store.put("snapshots/race", v)))
        const got = await store.get("snapshots/race")
        expect(values.some((v) => sameBytes(v, got))).toBe(true)
      })
    })

    describe("ranged get", () => {
      const data = seededBytes(4096, 4)
      beforeEach(async () => {
        await store.put("data/ff/ffee", data)
      })

      it("returns the requested slice", async () => {
        expectBytes(await store.get("data/ff/ffee", { offset: 100, length: 50 }), data.subarray(100, 150))
        expectBytes(await store.get("data/ff/ffee", { offset: 0, length: 1 }), data.subarray(0, 1))
      })

      it("reads a range that ends at the end of the object", async () => {
        expectBytes(await store.get("data/ff/ffee", { offset: 4000, length: 96 }), data.subarray(4000))
        expectBytes(await store.get("data/ff/ffee", { offset: 0, length: 4096 }), data)
      })

      it("returns only the bytes that exist when the range runs past the end", async () => {
        expectBytes(await store.get("data/ff/ffee", { offset: 4090, length: 100 }), data.subarray(4090))
        expectBytes(await store.get("data/ff/ffee", { offset: 5000, length: 10 }), new Uint8Array(0))
      })

      it("returns nothing for a zero-length range", async () => {
        expectBytes(await store.get("data/ff/ffee", { offset: 10, length: 0 }), new Uint8Array(0))
        expectBytes(await store.get("data/ff/ffee", { offset: 4096, length: 0 }), new Uint8Array(0))
      })

      it("agrees with slicing for any range", async () => {
        await fc.assert(
          fc.asyncProperty(fc.nat(4200), fc.nat(4200), async (offset, length) => {
            const want = data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length))
            expectBytes(await store.get("data/ff/ffee", { offset, length }), want)
          }),
          { numRuns: Math.max(10, numRuns) },
        )
      })

      it("a range read with a buffer to read into gives the same bytes, into it or not; a buffer too small is not used", async () => {
        const into = new Uint8Array(1000).fill(0xee)
        const got = await store.get("data/ff/ffee", { offset: 100, length: 600, into })
        expectBytes(got, data.subarray(100, 700))
        if (got.buffer === into.buffer) expect(got.byteOffset).toBe(0) // read into it: a view of its start
        const small = new Uint8Array(10)
        const past = await store.get("data/ff/ffee", { offset: 4000, length: 200, into: small })
        expectBytes(past, data.subarray(4000))
        expect(past.buffer).not.toBe(small.buffer)
      })

      it("throws NotFoundError for a missing key, even for a zero-length range", async () => {
        await expectNotFound(store.get("data/00/0000", { offset: 0, length: 10 }))
        await expectNotFound(store.get("data/00/0000", { offset: 0, length: 0 }))
      })
    })

    describe("missing keys", () => {
      it("get throws a CairnError with code NOT_FOUND", async () => {
        await expectNotFound(store.get("snapshots/nope"))
        await store.put("snapshots/yes", bytes("y"))
        await expectNotFound(store.get("snapshots/nope"))
      })

      it("stat returns undefined", async () => {
        expect(await store.stat("snapshots/nope")).toBeUndefined()
      })

      it("delete of a missing key is fine", async () => {
        await store.delete("snapshots/nope")
        await store.delete("deep/er/nope")
      })
    })

    describe("putIfAbsent", () => {
      it("creates once, then returns false and leaves the content alone", async () => {
        expect(await store.putIfAbsent("locks/a", bytes("first"))).toBe(true)
        expect(await store.putIfAbsent("locks/a", bytes("second"))).toBe(false)
        expectBytes(await store.get("locks/a"), bytes("first"))
      })

      it("returns false when put created the key", async () => {
        await store.put("locks/b", bytes("put"))
        expect(await store.putIfAbsent("locks/b", bytes("pia"))).toBe(false)
        expectBytes(await store.get("locks/b"), bytes("put"))
      })

      it("creates again after a delete", async () => {
        expect(await store.putIfAbsent("locks/c", bytes("1"))).toBe(true)
        await store.delete("locks/c")
        expect(await store.putIfAbsent("locks/c", bytes("2"))).toBe(true)
        expectBytes(await store.get("locks/c"), bytes("2"))
      })

      it("has exactly one winner among 8 racing callers", async () => {
        for (let round = 0; round < 3; round++) {
          const key = `locks/race-${round}`
          const values = Array.from({ length: 8 }, (_, i) => bytes(`owner-${round}-${i}`))
          const results = await Promise.all(values.map((v) => store.putIfAbsent(key, v)))
          expect(results.filter(Boolean)).toHaveLength(1)
          expectBytes(await store.get(key), values[results.indexOf(true)]!)
        }
      })

      it("does not leave temp objects behind", async () => {
        await Promise.all(Array.from({ length: 4 }, (_, i) => store.putIfAbsent("locks/t", bytes(`v${i}`))))
        expect(keysOf(await store.list(""))).toEqual(["locks/t"])
      })
    })

    describe("list", () => {
      const keys = ["config", "data/ab/abcd", "data/ab/abff", "data/cd/cd01", "index/i1", "snapshots/s1", "snapshots/s2"]

      beforeEach(async () => {
        await Promise.all(keys.map((k, i) => store.put(k, seededBytes(i * 10, i + 1))))
      })

      it("lists every key under a prefix, and only those", async () => {
        expect(keysOf(await store.list("data/"))).toEqual(["data/ab/abcd", "data/ab/abff", "data/cd/cd01"])
        expect(keysOf(await store.list("data/ab/"))).toEqual(["data/ab/abcd", "data/ab/abff"])
        expect(keysOf(await store.list("snapshots/"))).toEqual(["snapshots/s1", "snapshots/s2"])
        expect(keysOf(await store.list(""))).toEqual([...keys].sort())
      })

      it("matches prefixes that end mid-name", async () => {
        expect(keysOf(await store.list("data/ab/abf"))).toEqual(["data/ab/abff"])
        expect(keysOf(await store.list("snap"))).toEqual(["snapshots/s1", "snapshots/s2"])
        expect(keysOf(await store.list("data/c"))).toEqual(["data/cd/cd01"])
      })

      it("returns nothing for an unused prefix", async () => {
        expect(await store.list("locks/")).toEqual([])
        expect(await store.list("data/zz/")).toEqual([])
      })

      it("does not list one key twice", async () => {
        const all = keysOf(await store.list(""))
        expect(new Set(all).size).toBe(all.length)
      })

      it("reports sizes and sane modification times", async () => {
        const before = Date.now()
        await store.put("snapshots/s3", seededBytes(1234, 99))
        const after = Date.now()
        const infos = await store.list("snapshots/")
        const s3 = infos.find((i) => i.key === "snapshots/s3")
        expect(s3).toBeDefined()
        expect(s3!.size).toBe(1234)
        expect(s3!.mtimeMs).toBeGreaterThanOrEqual(before - slack)
        expect(s3!.mtimeMs).toBeLessThanOrEqual(after + slack)
        for (const info of infos) {
          expect(Number.isFinite(info.mtimeMs)).toBe(true)
          expect(info.size).toBe(keys.includes(info.key) ? keys.indexOf(info.key) * 10 : 1234)
        }
        const stat = await store.stat("snapshots/s3")
        expect(stat?.key).toBe("snapshots/s3")
        expect(stat?.size).toBe(1234)
        expect(Math.abs(stat!.mtimeMs - s3!.mtimeMs)).toBeLessThanOrEqual(slack)
      })

      it("drops deleted keys", async () => {
        await store.delete("data/ab/abcd")
        expect(keysOf(await store.list("data/"))).toEqual(["data/ab/abff", "data/cd/cd01"])
        await expectNotFound(store.get("data/ab/abcd"))
        expect(await store.stat("data/ab/abcd")).toBeUndefined()
      })
    })

    describe("keys", () => {
      const invalid = ["../x", "/abs", "a//b", "", "a/", "./a", "a/../b", "a/./b", "a\\b", "a b", "a\0b", ".."]

      it.each(invalid)("rejects the invalid key %j", async (key) => {
        await expect(store.put(key, bytes("x"))).rejects.toThrow()
        await expect(store.putIfAbsent(key, bytes("x"))).rejects.toThrow()
        await expect(store.get(key)).rejects.toThrow()
        await expect(store.stat(key)).rejects.toThrow()
        await expect(store.delete(key)).rejects.toThrow()
        // nothing escaped into the store
        expect(await store.list("")).toEqual([])
      })

      it.skipIf(gap("list-prefix-outside"))("list never returns keys from outside the store", async () => {
        await store.put("a", bytes("x"))
        for (const prefix of ["../", "../../", "/", "./"]) {
          const listed = await store.list(prefix).catch(() => [])
          expect(listed.filter((i) => i.key !== "a"), `list(${JSON.stringify(prefix)})`).toEqual([])
        }
      })

      it.skipIf(gap("temp-like-keys"))("lists valid keys that look like temp files", async () => {
        const key = "index/x.tmp-0123456789ab"
        await store.put(key, bytes("real"))
        expect(keysOf(await store.list("index/"))).toEqual([key])
      })

      it.skipIf(gap("nested-keys"))("holds a key and a key below it", async () => {
        await store.put("n", bytes("outer"))
        await store.put("n/inner", bytes("inner"))
        expectBytes(await store.get("n"), bytes("outer"))
        expectBytes(await store.get("n/inner"), bytes("inner"))
        expect(keysOf(await store.list("n"))).toEqual(["n", "n/inner"])
      })

      it("accepts the characters cairn's keys use", async () => {
        const key = "data/3f/3f9a_B-c.d.pack"
        await store.put(key, bytes("ok"))
        expectBytes(await store.get(key), bytes("ok"))
        expect(keysOf(await store.list("data/3f/"))).toEqual([key])
      })
    })

    it("matches a Map model under any sequence of puts and deletes", async () => {
      // Keys never nest ("a" and "a/b" at once): the filesystem backend cannot
      // hold a file and a directory under one name, and cairn never asks it to.
      const keyArb = fc.constantFrom("config", "data/aa/aa01", "data/aa/aa02", "data/ab/ab01", "index/i1", "snapshots/s1")
      const opArb = fc.oneof(
        fc.record({ op: fc.constant("put" as const), key: keyArb, data: fc.uint8Array({ maxLength: 64 }) }),
        fc.record({ op: fc.constant("putIfAbsent" as const), key: keyArb, data: fc.uint8Array({ maxLength: 64 }) }),
        fc.record({ op: fc.constant("delete" as const), key: keyArb }),
      )
      const prefixes = ["", "data/", "data/aa/", "index/", "snapshots/", "s", "zzz"]
      let run = 0
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { maxLength: 20 }), async (ops) => {
          // each run uses its own top-level namespace, so runs need no cleanup
          const ns = `run${run++}`
          const model = new Map<string, Uint8Array>()
          for (const o of ops) {
            const key = `${ns}/${o.key}`
            if (o.op === "put") {
              await store.put(key, o.data)
              model.set(key, o.data)
            } else if (o.op === "putIfAbsent") {
              const created = await store.putIfAbsent(key, o.data)
              expect(created).toBe(!model.has(key))
              if (created) model.set(key, o.data)
            } else {
              await store.delete(key)
              model.delete(key)
            }
          }
          for (const p of prefixes) {
            const listed = await store.list(`${ns}/${p}`)
            const want = [...model.keys()].filter((k) => k.startsWith(`${ns}/${p}`)).sort()
            expect(keysOf(listed)).toEqual(want)
            for (const info of listed) expect(info.size).toBe(model.get(info.key)!.length)
          }
          for (const k of new Set(ops.map((o) => `${ns}/${o.key}`))) {
            const want = model.get(k)
            if (want) expectBytes(await store.get(k), want)
            else await expectNotFound(store.get(k))
          }
        }),
        { numRuns },
      )
    })
  })
}
