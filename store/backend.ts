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
//   a torn object under the key.
// - putIfAbsent is atomic create-only: of two racing callers exactly one wins.
// - get of a missing key throws NotFoundError; delete of a missing key is fine.
// - list returns every key under a prefix with its size and modification time.

export interface ObjectInfo {
  key: string
  size: number
  /** Last modification, ms since the epoch; gc uses it for grace periods. */
  mtimeMs: number
}

export interface ByteRange {
  offset: number
  length: number
}

export interface ObjectStore {
  /** Where the objects live, for messages; never includes credentials. */
  readonly location: string
  put(key: string, data: Uint8Array): Promise<void>
  /** Creates the object only if no object has the key; returns whether it did. */
  putIfAbsent(key: string, data: Uint8Array): Promise<boolean>
  get(key: string, range?: ByteRange): Promise<Uint8Array>
  stat(key: string): Promise<ObjectInfo | undefined>
  list(prefix: string): Promise<ObjectInfo[]>
  delete(key: string): Promise<void>
  close(): Promise<void>
}

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/

/** Keys are produced by cairn itself; anything else is a bug or an attack. */
export function checkKey(key: string): void {
  if (!KEY.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
    throw new Error(`invalid object key ${JSON.stringify(key)}`)
  }
}
