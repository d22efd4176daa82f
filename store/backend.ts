// The backend interface: the smallest thing a repository can live on.
//
// A backend stores named objects (keys are "/"-separated relative paths such
// as "data/3f/3f9a...", "index/...", "snapshots/snap_...") and nothing else:
// it knows no packs, blobs or snapshots. Every implementation (memory,
// filesystem, S3) passes the same contract suite in test/store/contract.ts.
//
// Invariants every implementation keeps:
// - put is atomic and durable: once it resolves, a reader sees the whole new
//   object; a crash mid-put leaves either the old state or the new one, never
//   a torn object under the key. A volatile put (PutOptions) is as atomic,
//   but may be lost, or read back torn or empty, after a crash of the host:
//   locks are, whose readers take unreadable ones for stale.
// - putIfAbsent is atomic create-only: of two racing callers exactly one wins.
// - get of a missing key throws NotFoundError; delete of a missing key is fine.
// - list returns every key under a prefix with its size and modification time.
// - Ranges past the end return the bytes that exist (possibly none).
// - A key is never also a "directory" of other keys ("a" and "a/b" do not
//   both exist); cairn's layout never needs it, and the filesystem backend
//   cannot hold it.
// - When putIfAbsent throws, the object may still have been created by that
//   call (the answer was lost); lock code reads the object back.

export interface ObjectInfo {
  key: string
  size: number
  /** Last modification, ms since the epoch; gc uses it for grace periods. */
  mtimeMs: number
}

export interface ByteRange {
  offset: number
  length: number
  /**
   * A buffer of at least `length` bytes that the range may be read into (the
   * result is then a view of it, and the caller's): a caller that reads many
   * ranges reuses its buffers instead of leaving one per read to the
   * collector. A hint: a backend may return a buffer of its own.
   */
  into?: Uint8Array
}

export interface PutOptions {
  /**
   * The object need not outlive a crash of this host (a lock: its process
   * is gone then too), so a backend may skip making it durable: on a local
   * file system, the two fsyncs of a put. After a burst of writes (an
   * install, a restore) an fsync waits for the file system to write back far
   * more than its own file; a command's lock would wait with it.
   */
  volatile?: boolean
}

export interface ObjectStore {
  /** Where the objects live, for messages; never includes credentials. */
  readonly location: string
  /** Writes the object whole. `data` is the caller's again once the promise settles: keep a copy, never the buffer (the store reuses its pack buffers). */
  put(key: string, data: Uint8Array, opts?: PutOptions): Promise<void>
  /** Creates the object only if no object has the key; returns whether it did. */
  putIfAbsent(key: string, data: Uint8Array): Promise<boolean>
  /** The object's bytes (or a range of them), in a buffer the caller owns: nothing else holds it. */
  get(key: string, range?: ByteRange): Promise<Uint8Array>
  stat(key: string): Promise<ObjectInfo | undefined>
  list(prefix: string): Promise<ObjectInfo[]>
  delete(key: string): Promise<void>
  close(): Promise<void>
  /**
   * Starts an object written in parts (a pack as it fills), put under its
   * key once complete: backends that can append to a file, where holding
   * the whole object in memory first is a needless cost. Absent: the caller
   * puts the object whole.
   */
  createWriter?(): Promise<ObjectWriter>
  /**
   * Removes leftovers of writers that crashed mid-put (temp files) older than
   * maxAgeMs; returns how many. Backends whose puts are atomic without temp
   * objects (S3, memory) do not implement it.
   */
  sweepTemp?(maxAgeMs: number): Promise<number>
  /**
   * How many large reads (pack ranges) pay to keep in flight at once: a local
   * disk is best read by few sequential streams, an object store hides its
   * per-request latency behind many. Default 2.
   */
  readonly readParallelism?: number
  /**
   * Reads cost a network round trip: the store then keeps the tree blobs it
   * reads in the host's cache directory (content-addressed and hash-checked
   * on every read, so never stale and never trusted).
   */
  readonly remote?: boolean
  /**
   * The directory the objects live in, when they live on this host's file
   * system: a snapshot of a tree that contains it leaves it out.
   */
  readonly localRoot?: string
}

/**
 * An object being written in parts (ObjectStore.createWriter). Writes happen
 * in the order they are called; until commit nothing is visible under any
 * key, and a crash leaves a temp object that sweepTemp removes.
 */
export interface ObjectWriter {
  /** Appends bytes; they are the caller's again once the promise settles. */
  write(bytes: Uint8Array): Promise<void>
  /** Reads `length` bytes at `offset` of what writes that settled put (a buffer the caller owns). */
  read(offset: number, length: number): Promise<Uint8Array>
  /** Makes what was written durable under `key`, as put does; read still works after. */
  commit(key: string): Promise<void>
  /** Lets go of the object: drops it unless committed. Nothing may be called after. */
  close(): Promise<void>
}

import { BadInputError } from "./errors.js"

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/

/** Keys are produced by cairn itself; anything else is a bug or an attack. */
export function checkKey(key: string): void {
  if (!KEY.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
    throw new BadInputError(`invalid object key ${JSON.stringify(key)}`, { key })
  }
}

/** A list prefix: "", a key, or a key followed by "/". */
export function checkPrefix(prefix: string): void {
  if (prefix === "") return
  checkKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix)
}
