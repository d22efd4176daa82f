// cairn's public library API. Everything a user imports comes from here.

export { Box, BoxFiles, type BoxOptions, type BoxRecord, type ExecResult } from "./box.js"
export { Repository, defaultRepoPath, type FileInfo, type OpenOptions, type SnapshotFilter } from "./repository.js"
export type { RestoreOptions, RestoreResult, RestoreFailure, RestoreTarget, SharedRestoreOptions } from "./restore.js"
export type { SnapshotOptions, SnapshotResult } from "./snapshot.js"
export type { Warning } from "./scan.js"
export type { LockInfo } from "../store/lock.js"
export type { Progress, SnapshotRecord, SnapshotStats } from "./types.js"
export { parseDuration, planForget, type ForgetPlan, type KeepPolicy } from "./forget.js"
export type { GcOptions, GcReport } from "./gc.js"
export type { VerifyDamage, VerifyOptions, VerifyReport } from "./verify.js"
export type { Change, DiffResult } from "./diff.js"
export type { DuRow, RepositoryStats } from "./accounting.js"
export {
  AbortedError,
  AlreadyExistsError,
  BadInputError,
  CairnError,
  FormatVersionError,
  IntegrityError,
  IoError,
  LockedError,
  NotFoundError,
  isCairnError,
  type ErrorCode,
} from "../store/errors.js"
/** The repository format version this build reads and writes (FORMAT.md). */
export { FORMAT_VERSION } from "../store/store.js"
