// Errors are API: every error cairn raises on purpose is a CairnError with a
// stable `code`. Messages are one sentence saying what was wrong and what to
// do; they may change between versions, codes do not. Backends translate
// native errors (ENOENT, S3 404, ...) into these at their boundary.

export type ErrorCode =
  | "NOT_FOUND" // a snapshot, box, record, blob or path does not exist
  | "ALREADY_EXISTS" // a name or destination is taken
  | "INTEGRITY" // stored bytes do not hash to their id, or a structure is damaged
  | "LOCKED" // another process holds the repository and did not let go in time
  | "BAD_INPUT" // arguments, paths, tar entries or trees that cairn refuses
  | "FORMAT_VERSION" // a repository or object of a format this version does not read
  | "NOT_A_REPOSITORY" // a directory that is not a cairn repository
  | "IO" // the operating system or the backend failed
  | "ABORTED" // an AbortSignal fired

export class CairnError extends Error {
  readonly code: ErrorCode
  readonly data: Record<string, unknown>

  constructor(code: ErrorCode, message: string, options: { data?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = "CairnError"
    this.code = code
    this.data = options.data ?? {}
  }
}

export class NotFoundError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>, cause?: unknown) {
    super("NOT_FOUND", message, { data, cause })
    this.name = "NotFoundError"
  }
}

export class AlreadyExistsError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>) {
    super("ALREADY_EXISTS", message, { data })
    this.name = "AlreadyExistsError"
  }
}

export class IntegrityError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>, cause?: unknown) {
    super("INTEGRITY", message, { data, cause })
    this.name = "IntegrityError"
  }
}

export class LockedError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>) {
    super("LOCKED", message, { data })
    this.name = "LockedError"
  }
}

export class BadInputError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>) {
    super("BAD_INPUT", message, { data })
    this.name = "BadInputError"
  }
}

export class FormatVersionError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>) {
    super("FORMAT_VERSION", message, { data })
    this.name = "FormatVersionError"
  }
}

export class IoError extends CairnError {
  constructor(message: string, data?: Record<string, unknown>, cause?: unknown) {
    super("IO", message, { data, cause })
    this.name = "IoError"
  }
}

export class AbortedError extends CairnError {
  constructor(message = "the operation was aborted") {
    super("ABORTED", message)
    this.name = "AbortedError"
  }
}

export function isCairnError(err: unknown, code?: ErrorCode): err is CairnError {
  return err instanceof CairnError && (code === undefined || err.code === code)
}

/** Throws AbortedError when the signal has fired; call between units of work. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError()
}
