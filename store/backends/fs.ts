// Filesystem backend: one file per object under a root directory.
//
// put writes "<key>~tmp-<random>", fsyncs it, renames it over the key and
// fsyncs the directory, so a crash leaves the old object or the new one (a
// volatile put skips both fsyncs: see PutOptions).
// createWriter's object is a temp file at the root, written as it grows;
// its commit fsyncs it, renames it to its key and fsyncs the directory.
// putIfAbsent writes the temp file the same way and link()s it to the key,
// which fails atomically with EEXIST when another writer won. Temp files a
// crash leaves behind are never listed and are swept by sweepTemp().
// Files are created 0600 and directories 0700: a repository holds whole
// workspaces, secrets included.

import { randomBytes } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { checkKey, checkPrefix, type ByteRange, type ObjectInfo, type ObjectStore, type ObjectWriter, type PutOptions } from "../backend.js"
import { IoError, NotFoundError } from "../errors.js"

// "~" is outside the key alphabet, so no real key looks like a temp file
const TEMP_MARK = "~tmp-"
const FILE_MODE = 0o600
const DIR_MODE = 0o700

export class FsObjectStore implements ObjectStore {
  readonly location: string
  private readonly madeDirs = new Set<string>()

  constructor(readonly root: string) {
    this.location = root
  }

  get localRoot(): string {
    return this.root
  }

  private file(key: string): string {
    checkKey(key)
    return path.join(this.root, ...key.split("/"))
  }

  async put(key: string, data: Uint8Array, opts?: PutOptions): Promise<void> {
    const dest = this.file(key)
    const durable = !opts?.volatile
    const temp = await this.writeTemp(dest, data, durable)
    try {
      await fsp.rename(temp, dest)
    } catch (err) {
      await fsp.rm(temp, { force: true })
      throw ioError(err, "write", key)
    }
    if (durable) await syncDir(path.dirname(dest))
  }

  /**
   * A pack written as it fills, into a temp file at the root (the key, which
   * names the directory, is known only at commit); commit fsyncs it, renames
   * it to the key and fsyncs the key's directory, as put does.
   */
  async createWriter(): Promise<ObjectWriter> {
    const temp = path.join(this.root, `object${TEMP_MARK}${randomBytes(6).toString("hex")}`)
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(temp, "wx+", FILE_MODE)
    } catch (err) {
      throw ioError(err, "create", path.basename(temp))
    }
    return new FileWriter(this, handle, temp)
  }

  /** The file of a key, its directory made (once per directory): where a FileWriter's commit renames its temp file. */
  async fileFor(key: string): Promise<string> {
    const dest = this.file(key)
    await this.makeDir(path.dirname(dest), key)
    return dest
  }

  private async makeDir(dir: string, key: string): Promise<void> {
    if (this.madeDirs.has(dir)) return
    await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE }).catch((err) => {
      throw ioError(err, "create directory for", key)
    })
    this.madeDirs.add(dir)
  }

  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    const dest = this.file(key)
    const temp = await this.writeTemp(dest, data)
    try {
      await fsp.link(temp, dest)
      await syncDir(path.dirname(dest))
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false
      throw ioError(err, "create", key)
    } finally {
      await fsp.rm(temp, { force: true })
    }
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array> {
    const file = this.file(key)
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(file, "r")
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new NotFoundError(`object ${key} does not exist in ${this.location}`, { key })
      }
      throw ioError(err, "read", key)
    }
    try {
      const offset = range?.offset ?? 0
      const length = range?.length ?? (await handle.stat()).size - offset
      const buf = range?.into && range.into.length >= length ? range.into.subarray(0, length) : Buffer.allocUnsafe(Math.max(0, length))
      let done = 0
      while (done < buf.length) {
        const { bytesRead } = await handle.read(buf, done, buf.length - done, offset + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      return done === buf.length ? buf : buf.subarray(0, done)
    } catch (err) {
      throw ioError(err, "read", key)
    } finally {
      await handle.close()
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await fsp.stat(this.file(key))
      return { key, size: st.size, mtimeMs: st.mtimeMs }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined
      throw ioError(err, "stat", key)
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    checkPrefix(prefix)
    const slash = prefix.lastIndexOf("/")
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash)
    const out: ObjectInfo[] = []
    await this.walk(dirKey, prefix, out)
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  }

  private async walk(dirKey: string, prefix: string, out: ObjectInfo[]): Promise<void> {
    const dir = dirKey === "" ? this.root : path.join(this.root, ...dirKey.split("/"))
    let entries
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return
      throw ioError(err, "list", dirKey)
    }
    const stats: Promise<void>[] = []
    for (const entry of entries) {
      const key = dirKey === "" ? entry.name : `${dirKey}/${entry.name}`
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await this.walk(key, prefix, out)
      } else if (entry.isFile() && key.startsWith(prefix) && !entry.name.includes(TEMP_MARK)) {
        stats.push(
          fsp.stat(path.join(dir, entry.name)).then(
            (st) => void out.push({ key, size: st.size, mtimeMs: st.mtimeMs }),
            (err) => {
              if (err.code !== "ENOENT") throw ioError(err, "list", key)
            },
          ),
        )
      }
    }
    await Promise.all(stats)
  }

  async delete(key: string): Promise<void> {
    try {
      await fsp.rm(this.file(key), { force: true })
    } catch (err) {
      throw ioError(err, "delete", key)
    }
  }

  /** Removes temp files older than maxAgeMs that crashed writers left behind. */
  async sweepTemp(maxAgeMs: number): Promise<number> {
    let removed = 0
    const now = Date.now()
    const visit = async (dir: string): Promise<void> => {
      const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])
      for (const entry of entries) {
        const full = path.join(dir, entry.name)
        if (entry.isDirectory()) await visit(full)
        else if (entry.name.includes(TEMP_MARK)) {
          const st = await fsp.stat(full).catch(() => undefined)
          if (st && now - st.mtimeMs > maxAgeMs) {
            await fsp.rm(full, { force: true })
            removed++
          }
        }
      }
    }
    await visit(this.root)
    return removed
  }

  async close(): Promise<void> {}

  private async writeTemp(dest: string, data: Uint8Array, durable = true): Promise<string> {
    await this.makeDir(path.dirname(dest), path.relative(this.root, dest))
    const temp = `${dest}${TEMP_MARK}${randomBytes(6).toString("hex")}`
    let handle: fsp.FileHandle | undefined
    try {
      handle = await fsp.open(temp, "wx", FILE_MODE)
      let done = 0
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done)
        done += bytesWritten
      }
      if (durable) await handle.sync()
      await handle.close()
      handle = undefined
      return temp
    } catch (err) {
      await handle?.close().catch(() => {})
      await fsp.rm(temp, { force: true })
      throw ioError(err, "write", path.relative(this.root, dest))
    }
  }
}

/** FsObjectStore.createWriter's object: positional writes after one another, reads at any offset written. */
class FileWriter implements ObjectWriter {
  private size = 0
  private committed?: string

  constructor(
    private readonly store: FsObjectStore,
    private readonly handle: fsp.FileHandle,
    private readonly temp: string,
  ) {}

  private get name(): string {
    return this.committed ?? path.basename(this.temp)
  }

  async write(bytes: Uint8Array): Promise<void> {
    const at = this.size
    this.size += bytes.length
    try {
      for (let done = 0; done < bytes.length; ) done += (await this.handle.write(bytes, done, bytes.length - done, at + done)).bytesWritten
    } catch (err) {
      throw ioError(err, "write", this.name)
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const buf = Buffer.allocUnsafe(length)
    try {
      for (let done = 0; done < length; ) {
        const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done)
        if (bytesRead === 0) throw new Error(`only ${done} of ${length} bytes at ${offset}`)
        done += bytesRead
      }
    } catch (err) {
      throw ioError(err, "read", this.name)
    }
    return buf
  }

  async commit(key: string): Promise<void> {
    try {
      await this.handle.sync()
    } catch (err) {
      throw ioError(err, "write", key)
    }
    const dest = await this.store.fileFor(key)
    try {
      await fsp.rename(this.temp, dest)
    } catch (err) {
      throw ioError(err, "write", key)
    }
    this.committed = key
    await syncDir(path.dirname(dest))
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => {})
    if (this.committed === undefined) await fsp.rm(this.temp, { force: true })
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

function ioError(err: unknown, verb: string, key: string): IoError {
  const code = (err as NodeJS.ErrnoException)?.code
  const hint =
    code === "ENOSPC"
      ? "the disk is full; free some space and try again"
      : code === "EACCES" || code === "EPERM"
        ? "check the repository's permissions"
        : "check the disk and try again"
  return new IoError(`could not ${verb} ${key} (${code ?? String(err)}): ${hint}`, { key, errno: code }, err)
}
