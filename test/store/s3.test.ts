// The S3 backend against a real S3 endpoint (a local Ceph RADOS gateway in
// CI: .ci/run starts one with scripts/ceph-rgw.sh). Needs
//   CAIRN_TEST_S3_ENDPOINT  e.g. http://127.0.0.1:7480
//   CAIRN_TEST_S3_BUCKET    created when missing
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (read by the SDK's own chain)
// and skips itself when they are unset. Each run works under its own prefix.

import { randomBytes } from "node:crypto"
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  HeadBucketCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { prng } from "../../store/backends/faulty.js"
import { isTransient, parseS3Url, S3ObjectStore, type S3ObjectStoreOptions } from "../../store/backends/s3.js"
import { isCairnError } from "../../store/errors.js"
import { bytes, expectBytes, objectStoreContract, seededBytes } from "./contract.js"
import { adminClient, announceSkip, bucket, enabled, endpoint } from "../s3/env.js"

announceSkip("S3 suite")

const MiB = 1024 * 1024
const runPrefix = `cairn-test/${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`
let storeCount = 0

function options(prefix: string, extra: Partial<S3ObjectStoreOptions> = {}): S3ObjectStoreOptions {
  return { bucket: bucket!, prefix, endpoint: endpoint!, region: process.env.AWS_REGION ?? "us-east-1", ...extra }
}


async function removePrefix(client: S3Client, prefix: string): Promise<void> {
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket!, Prefix: `${prefix}/`, ContinuationToken: token }))
    const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }))
    if (keys.length > 0) await client.send(new DeleteObjectsCommand({ Bucket: bucket!, Delete: { Objects: keys, Quiet: true } }))
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
}

describe("parseS3Url", () => {
  it("splits bucket and prefix", () => {
    expect(parseS3Url("s3://bucket/some/prefix")).toEqual({ bucket: "bucket", prefix: "some/prefix" })
    expect(parseS3Url("s3://bucket/some/prefix/")).toEqual({ bucket: "bucket", prefix: "some/prefix" })
    expect(parseS3Url("s3://my.bucket-1")).toEqual({ bucket: "my.bucket-1", prefix: "" })
    expect(parseS3Url("s3://my-bucket/")).toEqual({ bucket: "my-bucket", prefix: "" })
  })

  it.each(["http://bucket/x", "s3://", "s3:///x", "s3://Bucket/x", "s3://b/x", "s3://bucket/../x", "s3://bucket/a//b", "bucket/x"])(
    "rejects %j with BAD_INPUT",
    (url) => {
      let err: unknown
      try {
        parseS3Url(url)
      } catch (e) {
        err = e
      }
      expect(isCairnError(err, "BAD_INPUT")).toBe(true)
    },
  )

  it("gives the store its location, without credentials", () => {
    const store = new S3ObjectStore({
      bucket: "bucket",
      prefix: "repo/one",
      endpoint: "http://127.0.0.1:1",
      credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "SECRETEXAMPLE" },
    })
    expect(store.location).toBe("s3://bucket/repo/one")
    expect(store.url("data/ab/abcd")).toBe("s3://bucket/repo/one/data/ab/abcd")
    expect(new S3ObjectStore({ bucket: "bucket", prefix: "", region: "us-east-1" }).location).toBe("s3://bucket")
    void store.close()
  })

  it("classifies transient errors", () => {
    expect(isTransient({ name: "ServiceUnavailable", $metadata: { httpStatusCode: 503 } })).toBe(true)
    expect(isTransient({ name: "SlowDown", $metadata: { httpStatusCode: 503 } })).toBe(true)
    expect(isTransient(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }))).toBe(true)
    expect(isTransient({ name: "TimeoutError" })).toBe(true)
    expect(isTransient({ name: "NoSuchKey", $metadata: { httpStatusCode: 404 } })).toBe(false)
    expect(isTransient({ name: "AccessDenied", $metadata: { httpStatusCode: 403 } })).toBe(false)
    expect(isTransient({ name: "PreconditionFailed", $metadata: { httpStatusCode: 412 } })).toBe(false)
  })
})

describe.skipIf(!enabled)("S3ObjectStore on a live endpoint", () => {
  const admin = enabled ? adminClient() : undefined

  beforeAll(async () => {
    try {
      await admin!.send(new HeadBucketCommand({ Bucket: bucket! }))
    } catch {
      await admin!.send(new CreateBucketCommand({ Bucket: bucket! })).catch((err: { name?: string }) => {
        if (err.name !== "BucketAlreadyOwnedByYou" && err.name !== "BucketAlreadyExists") throw err
      })
    }
  })

  afterAll(async () => {
    await removePrefix(admin!, runPrefix)
    admin!.destroy()
  })

  objectStoreContract(
    "s3",
    async () => {
      const prefix = `${runPrefix}/contract-${storeCount++}`
      return { store: new S3ObjectStore(options(prefix)), cleanup: () => removePrefix(admin!, prefix) }
    },
    { numRuns: 15, timeoutMs: 120_000 },
  )

  describe("retries", () => {
    type Fault = "503" | "reset-before" | "reset-after" | "slowdown"

    /** Wraps client.send: a seeded share of calls fail like a flaky network would. */
    function flaky(store: S3ObjectStore, seed: number, failRate: number, kinds: Fault[]): { calls: number; faults: number } {
      const stats = { calls: 0, faults: 0 }
      const rand = prng(seed)
      const send = store.client.send.bind(store.client) as (cmd: unknown) => Promise<unknown>
      ;(store.client as { send: unknown }).send = async (cmd: unknown) => {
        stats.calls++
        if (rand() >= failRate) return send(cmd)
        stats.faults++
        const kind = kinds[Math.floor(rand() * kinds.length)]!
        if (kind === "reset-after") await send(cmd) // carried out, answer lost
        if (kind === "503" || kind === "slowdown") {
          const name = kind === "503" ? "ServiceUnavailable" : "SlowDown"
          throw Object.assign(new Error(`injected ${name}`), { name, $metadata: { httpStatusCode: 503 } })
        }
        throw Object.assign(new Error("injected: socket hang up"), { code: "ECONNRESET" })
      }
      return stats
    }

    const fast = { retry: { attempts: 10, baseDelayMs: 1, maxDelayMs: 20 } }

    it("survives 503s and connection resets", { timeout: 120_000 }, async () => {
      const store = new S3ObjectStore(options(`${runPrefix}/retry`, fast))
      const stats = flaky(store, 1234, 0.35, ["503", "reset-before", "reset-after", "slowdown"])
      const model = new Map<string, Uint8Array>()
      const rand = prng(99)
      for (let i = 0; i < 60; i++) {
        const key = `data/k${Math.floor(rand() * 6)}`
        const r = rand()
        if (r < 0.35) {
          const data = seededBytes(100 + i, i)
          await store.put(key, data)
          model.set(key, data)
        } else if (r < 0.55) {
          const data = seededBytes(50 + i, i + 1000)
          const created = await store.putIfAbsent(key, data)
          expect(created, `putIfAbsent ${key} #${i}`).toBe(!model.has(key))
          if (created) model.set(key, data)
        } else if (r < 0.7) {
          await store.delete(key)
          model.delete(key)
        } else if (r < 0.9) {
          const want = model.get(key)
          if (want) expectBytes(await store.get(key, { offset: 10, length: 30 }), want.subarray(10, 40))
          else await expect(store.get(key)).rejects.toMatchObject({ code: "NOT_FOUND" })
        } else {
          expect((await store.list("data/")).map((o) => o.key)).toEqual([...model.keys()].sort())
        }
      }
      expect(stats.faults).toBeGreaterThan(10)
      await store.close()
    })

    it("counts a create whose answer was lost as created", async () => {
      const store = new S3ObjectStore(options(`${runPrefix}/lost-answer`, fast))
      const send = store.client.send.bind(store.client) as (cmd: unknown) => Promise<unknown>
      let first = true
      ;(store.client as { send: unknown }).send = async (cmd: unknown) => {
        const res = await send(cmd)
        if (first) {
          first = false
          throw Object.assign(new Error("injected: socket hang up"), { code: "ECONNRESET" })
        }
        return res
      }
      expect(await store.putIfAbsent("locks/l", bytes("mine"))).toBe(true)
      expect(await store.putIfAbsent("locks/l", bytes("theirs"))).toBe(false)
      expectBytes(await store.get("locks/l"), bytes("mine"))
      await store.close()
    })

    it("gives up after the last attempt with an IoError naming the object", async () => {
      const store = new S3ObjectStore(options(`${runPrefix}/give-up`, { retry: { attempts: 3, baseDelayMs: 1 } }))
      const stats = flaky(store, 1, 1, ["503"])
      const err = await store.put("data/x", bytes("x")).catch((e: unknown) => e)
      expect(isCairnError(err, "IO")).toBe(true)
      expect((err as Error).message).toContain(`s3://${bucket}/${runPrefix}/give-up/data/x`)
      expect((err as { data: Record<string, unknown> }).data).toMatchObject({ status: 503, attempts: 3 })
      expect(stats.calls).toBe(3)
      await store.close()
    })

    it("does not retry permanent errors, and keeps credentials out of them", async () => {
      const store = new S3ObjectStore(
        options(`${runPrefix}/denied`, { credentials: { accessKeyId: "NOSUCHKEYID", secretAccessKey: "WRONG-SECRET-VALUE" } }),
      )
      let calls = 0
      const send = store.client.send.bind(store.client) as (cmd: unknown) => Promise<unknown>
      ;(store.client as { send: unknown }).send = (cmd: unknown) => {
        calls++
        return send(cmd)
      }
      const err = await store.put("data/x", bytes("x")).catch((e: unknown) => e)
      expect(isCairnError(err, "IO")).toBe(true)
      expect(calls).toBe(1)
      const shown = `${String(err)} ${JSON.stringify((err as { data: unknown }).data)} ${String((err as Error).cause)}`
      expect(shown).toContain(`s3://${bucket}/${runPrefix}/denied/data/x`)
      expect(shown).not.toContain("WRONG-SECRET-VALUE")
      expect(shown).not.toContain(process.env.AWS_SECRET_ACCESS_KEY!)
      await store.close()
    })
  })

  it("puts ~40 MiB as a multipart upload and reads ranges across part boundaries", { timeout: 180_000 }, async () => {
    const prefix = `${runPrefix}/multipart`
    const store = new S3ObjectStore(options(prefix))
    const sent: string[] = []
    const send = store.client.send.bind(store.client) as (cmd: { constructor: { name: string } }) => Promise<unknown>
    ;(store.client as { send: unknown }).send = (cmd: { constructor: { name: string } }) => {
      sent.push(cmd.constructor.name)
      return send(cmd)
    }
    const data = seededBytes(40 * MiB + 12345, 77)
    await store.put("data/big/pack", data)
    expect(sent.filter((n) => n === "UploadPartCommand")).toHaveLength(3)
    expect(sent).toContain("CompleteMultipartUploadCommand")
    expect((await store.stat("data/big/pack"))?.size).toBe(data.length)

    const boundary = 16 * MiB
    for (const [offset, length] of [
      [boundary - 100, 200],
      [2 * boundary - 1, 2],
      [boundary - 1, boundary + 2],
      [data.length - 50, 50],
    ] as const) {
      expectBytes(await store.get("data/big/pack", { offset, length }), data.subarray(offset, offset + length))
    }
    expectBytes(await store.get("data/big/pack"), data)

    // overwrite: still one whole object, no upload left open
    const smaller = seededBytes(17 * MiB, 78)
    await store.put("data/big/pack", smaller)
    expect((await store.stat("data/big/pack"))?.size).toBe(smaller.length)
    const open = await admin!.send(new ListMultipartUploadsCommand({ Bucket: bucket!, Prefix: `${prefix}/` }))
    expect(open.Uploads ?? []).toEqual([])
    await store.close()
  })
})
