// Public record and result types of the engine.

import type { BlobId } from "../store/ids.js"

export interface SnapshotStats {
  files: number
  dirs: number
  symlinks: number
  /** bytes a restore writes (hardlinked content counted once) */
  logicalBytes: number
  /** compressed bytes of the distinct blobs this snapshot references */
  storedBytes: number
  /** compressed bytes this snapshot added to the repository when it was taken */
  addedBytes: number
  /** what deleting this snapshot would free now, given the others; only on demand */
  uniqueBytes?: number
}

/** A snapshot record, as stored under snapshots/<id> and returned by the API. */
export interface SnapshotRecord {
  id: string
  name?: string
  boxId?: string
  /** root tree id */
  tree: BlobId
  parent?: string
  createdAt: string
  host: string
  /** the directory that was snapshotted (or "tar:<name>" for imports) */
  source: string
  exclude: string[]
  labels: Record<string, string>
  /** logical size: what a restore writes */
  sizeBytes: number
  status: "ready"
  stats: SnapshotStats
  pinned?: boolean
  expiresAt?: string
  /**
   * The snapshotted directory's own mode, mtime (nanoseconds, decimal) and
   * owner, which no tree holds; a whole-snapshot restore gives them to its
   * destination. Absent in tar imports and in snapshots taken before it was
   * recorded.
   */
  root?: RootMeta
}

export interface RootMeta {
  mode: number
  mtime: string
  uid: number
  gid: number
}

export interface Progress {
  phase: "snapshot" | "restore" | "import" | "verify" | "gc"
  filesDone: number
  /** 0 while not known yet (a snapshot reads large files while its scan still counts) */
  filesTotal: number
  bytesDone: number
  /** 0 while not known yet */
  bytesTotal: number
}
