// Box: a workspace directory managed by cairn.
//
// A box is a record ("boxes/<id>": name, directory, labels, the snapshot it
// came from and its last snapshot) plus a directory on this host. It is a
// directory, not an isolation boundary: exec runs an ordinary shell command
// with the box as its working directory. Paths given to box.files are
// box-absolute ("/" is the box root); a path that would leave the box, by
// "..", or through a symlink anywhere along it, is refused. A box's name is
// unique in its repository; a "boxnames/<hash>" record claims it (see
// withFreeName).

import { createHash } from "node:crypto"
import { constants as fsConstants, promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { Semaphore } from "../store/concurrency.js"
import { AlreadyExistsError, BadInputError, NotFoundError } from "../store/errors.js"
import { makeDirs } from "../store/dirs.js"
import { randomId } from "../store/ids.js"
import { processGone, thisProcess, type ProcessRef } from "../store/lock.js"
import { checkRecordFields } from "./records.js"
import { defaultRepoPath, Repository, type FileInfo, type OpenOptions } from "./repository.js"
import type { RestoreOptions } from "./restore.js"
import type { Progress, SnapshotRecord } from "./types.js"

/** After a timeout's SIGTERM, how long a command may take to exit before SIGKILL (timeout(1)'s --kill-after). */
const KILL_AFTER_MS = 2000

export interface BoxRecord {
  id: string
  name?: string
  dir: string
  labels: Record<string, string>
  createdAt: string
  fromSnapshot?: string
  lastSnapshot?: string
}

export interface BoxOptions {
  /** a Repository, or where to open one (default: $CAIRN_REPO, else ~/.cairn) */
  repo?: Repository | string | OpenOptions
  dir?: string
  name?: string
  labels?: Record<string, string>
}

export interface ExecResult {
  exitCode: number
  stdout: string
  stderr: string
  timedOut: boolean
}

async function resolveRepo(repo: BoxOptions["repo"]): Promise<Repository> {
  if (repo instanceof Repository) return repo
  if (typeof repo === "string") return Repository.open(repo.startsWith("s3://") ? { url: repo } : { path: repo })
  return Repository.open(repo ?? { path: defaultRepoPath() })
}

export class Box {
  readonly files: BoxFiles

  private constructor(
    readonly repo: Repository,
    private record: BoxRecord,
  ) {
    this.files = new BoxFiles(record.dir)
  }

  get id(): string {
    return this.record.id
  }
  get dir(): string {
    return this.record.dir
  }
  get name(): string | undefined {
    return this.record.name
  }
  get labels(): Record<string, string> {
    return { ...this.record.labels }
  }
  get info(): BoxRecord {
    return { ...this.record }
  }

  /** A new, empty workspace. */
  static async create(opts: BoxOptions = {}): Promise<Box> {
    checkRecordFields({ name: opts.name, labels: opts.labels }, "box")
    const repo = await resolveRepo(opts.repo)
    const id = randomId("box")
    const dir = path.resolve(opts.dir ?? path.join(repo.workspaceRoot, id))
    return withFreeName(repo, opts.name, id, async () => {
      await assertFreshDir(dir)
      await makeDirs(dir, { what: "box directory", fix: "choose a directory you can write to", mode: 0o777 })
      return Box.register(repo, { id, name: opts.name, dir, labels: opts.labels ?? {}, createdAt: new Date().toISOString() })
    })
  }

  /** A new box holding exactly the state of a snapshot; the source is unaffected. */
  static async fromSnapshot(
    idOrName: string,
    opts: BoxOptions & Pick<RestoreOptions, "signal" | "onProgress"> = {},
  ): Promise<Box> {
    checkRecordFields({ name: opts.name, labels: opts.labels }, "box")
    const repo = await resolveRepo(opts.repo)
    await assertNameFree(repo, opts.name)
    const snapshot = await repo.snapshots.get(idOrName)
    const id = randomId("box")
    const dir = path.resolve(opts.dir ?? path.join(repo.workspaceRoot, id))
    await assertFreshDir(dir)
    try {
      await repo.snapshots.restore(snapshot.id, dir, { signal: opts.signal, onProgress: opts.onProgress, statCacheKey: id })
      // checked again as it is claimed: another box may have taken the name while this one was restored
      return await withFreeName(repo, opts.name, id, () =>
        Box.register(repo, {
          id,
          name: opts.name,
          dir,
          labels: opts.labels ?? { ...snapshot.labels },
          createdAt: new Date().toISOString(),
          fromSnapshot: snapshot.id,
          lastSnapshot: snapshot.id,
        }),
      )
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  /**
   * `count` new boxes holding exactly a snapshot's state, restored in one
   * pass (each chunk read, decoded and checked once, written into each box's
   * own files), in the repository's workspace directory. All or none: if a
   * box cannot be made, none is kept. `onProgress` follows the first box.
   */
  static async fromSnapshotMany(
    idOrName: string,
    count: number,
    opts: Pick<BoxOptions, "repo" | "labels"> & Pick<RestoreOptions, "signal" | "onProgress"> = {},
  ): Promise<Box[]> {
    if (!Number.isSafeInteger(count) || count < 1) throw new BadInputError(`a number of boxes must be a whole number of at least 1, not ${JSON.stringify(count)}`)
    checkRecordFields({ labels: opts.labels }, "box")
    const repo = await resolveRepo(opts.repo)
    const snapshot = await repo.snapshots.get(idOrName)
    const ids = Array.from({ length: count }, () => randomId("box"))
    const dirs = ids.map((id) => path.join(repo.workspaceRoot, id))
    for (const dir of dirs) await assertFreshDir(dir)
    const boxes: Box[] = []
    try {
      const targets = ids.map((id, i) => ({ dest: dirs[i]!, statCacheKey: id, ...(i === 0 && opts.onProgress ? { onProgress: opts.onProgress } : {}) }))
      const outcomes = await repo.snapshots.restoreMany(snapshot.id, targets, { ...(opts.signal ? { signal: opts.signal } : {}) })
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected")
      if (failed) throw failed.reason
      const createdAt = new Date().toISOString()
      for (const [i, id] of ids.entries()) {
        const record = { id, dir: dirs[i]!, labels: opts.labels ?? { ...snapshot.labels }, createdAt, fromSnapshot: snapshot.id, lastSnapshot: snapshot.id }
        boxes.push(await Box.register(repo, record))
      }
      return boxes
    } catch (err) {
      for (const b of boxes) await repo.store.deleteRecord("boxes", b.id).catch(() => {})
      for (const dir of dirs) await fsp.rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  static async get(idOrName: string, opts: Pick<BoxOptions, "repo"> = {}): Promise<Box> {
    const repo = await resolveRepo(opts.repo)
    if (/^box_[0-9a-f]{16}$/.test(idOrName)) {
      try {
        return new Box(repo, await repo.store.getRecord<BoxRecord>("boxes", idOrName))
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err
      }
    }
    const matches = (await Box.list(opts)).filter((b) => b.name === idOrName || b.id.startsWith(idOrName))
    if (matches.length === 1) return matches[0]!
    if (matches.length > 1) throw new BadInputError(`${idOrName} matches ${matches.length} boxes; give the full id`)
    throw new NotFoundError(`no box with id or name ${JSON.stringify(idOrName)}; "cairn box ls" lists the boxes`, { box: idOrName })
  }

  static async list(opts: Pick<BoxOptions, "repo"> = {}): Promise<Box[]> {
    const repo = await resolveRepo(opts.repo)
    const { records } = await repo.store.listRecords<BoxRecord>("boxes")
    return records.sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1)).map((r) => new Box(repo, r))
  }

  private static async register(repo: Repository, record: BoxRecord): Promise<Box> {
    await repo.store.putRecord("boxes", record.id, record)
    return new Box(repo, record)
  }

  /**
   * Runs a shell command with the box as its working directory. Not a
   * sandbox. Its output is captured into the result; with `inherit`, the
   * command shares this process's stdin, stdout and stderr instead (output
   * as it comes, input passed through; the result's stdout and stderr are
   * empty), as a terminal user of `cairn box exec` expects.
   *
   * Captured, or with a timeout, the command runs in its own process group.
   * A timeout sends the whole group SIGTERM, as timeout(1) does, so that the
   * command can clean up, and SIGKILL `killAfterMs` later (default 2 s) if
   * any of it still runs; an abort sends the group SIGKILL at once. Inherited
   * without a timeout, it stays in this process's group, so that it can read
   * the terminal (an interactive shell) and gets the terminal's Ctrl-C
   * itself; an abort sends it SIGTERM, and what it started is its own to stop.
   */
  async exec(
    command: string,
    opts: { env?: Record<string, string>; timeoutMs?: number; killAfterMs?: number; signal?: AbortSignal; inherit?: boolean } = {},
  ): Promise<ExecResult> {
    await this.assertDir()
    // loaded when first used: node:child_process brings net and dgram, ~10 ms of every cairn start otherwise
    const { spawn } = await import("node:child_process")
    return new Promise((resolve, reject) => {
      const inherit = opts.inherit === true
      const group = !inherit || opts.timeoutMs !== undefined // its own process group: a timeout kills all of the command
      const child = spawn(command, {
        shell: true,
        cwd: this.dir,
        env: { ...process.env, ...opts.env },
        stdio: inherit ? "inherit" : ["ignore", "pipe", "pipe"],
        detached: group,
      })
      const kill = (sig: NodeJS.Signals) => {
        try {
          if (group) process.kill(-child.pid!, sig)
          else child.kill(sig)
        } catch {
          child.kill(sig)
        }
      }
      const onAbort = () => kill(group ? "SIGKILL" : "SIGTERM")
      opts.signal?.addEventListener("abort", onAbort, { once: true })
      const out: Buffer[] = []
      const err: Buffer[] = []
      let timedOut = false
      let hard: NodeJS.Timeout | undefined
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            timedOut = true
            kill("SIGTERM")
            hard = setTimeout(() => kill("SIGKILL"), opts.killAfterMs ?? KILL_AFTER_MS)
          }, opts.timeoutMs)
        : undefined
      child.stdout?.on("data", (d: Buffer) => out.push(d))
      child.stderr?.on("data", (d: Buffer) => err.push(d))
      const settle = () => {
        clearTimeout(timer)
        clearTimeout(hard)
        opts.signal?.removeEventListener("abort", onAbort)
      }
      child.on("error", (e) => {
        settle()
        reject(e)
      })
      child.on("close", (code, signal) => {
        settle()
        resolve({
          exitCode: code ?? (signal ? 128 + (os.constants.signals[signal] ?? 9) : 1),
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8"),
          timedOut,
        })
      })
    })
  }

  /** Refuses to work in a box whose directory is gone (removed by hand): spawn would blame the shell. */
  private async assertDir(): Promise<void> {
    const st = await fsp.stat(this.dir).catch(() => undefined)
    if (!st?.isDirectory()) {
      throw new NotFoundError(`box ${this.id}'s directory ${this.dir} no longer exists; remove the box (cairn box rm ${this.id}) or make a new one from its last snapshot`, { box: this.id, dir: this.dir })
    }
  }

  /** Snapshots the box; unchanged files since its last snapshot or restore are not read again. */
  async snapshot(
    opts: {
      name?: string
      exclude?: string[]
      labels?: Record<string, string>
      full?: boolean
      pinned?: boolean
      expiresAt?: string
      signal?: AbortSignal
      onProgress?: (p: Progress) => void
    } = {},
  ): Promise<SnapshotRecord> {
    await this.assertDir()
    const parent = this.record.lastSnapshot ? await this.repo.snapshots.get(this.record.lastSnapshot).catch(() => undefined) : undefined
    const { snapshot } = await this.repo.snapshots.create(this.dir, {
      ...opts,
      labels: opts.labels ?? this.record.labels,
      boxId: this.id,
      parent,
      cacheKey: this.id,
    })
    this.record = { ...this.record, lastSnapshot: snapshot.id }
    await this.repo.store.putRecord("boxes", this.id, this.record)
    return snapshot
  }

  listSnapshots(): Promise<SnapshotRecord[]> {
    return this.repo.snapshots.list({ boxId: this.id })
  }

  async deleteSnapshot(id: string): Promise<void> {
    const snapshot = await this.repo.snapshots.get(id)
    if (snapshot.boxId !== this.id) throw new BadInputError(`snapshot ${snapshot.id} does not belong to box ${this.id}`)
    await this.repo.snapshots.delete(snapshot.id)
  }

  /** Removes the workspace and its record; its snapshots stay. */
  async delete(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true })
    // the claim first: stopped in between, the record still holds the name (as a box made before claims did)
    if (this.record.name !== undefined) await releaseName(this.repo, this.record.name, this.id)
    await this.repo.store.deleteRecord("boxes", this.id)
  }
}

/**
 * A box name picks one box: refuses a name another box of the repository
 * has, and one that could be read as a box id (ids are "box_<16 hex>").
 */
async function assertNameFree(repo: Repository, name: string | undefined): Promise<void> {
  if (name === undefined) return
  if (name.startsWith("box_")) throw new BadInputError(`a box name cannot start with "box_" (box ids do); choose another name than ${JSON.stringify(name)}`)
  const other = (await Box.list({ repo })).find((b) => b.name === name)
  if (other) throw nameTaken(name, other.id)
}

function nameTaken(name: string, box: string): AlreadyExistsError {
  return new AlreadyExistsError(`a box named ${JSON.stringify(name)} already exists (${box}); choose another name, or remove that box first (cairn box rm ${box})`, { box })
}

/**
 * Runs register once no box of the repository has the name and this box holds
 * the name's claim. Within a process, callers take turns per repository (boxes
 * created at once with one name under Promise.all); across processes and
 * hosts, the claim decides: a record "boxnames/<hash of the name>" created
 * only if absent (a hard link on a disk, a conditional put on S3), so of two
 * processes creating boxes of one name at the same moment, one fails. A box
 * that fails to register gives its claim back.
 */
const naming = new Map<string, Semaphore>() // one per repository location

async function withFreeName<T>(repo: Repository, name: string | undefined, box: string, register: () => Promise<T>): Promise<T> {
  if (name === undefined) return register()
  let one = naming.get(repo.location)
  if (!one) naming.set(repo.location, (one = new Semaphore(1)))
  return one.run(async () => {
    await assertNameFree(repo, name)
    await claimName(repo, name, box)
    try {
      return await register()
    } catch (err) {
      await releaseName(repo, name, box).catch(() => {})
      throw err
    }
  })
}

/** The creating process (host, pid, pidSpace) is judged as a lock's holder is (store/lock.ts); claims of older versions lack it. */
interface NameClaim extends Partial<ProcessRef> {
  name: string
  box: string
  at: string
}

/** A claim whose box never registered is abandoned (its creator crashed) after this long, or at once if its process is seen to be gone. */
const CLAIM_STALE_MS = 10 * 60_000

/** Whether a claim's creating process can be checked from here and has exited (crashed before it registered its box). */
function claimerGone({ host, pid, pidSpace }: NameClaim): boolean {
  return host !== undefined && pid !== undefined && processGone({ host, pid, ...(pidSpace !== undefined ? { pidSpace } : {}) })
}

const claimKey = (name: string) => createHash("sha256").update(name).digest("hex").slice(0, 32)

async function claimName(repo: Repository, name: string, box: string): Promise<void> {
  const key = claimKey(name)
  const me = thisProcess()
  for (let attempt = 0; ; attempt++) {
    if (await repo.store.createRecord("boxnames", key, { name, box, at: new Date().toISOString(), ...me } satisfies NameClaim)) return
    if (attempt >= 3) throw new AlreadyExistsError(`the name ${JSON.stringify(name)} is contended by other processes; try again`)
    const claim = await repo.store.getRecord<NameClaim>("boxnames", key).catch(orMissing)
    if (claim === undefined) continue // given back meanwhile: try again
    const holder = await repo.store.getRecord<BoxRecord>("boxes", claim.box).catch(orMissing)
    if (holder?.name === name) throw nameTaken(name, holder.id)
    const age = Date.now() - Date.parse(claim.at)
    if (holder === undefined && age < CLAIM_STALE_MS && !claimerGone(claim)) {
      throw new AlreadyExistsError(`another process is creating a box named ${JSON.stringify(name)} (${claim.box}); choose another name, or wait and try again`, { box: claim.box })
    }
    // the claim's box is gone, has another name, or never registered (and its process exited, or long ago): the claim is stale.
    // (Two processes taking over one stale claim at once can both delete it; that needs a crash first.)
    await repo.store.deleteRecord("boxnames", key)
  }
}

/** Gives a name's claim back, if this box holds it. */
async function releaseName(repo: Repository, name: string, box: string): Promise<void> {
  const claim = await repo.store.getRecord<NameClaim>("boxnames", claimKey(name)).catch(orMissing)
  if (claim?.box === box) await repo.store.deleteRecord("boxnames", claimKey(name))
}

function orMissing(err: unknown): undefined {
  if (err instanceof NotFoundError) return undefined
  throw err
}

async function assertFreshDir(dir: string): Promise<void> {
  const st = await fsp.lstat(dir).catch(() => undefined)
  if (!st) return
  if (!st.isDirectory() || (await fsp.readdir(dir)).length > 0) {
    throw new AlreadyExistsError(`${dir} already exists and is not an empty directory; choose another dir for the box`)
  }
}

/** File access inside a box; "/" is the box root. */
export class BoxFiles {
  constructor(private readonly root: string) {}

  /**
   * Maps a box path to a host path, refusing anything that leaves the box:
   * ".." above the root, NUL, or a symlink at any existing component.
   */
  async resolve(boxPath: string, opts: { allowMissing?: boolean } = {}): Promise<string> {
    if (typeof boxPath !== "string" || boxPath.includes("\0")) throw new BadInputError(`invalid box path ${JSON.stringify(boxPath)}`)
    const names: string[] = []
    for (const part of boxPath.split("/")) {
      if (part === "" || part === ".") continue
      if (part === "..") {
        if (names.length === 0) throw new BadInputError(`path ${JSON.stringify(boxPath)} leaves the box; paths are relative to the box root "/"`)
        names.pop()
      } else names.push(part)
    }
    let current = this.root
    for (let i = 0; i < names.length; i++) {
      current = path.join(current, names[i]!)
      const st = await fsp.lstat(current).catch(() => undefined)
      if (!st) {
        if (opts.allowMissing) return path.join(this.root, ...names)
        throw new NotFoundError(`no ${"/" + names.join("/")} in the box`, { path: boxPath })
      }
      if (st.isSymbolicLink()) {
        throw new BadInputError(`path ${JSON.stringify(boxPath)} goes through the symlink /${names.slice(0, i + 1).join("/")}; box file access does not follow symlinks`)
      }
      if (i < names.length - 1 && !st.isDirectory()) throw new BadInputError(`/${names.slice(0, i + 1).join("/")} is not a directory`)
    }
    return current
  }

  async read(boxPath: string): Promise<Buffer> {
    const p = await this.resolve(boxPath)
    return fsp.readFile(p, { flag: fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW } as never).catch((err) => {
      throw boxFsError(err, boxPath)
    })
  }

  async write(args: { path: string; content: string | Uint8Array; mode?: number }): Promise<void> {
    const p = await this.resolve(args.path, { allowMissing: true })
    if (p === this.root) throw new BadInputError("cannot write to the box root; give a file path")
    // create parents one by one, re-checking that none is a symlink
    const rel = path.relative(this.root, path.dirname(p))
    let dir = this.root
    for (const name of rel === "" ? [] : rel.split(path.sep)) {
      dir = path.join(dir, name)
      await fsp.mkdir(dir).catch((err) => {
        if (err.code !== "EEXIST") throw err
      })
      if ((await fsp.lstat(dir)).isSymbolicLink()) throw new BadInputError(`${args.path} goes through a symlink`)
    }
    const handle = await fsp.open(p, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW, args.mode ?? 0o644).catch((err) => {
      throw boxFsError(err, args.path)
    })
    try {
      await handle.writeFile(args.content)
    } finally {
      await handle.close()
    }
  }

  async list(boxPath = "/"): Promise<FileInfo[]> {
    const p = await this.resolve(boxPath)
    const st = await fsp.lstat(p)
    const base = "/" + path.relative(this.root, p).split(path.sep).filter(Boolean).join("/")
    const info = (name: string, full: string, s: import("node:fs").Stats, boxP: string): FileInfo => ({
      name,
      path: boxP,
      size: s.isFile() ? s.size : 0,
      isDir: s.isDirectory(),
      type: s.isDirectory() ? "dir" : s.isSymbolicLink() ? "symlink" : "file",
      mode: s.mode & 0o7777,
      modTime: s.mtime.toISOString(),
    })
    if (!st.isDirectory()) return [info(path.basename(p), p, st, base)]
    const names = (await fsp.readdir(p)).sort()
    return Promise.all(
      names.map(async (name) => {
        const full = path.join(p, name)
        return info(name, full, await fsp.lstat(full), base === "/" ? `/${name}` : `${base}/${name}`)
      }),
    )
  }

  async remove(boxPath: string): Promise<void> {
    const p = await this.resolve(boxPath)
    if (p === this.root) throw new BadInputError("refusing to remove the box root; use box.delete()")
    await fsp.rm(p, { recursive: true, force: true })
  }
}

/** A file-system error on a box path, as the CairnError that says what was wrong; others pass through. */
function boxFsError(err: NodeJS.ErrnoException, boxPath: string): unknown {
  switch (err.code) {
    case "EISDIR":
      return new BadInputError(`${JSON.stringify(boxPath)} is a directory, not a file; list it with files.list`, { path: boxPath })
    case "ENOENT":
      return new NotFoundError(`no ${JSON.stringify(boxPath)} in the box`, { path: boxPath })
    case "ELOOP":
      return new BadInputError(`${JSON.stringify(boxPath)} is a symlink; box file access does not follow symlinks`, { path: boxPath })
    case "ENOTDIR":
      return new BadInputError(`a parent of ${JSON.stringify(boxPath)} is not a directory`, { path: boxPath })
    default:
      return err
  }
}
