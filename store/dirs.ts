// Creating the directories cairn owns (a repository, a host cache) with an
// error that says what went wrong and what to do, instead of a bare errno.
//
// Not fs.mkdir's `recursive`: on Linux it reports a read-only file system as
// ENOENT, and on a parent that refuses every new name with ENOENT (procfs) it
// retries forever. Here each missing component is created in turn.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { IoError } from "./errors.js"

/**
 * mkdir -p. `what` names the directory in messages ("cache directory"), and
 * `fix` says what to do when it cannot be made.
 */
export async function makeDirs(dir: string, opts: { what: string; fix: string; mode?: number }): Promise<void> {
  const mode = opts.mode ?? 0o700
  const abs = path.resolve(dir)
  const fail = (err: unknown, at: string) => {
    const code = (err as NodeJS.ErrnoException).code
    const why =
      code === "EROFS"
        ? "the file system is read-only"
        : code === "EACCES" || code === "EPERM"
          ? "permission denied"
          : code === "ENOTDIR"
            ? `${at} is not a directory`
            : code === "ENOSPC"
              ? "the disk is full"
              : `${at} cannot be created (${code ?? String(err)})`
    return new IoError(`cannot create the ${opts.what} ${abs}: ${why}; ${opts.fix}`, { path: abs, errno: code }, err)
  }
  // the missing components, deepest first, up to the first that exists
  const missing: string[] = []
  for (let at = abs; ; at = path.dirname(at)) {
    let st
    try {
      st = await fsp.stat(at)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== "ENOENT" && code !== "ENOTDIR") throw fail(err, at) // ENOTDIR: a file further up, found below
    }
    if (st) {
      if (!st.isDirectory()) throw fail(Object.assign(new Error("not a directory"), { code: "ENOTDIR" }), at)
      break
    }
    missing.push(at)
    if (path.dirname(at) === at) break
  }
  for (const at of missing.reverse()) {
    try {
      await fsp.mkdir(at, { mode })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST" && (await fsp.stat(at)).isDirectory()) continue // made meanwhile
      throw fail(err, at)
    }
  }
}
