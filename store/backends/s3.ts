// S3 backend: one S3 object per cairn object, under "<prefix>/<key>" in one
// bucket. Works with AWS and with Ceph's RADOS gateway (test/store/s3.test.ts
// runs the contract suite against one; see scripts/ceph-rgw.sh).
//
// - put is a single PutObject up to 16 MiB, else a multipart upload
//   (CreateMultipartUpload, UploadPart, CompleteMultipartUpload; aborted on
//   failure). Either way S3 makes the object visible atomically. Every body
//   carries Content-MD5, so the server rejects bytes damaged on the way.
// - putIfAbsent is PutObject with "If-None-Match: *": 412 means someone else
//   created the key. When an earlier attempt of the same call failed in a way
//   that may have reached the server (a reset, a 5xx), a 412 may be our own
//   write: then the object's ETag is compared with our MD5 and a match counts
//   as created. (A racer that wrote byte-identical content also matches;
//   cairn's create-only objects carry a unique owner or are content-addressed.)
//   It is always a single PutObject (S3 allows up to 5 GiB).
// - get with a range sends "Range: bytes=a-b"; a zero-length range asks HEAD
//   only whether the object exists. Bodies shorter than Content-Length are
//   retried, never returned.
// - Requests go through a semaphore (8 at a time by default) and are retried
//   on transient failures (throttling, 5xx, resets, timeouts) with capped
//   exponential backoff and full jitter, 5 attempts in all; the SDK's own
//   retries are off so that the two do not multiply. Permanent failures
//   become CairnErrors naming the object as s3://bucket/prefix/key; 404 is
//   NotFoundError.
// - Checksums are requested/validated only WHEN_REQUIRED: Ceph answers the
//   SDK's default trailing checksums with 411. The ETag returned by
//   CompleteMultipartUpload is empty on Ceph and is not used.
// Credentials come from the options or the SDK's standard provider chain
// (environment, config files); they never appear in messages or error data.

import { createHash } from "node:crypto"
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from "@aws-sdk/client-s3"
import { checkKey, type ByteRange, type ObjectInfo, type ObjectStore, type PutOptions } from "../backend.js"
import { BadInputError, IoError, NotFoundError, type CairnError } from "../errors.js"

const MiB = 1024 * 1024

export interface S3RetryOptions {
  /** Attempts in all, the first included (default 5). */
  attempts?: number
  /** Backoff before the second attempt, doubled each time (default 100 ms). */
  baseDelayMs?: number
  /** Cap of one backoff (default 5,000 ms). */
  maxDelayMs?: number
}

export interface S3ObjectStoreOptions {
  bucket: string
  /** Key prefix inside the bucket, without leading or trailing "/"; may be "". */
  prefix: string
  /** e.g. "http://127.0.0.1:7480" for a local gateway; AWS when unset. */
  endpoint?: string
  /** Default: AWS_REGION from the environment, else "us-east-1". */
  region?: string
  /** Path-style URLs (needed by most non-AWS gateways); default true with an endpoint. */
  forcePathStyle?: boolean
  /** Default: the SDK's standard provider chain (env vars, config files, ...). */
  credentials?: S3ClientConfig["credentials"]
  /** Requests in flight at once (default 8). */
  concurrency?: number
  retry?: S3RetryOptions
  /** Objects larger than this use multipart upload (default 16 MiB). */
  multipartThreshold?: number
  /** Part size of multipart uploads (default 16 MiB; S3 wants >= 5 MiB). */
  partSize?: number
  /** A ready client (tests); the store then does not destroy it on close. */
  client?: S3Client
}

/** Splits "s3://bucket/some/prefix" into bucket and prefix ("" when absent). */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url)
  if (!m) throw new BadInputError(`${JSON.stringify(url)} is not an S3 URL: write s3://bucket/prefix`, { url })
  const bucket = m[1]!
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes("..")) {
    throw new BadInputError(`${JSON.stringify(bucket)} is not a valid S3 bucket name`, { url, bucket })
  }
  const prefix = (m[2] ?? "").replace(/\/+$/, "")
  if (prefix !== "") {
    try {
      checkKey(prefix)
    } catch {
      throw new BadInputError(
        `${JSON.stringify(prefix)} is not a valid prefix: use letters, digits, ".", "_", "-" and single "/"`,
        { url, prefix },
      )
    }
  }
  return { bucket, prefix }
}

export class S3ObjectStore implements ObjectStore {
  readonly location: string
  /** ranged GETs are latency-bound: keep as many in flight as the request slots allow */
  readonly readParallelism: number
  readonly remote = true
  readonly client: S3Client
  readonly bucket: string
  readonly prefix: string
  private readonly ownsClient: boolean
  private readonly slots: Semaphore
  private readonly attempts: number
  private readonly baseDelayMs: number
  private readonly maxDelayMs: number
  private readonly multipartThreshold: number
  private readonly partSize: number

  constructor(options: S3ObjectStoreOptions) {
    const { prefix } = parseS3Url(`s3://${options.bucket}/${options.prefix.replace(/^\/+/, "")}`)
    this.bucket = options.bucket
    this.prefix = prefix
    this.location = prefix === "" ? `s3://${this.bucket}` : `s3://${this.bucket}/${prefix}`
    this.slots = new Semaphore(options.concurrency ?? 8)
    this.readParallelism = options.concurrency ?? 8
    this.attempts = Math.max(1, options.retry?.attempts ?? 5)
    this.baseDelayMs = options.retry?.baseDelayMs ?? 100
    this.maxDelayMs = options.retry?.maxDelayMs ?? 5_000
    this.multipartThreshold = options.multipartThreshold ?? 16 * MiB
    this.partSize = Math.max(5 * MiB, options.partSize ?? 16 * MiB)
    this.ownsClient = options.client === undefined
    this.client =
      options.client ??
      new S3Client({
        region: options.region ?? process.env.AWS_REGION ?? "us-east-1",
        ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
        forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
        ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
        maxAttempts: 1, // retries are ours, below
        requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
      })
  }

  /** The object's full name, for messages. */
  url(key: string): string {
    return `${this.location}/${key}`
  }

  private name(key: string): string {
    checkKey(key)
    return this.prefix === "" ? key : `${this.prefix}/${key}`
  }

  /** An acknowledged PUT is durable: a volatile one is no cheaper. */
  async put(key: string, data: Uint8Array, _opts?: PutOptions): Promise<void> {
    const Key = this.name(key)
    if (data.length > this.multipartThreshold) return this.putMultipart(key, Key, data)
    await this.request("write", key, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: data, ContentMD5: md5(data, "base64") })),
    )
  }

  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    const Key = this.name(key)
    let retried = false
    try {
      await this.request("create", key, (attempt) => {
        if (attempt > 1) retried = true
        return this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key, Body: data, ContentMD5: md5(data, "base64"), IfNoneMatch: "*" }),
        )
      })
      return true
    } catch (err) {
      if (httpStatus(err) !== 412) throw err
      if (!retried) return false
      // An earlier attempt may have been ours and only its answer was lost.
      const head = await this.request("stat", key, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key })))
      return head.ETag === `"${md5(data, "hex")}"` && head.ContentLength === data.length
    }
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array> {
    const Key = this.name(key)
    if (range && (range.length <= 0 || range.offset < 0)) {
      if (!(await this.stat(key))) throw this.notFound(key)
      return new Uint8Array(0)
    }
    try {
      return await this.request("read", key, async () => {
        const res = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key,
            ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
          }),
        )
        const body = res.Body ? await res.Body.transformToByteArray() : new Uint8Array(0)
        if (res.ContentLength !== undefined && body.length !== res.ContentLength) {
          throw new TruncatedBody(`got ${body.length} of ${res.ContentLength} bytes`)
        }
        // a server that ignores Range answers 200 with the whole object
        if (range && res.ContentRange === undefined) return body.slice(range.offset, range.offset + range.length)
        return body
      })
    } catch (err) {
      if (range && httpStatus(err) === 416) return new Uint8Array(0) // offset at or past the end
      throw err
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.name(key)
    try {
      const head = await this.request("stat", key, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key })))
      return { key, size: head.ContentLength ?? 0, mtimeMs: head.LastModified?.getTime() ?? 0 }
    } catch (err) {
      if (isCode(err, "NOT_FOUND")) return undefined
      throw err
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const base = this.prefix === "" ? "" : `${this.prefix}/`
    const out: ObjectInfo[] = []
    let token: string | undefined
    do {
      const page = await this.request("list", prefix, () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: base + prefix, ContinuationToken: token }),
        ),
      )
      for (const obj of page.Contents ?? []) {
        const key = obj.Key?.slice(base.length)
        if (key === undefined || !obj.Key!.startsWith(base) || !validKey(key)) continue // e.g. "dir/" markers
        out.push({ key, size: obj.Size ?? 0, mtimeMs: obj.LastModified?.getTime() ?? 0 })
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  }

  async delete(key: string): Promise<void> {
    const Key = this.name(key)
    try {
      await this.request("delete", key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })))
    } catch (err) {
      if (!isCode(err, "NOT_FOUND")) throw err
    }
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy()
  }

  private async putMultipart(key: string, Key: string, data: Uint8Array): Promise<void> {
    const created = await this.request("write", key, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key })),
    )
    const UploadId = created.UploadId
    if (!UploadId) throw new IoError(`could not write ${this.url(key)}: the server returned no upload id`, { key })
    try {
      const parts: Promise<{ ETag: string; PartNumber: number }>[] = []
      for (let offset = 0, n = 1; offset < data.length; offset += this.partSize, n++) {
        const Body = data.subarray(offset, Math.min(offset + this.partSize, data.length))
        const PartNumber = n
        const ContentMD5 = md5(Body, "base64")
        parts.push(
          this.request("write", key, () =>
            this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body, ContentMD5 })),
          ).then((res) => {
            if (!res.ETag) throw new IoError(`could not write ${this.url(key)}: part ${PartNumber} has no ETag`, { key })
            return { ETag: res.ETag, PartNumber }
          }),
        )
      }
      const settled = await Promise.allSettled(parts)
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected")
      if (failed) throw failed.reason
      const Parts = settled.map((s) => (s as PromiseFulfilledResult<{ ETag: string; PartNumber: number }>).value)
      // Its ETag is not used: Ceph returns it empty.
      await this.request("write", key, () =>
        this.client.send(
          new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts } }),
        ),
      )
    } catch (err) {
      await this.request("abort upload of", key, () =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })),
      ).catch(() => {}) // the bucket's lifecycle rules reap what this misses
      throw err
    }
  }

  /**
   * Runs one request with a semaphore slot, retrying transient failures.
   * Throws a CairnError; the SDK's error is kept, cleaned, as its cause.
   */
  private async request<T>(verb: string, key: string, send: (attempt: number) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const release = await this.slots.acquire()
      try {
        return await send(attempt)
      } catch (err) {
        if (attempt >= this.attempts || !isTransient(err)) throw this.translate(err, verb, key, attempt)
      } finally {
        release()
      }
      const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1))
      await sleep(Math.random() * cap)
    }
  }

  private notFound(key: string, cause?: unknown): NotFoundError {
    return new NotFoundError(`object ${this.url(key)} does not exist`, { key, url: this.url(key) }, cause)
  }

  private translate(err: unknown, verb: string, key: string, attempts: number): CairnError {
    if (err instanceof BadInputError || err instanceof IoError || err instanceof NotFoundError) return err
    const code = status(err)
    const name = errName(err)
    const url = this.url(key)
    const cause = cleanCause(err)
    const data = { key, url, status: code, error: name, attempts, requestId: requestId(err) }
    if (code === 404 && name !== "NoSuchBucket") return new NotFoundError(`object ${url} does not exist`, data, cause)
    if (name === "NoSuchKey" || name === "NotFound") return new NotFoundError(`object ${url} does not exist`, data, cause)
    let hint: string
    if (name === "NoSuchBucket") hint = `bucket ${this.bucket} does not exist; create it or fix the URL`
    // no request was made: the SDK found no credentials anywhere it looks
    else if (name === "CredentialsProviderError") hint = "no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    else if (code === 403 || /AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Credentials/i.test(name))
      hint = "access denied; check the credentials and the bucket's policy"
    else if (attempts > 1) hint = `gave up after ${attempts} attempts; check the endpoint and try again`
    else hint = "check the endpoint and try again"
    const what = code === undefined ? name : `${name}, HTTP ${code}`
    return new IoError(`could not ${verb} ${url} (${what}): ${hint}`, data, cause)
  }
}

/** The HTTP status a CairnError from request() recorded. */
function httpStatus(err: unknown): number | undefined {
  const code = (err as { data?: { status?: unknown } })?.data?.status
  return typeof code === "number" ? code : undefined
}

function isCode(err: unknown, code: string): boolean {
  return (err as { code?: unknown })?.code === code
}

class TruncatedBody extends Error {
  override name = "TruncatedBody"
}

const TRANSIENT_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "RequestTimeout",
  "RequestTimeoutException",
  "InternalError",
  "ServiceUnavailable",
  "ConditionalRequestConflict", // AWS: a racing conditional write; retry
  "TimeoutError",
  "TruncatedBody",
])
const TRANSIENT_ERRNOS = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET",
])

export function isTransient(err: unknown): boolean {
  const code = status(err)
  if (code !== undefined && (code >= 500 || code === 429 || code === 408)) return true
  if (TRANSIENT_NAMES.has(errName(err))) return true
  const errno = (err as { code?: unknown })?.code
  if (typeof errno === "string" && TRANSIENT_ERRNOS.has(errno)) return true
  return Boolean((err as { $retryable?: unknown })?.$retryable)
}

function status(err: unknown): number | undefined {
  const code = (err as { $metadata?: { httpStatusCode?: unknown } })?.$metadata?.httpStatusCode
  return typeof code === "number" ? code : undefined
}

function errName(err: unknown): string {
  const e = err as { name?: unknown; Code?: unknown }
  return typeof e?.Code === "string" ? e.Code : typeof e?.name === "string" ? e.name : "Error"
}

function requestId(err: unknown): string | undefined {
  const id = (err as { $metadata?: { requestId?: unknown } })?.$metadata?.requestId
  return typeof id === "string" ? id : undefined
}

/** A plain copy of an SDK error: name, message, status; no request or response objects. */
function cleanCause(err: unknown): Error {
  const e = new Error(err instanceof Error ? err.message : String(err))
  e.name = errName(err)
  const errno = (err as { code?: unknown })?.code
  if (typeof errno === "string") (e as Error & { code?: string }).code = errno
  return e
}

function validKey(key: string): boolean {
  try {
    checkKey(key)
    return true
  } catch {
    return false
  }
}

function md5(data: Uint8Array, encoding: "base64" | "hex"): string {
  return createHash("md5").update(data).digest(encoding)
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Counting semaphore: acquire() resolves to a release function. */
class Semaphore {
  private readonly waiters: Array<() => void> = []
  private free: number

  constructor(size: number) {
    this.free = Math.max(1, size)
  }

  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--
    else await new Promise<void>((resolve) => this.waiters.push(resolve))
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiters.shift()
      if (next) next()
      else this.free++
    }
  }
}
