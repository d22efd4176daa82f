// Tool adapters: cairn, the peers that deduplicate (restic, borg, casync) and
// the baselines a user already has (cp -a, tar, git), behind one interface.
//
// A repository is a directory `repo.path` plus a sibling `repo.aux` for a
// tool's caches and temporary files; only `repo.path` counts as repository
// size. Every command goes through the Meter passed in, so the scenario
// decides what is measured. Snapshot ids are whatever the tool needs to
// restore or delete that snapshot (restic id, borg archive name, ...).

import { accessSync, constants as fsConstants } from "node:fs"
import { mkdir, readdir, rmdir } from "node:fs/promises"
import { join } from "node:path"
import { PROJECT_ROOT } from "./corpora.js"
import { CommandError, Meter, dirSize, onPath, removeTree, run, type DirSize } from "./harness.js"

export interface Repo {
  path: string
  aux: string
}

export interface Availability {
  ok: boolean
  version: string
  note?: string
}

export interface Tool {
  name: string
  kind: "cairn" | "peer" | "baseline"
  available(): Promise<Availability>
  init(repo: Repo, m: Meter): Promise<void>
  /** Snapshots `dir`; returns the id to restore or delete it by. */
  snapshot(repo: Repo, dir: string, tag: string, m: Meter): Promise<string>
  /** Restores snapshot `id` into `dest`, an existing empty directory. */
  restore(repo: Repo, id: string, dest: string, m: Meter): Promise<void>
  list(repo: Repo, m: Meter): Promise<string[]>
  forget(repo: Repo, ids: string[], m: Meter): Promise<void>
  gc(repo: Repo, m: Meter): Promise<void>
  repoSize(repo: Repo): Promise<DirSize>
  /** Extra fan-out variants (name -> runner) beyond N parallel `restore`s. */
  fanoutVariants?: Record<string, (repo: Repo, id: string, dests: string[], m: Meter) => Promise<void>>
  /**
   * false for tools with no notion of an earlier snapshot (cp, tar): their
   * nochange and change runs would only repeat first, so they are not run.
   */
  incremental?: boolean
  /** Semantics the tool does not keep, so that verification can skip them. */
  ignores?: { dirMtimes?: boolean }
}

const firstLine = (s: string): string => s.trim().split("\n")[0] ?? ""

async function version(cmd: string, args: string[]): Promise<Availability> {
  if (!(await onPath(cmd))) return { ok: false, version: "", note: `${cmd} not on PATH (bash scripts/install-peers.sh)` }
  try {
    const { stdout, stderr } = await run(cmd, args)
    return { ok: true, version: firstLine(stdout || stderr) }
  } catch (e) {
    return { ok: false, version: "", note: (e as Error).message }
  }
}

const defaultSize = (repo: Repo): Promise<DirSize> => dirSize(repo.path)

// ---------------------------------------------------------------- cairn

const CAIRN_CLI = join(PROJECT_ROOT, "dist", "cli", "main.js")

/** Finds a snapshot id in the CLI's --json output, tolerating shapes. */
export function parseCairnId(stdout: string): string {
  const text = stdout.trim()
  const candidates = [text, ...text.split("\n").reverse()]
  for (const c of candidates) {
    try {
      const j = JSON.parse(c) as Record<string, unknown>
      const snap = (j.snapshot ?? {}) as Record<string, unknown>
      const id = j.id ?? j.snapshotId ?? j.snapshot_id ?? snap.id
      if (typeof id === "string" && id) return id
    } catch {
      // not JSON: try the next line
    }
  }
  const m = /\b([0-9a-f]{12,64})\b/.exec(text)
  if (m) return m[1]!
  throw new Error(`cairn snapshot: no id in output: ${text.slice(0, 200)}`)
}

function cairn(): Tool {
  // the executable itself, as `cairn` runs (its #! line gives node's flags); the host-local cache
  // (index, stat caches, trees, restored files) goes to aux, as restic's and borg's do
  const env = (repo: Repo): { env: NodeJS.ProcessEnv } => ({ env: { ...process.env, CAIRN_CACHE_DIR: join(repo.aux, "cairn-cache") } })
  const cli = (m: Meter, repo: Repo, ...args: string[]) => m.run(CAIRN_CLI, ["--repo", repo.path, ...args], env(repo))
  const tool: Tool = {
    name: "cairn",
    kind: "cairn",
    async available() {
      try {
        accessSync(CAIRN_CLI, fsConstants.X_OK)
      } catch (err) {
        const missing = (err as NodeJS.ErrnoException).code === "ENOENT"
        return { ok: false, version: "", note: `dist/cli/main.js ${missing ? "not built yet" : "is not executable"} (npm run build)` }
      }
      try {
        const { stdout } = await run(CAIRN_CLI, ["--version"])
        return { ok: true, version: firstLine(stdout) || "cairn" }
      } catch (err) {
        return { ok: false, version: "", note: `dist/cli/main.js --version failed: ${err instanceof Error ? err.message : String(err)}` }
      }
    },
    async init(repo, m) {
      await cli(m, repo, "init")
    },
    async snapshot(repo, dir, tag, m) {
      const r = await cli(m, repo, "snapshot", dir, "--name", tag, "--json")
      return parseCairnId(r.stdout)
    },
    async restore(repo, id, dest, m) {
      try {
        await cli(m, repo, "restore", id, dest)
      } catch (e) {
        // Tolerate a CLI that wants DEST not to exist yet.
        if (!(e instanceof CommandError) || (await readdir(dest)).length > 0) throw e
        await rmdir(dest)
        await cli(m, repo, "restore", id, dest)
      }
    },
    async list(repo, m) {
      for (const cmd of ["list", "ls", "snapshots"]) {
        try {
          const r = await cli(m, repo, cmd, "--json")
          const j = JSON.parse(r.stdout) as unknown
          const arr = Array.isArray(j) ? j : ((j as Record<string, unknown>).snapshots as unknown[]) ?? []
          return arr.map((s) => (typeof s === "string" ? s : String((s as Record<string, unknown>).id)))
        } catch {
          // try the next spelling
        }
      }
      return []
    },
    async forget(repo, ids, m) {
      await cli(m, repo, "rm", ...ids)
    },
    async gc(repo, m) {
      await cli(m, repo, "gc")
    },
    repoSize: defaultSize,
    fanoutVariants: {
      // One `box create` per destination, concurrently; boxes live where the
      // CLI puts them, so only time and memory are measured.
      "box-create-4": async (repo, id, dests, m) => {
        await m.parallel(dests.map(() => (mm: Meter) => cli(mm, repo, "box", "create", "--from", id, "--json")))
      },
      // One `cairn restore` given all N destinations: one pass fills them all.
      "one-cli-4": async (repo, id, dests, m) => {
        await cli(m, repo, "restore", id, ...dests)
      },
      // One process, N restores through the library with Promise.all (which share one pass).
      "promise-all-4": async (repo, id, dests, m) => {
        const script = join(PROJECT_ROOT, "dist", "bench", "cairn-fanout.js")
        await m.run("node", [script, repo.path, id, ...dests], env(repo))
      },
    },
  }
  return tool
}

// ---------------------------------------------------------------- restic

function restic(): Tool {
  const env = (repo: Repo): NodeJS.ProcessEnv => ({
    ...process.env,
    RESTIC_REPOSITORY: repo.path,
    RESTIC_PASSWORD: "cairn-bench",
    RESTIC_CACHE_DIR: join(repo.aux, "restic-cache"),
  })
  return {
    name: "restic",
    kind: "peer",
    available: () => version("restic", ["version"]),
    async init(repo, m) {
      await m.run("restic", ["init", "--repository-version", "2", "-q"], { env: env(repo) })
    },
    async snapshot(repo, dir, tag, m) {
      // Back up "." from inside dir so that restores land at the top of the target.
      const r = await m.run("restic", ["backup", "--compression", "auto", "--host", "bench", "--tag", tag, "--json", "."], {
        cwd: dir,
        env: env(repo),
        okCodes: [0],
      })
      for (const line of r.stdout.trim().split("\n").reverse()) {
        try {
          const j = JSON.parse(line) as { message_type?: string; snapshot_id?: string }
          if (j.message_type === "summary" && j.snapshot_id) return j.snapshot_id
        } catch {
          // progress lines
        }
      }
      throw new Error("restic backup: no snapshot id in output")
    },
    async restore(repo, id, dest, m) {
      await m.run("restic", ["restore", id, "--target", dest, "-q"], { env: env(repo) })
    },
    async list(repo, m) {
      const r = await m.run("restic", ["snapshots", "--json"], { env: env(repo) })
      return (JSON.parse(r.stdout) as Array<{ id: string }>).map((s) => s.id)
    },
    async forget(repo, ids, m) {
      await m.run("restic", ["forget", "-q", ...ids], { env: env(repo) })
    },
    async gc(repo, m) {
      await m.run("restic", ["prune", "-q"], { env: env(repo) })
    },
    repoSize: defaultSize,
  }
}

// ---------------------------------------------------------------- borg

function borg(): Tool {
  const env = (repo: Repo): NodeJS.ProcessEnv => ({
    ...process.env,
    BORG_REPO: repo.path,
    BORG_BASE_DIR: join(repo.aux, "borg-base"),
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "yes",
    BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
  })
  return {
    name: "borg",
    kind: "peer",
    available: () => version("borg", ["--version"]),
    async init(repo, m) {
      await m.run("borg", ["init", "-e", "none", repo.path], { env: env(repo) })
    },
    async snapshot(repo, dir, tag, m) {
      await m.run("borg", ["create", "-C", "lz4", `::${tag}`, "."], { cwd: dir, env: env(repo) })
      return tag
    },
    async restore(repo, id, dest, m) {
      await m.run("borg", ["extract", `::${id}`], { cwd: dest, env: env(repo) })
    },
    async list(repo, m) {
      const r = await m.run("borg", ["list", "--short"], { env: env(repo) })
      return r.stdout.trim().split("\n").filter(Boolean)
    },
    async forget(repo, ids, m) {
      await m.run("borg", ["delete", repo.path, ...ids], { env: env(repo) })
    },
    async gc(repo, m) {
      await m.run("borg", ["compact", repo.path], { env: env(repo) })
    },
    repoSize: defaultSize,
  }
}

// ---------------------------------------------------------------- casync

function casync(): Tool {
  const store = (repo: Repo): string => join(repo.path, "default.castr")
  const index = (repo: Repo, id: string): string => join(repo.path, "indexes", `${id}.caidx`)
  return {
    name: "casync",
    kind: "peer",
    available: () => version("casync", ["--version"]),
    async init(repo) {
      await mkdir(join(repo.path, "indexes"), { recursive: true })
    },
    async snapshot(repo, dir, tag, m) {
      await m.run("casync", ["make", `--store=${store(repo)}`, index(repo, tag), dir])
      return tag
    },
    async restore(repo, id, dest, m) {
      await m.run("casync", ["extract", `--store=${store(repo)}`, index(repo, id), dest])
    },
    async list(repo) {
      return (await readdir(join(repo.path, "indexes"))).map((f) => f.replace(/\.caidx$/, ""))
    },
    async forget(repo, ids, m) {
      await m.run("rm", ["-f", ...ids.map((id) => index(repo, id))])
    },
    async gc(repo, m) {
      const left = (await readdir(join(repo.path, "indexes"))).map((f) => join(repo.path, "indexes", f))
      if (left.length) await m.run("casync", ["gc", `--store=${store(repo)}`, ...left])
      else await m.run("rm", ["-rf", store(repo)])
    },
    repoSize: defaultSize,
  }
}

// ---------------------------------------------------------------- baselines

function cp(): Tool {
  const snap = (repo: Repo, id: string): string => join(repo.path, id)
  return {
    name: "cp",
    kind: "baseline",
    incremental: false,
    available: () => version("cp", ["--version"]),
    async init(repo) {
      await mkdir(repo.path, { recursive: true })
    },
    async snapshot(repo, dir, tag, m) {
      await m.run("cp", ["-a", dir, snap(repo, tag)])
      return tag
    },
    async restore(repo, id, dest, m) {
      await m.run("cp", ["-a", `${snap(repo, id)}/.`, dest])
    },
    async list(repo) {
      return readdir(repo.path)
    },
    async forget(repo, ids, m) {
      await m.run("rm", ["-rf", ...ids.map((id) => snap(repo, id))])
    },
    async gc() {},
    repoSize: defaultSize,
  }
}

function tar(): Tool {
  const file = (repo: Repo, id: string): string => join(repo.path, `${id}.tar`)
  return {
    name: "tar",
    kind: "baseline",
    incremental: false,
    available: () => version("tar", ["--version"]),
    async init(repo) {
      await mkdir(repo.path, { recursive: true })
    },
    async snapshot(repo, dir, tag, m) {
      // POSIX (pax) format keeps sub-second mtimes; drop atime/ctime records.
      await m.run("tar", ["--format=posix", "--pax-option=delete=atime,delete=ctime", "-cf", file(repo, tag), "-C", dir, "."])
      return tag
    },
    async restore(repo, id, dest, m) {
      await m.run("tar", ["-xf", file(repo, id), "-C", dest])
    },
    async list(repo) {
      return (await readdir(repo.path)).map((f) => f.replace(/\.tar$/, ""))
    },
    async forget(repo, ids, m) {
      await m.run("rm", ["-f", ...ids.map((id) => file(repo, id))])
    },
    async gc() {},
    repoSize: defaultSize,
  }
}

function git(): Tool {
  const gitArgs = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "gc.auto=0", "-c", "core.autocrlf=false"]
  const env = (repo: Repo, workTree: string, index?: string): NodeJS.ProcessEnv => ({
    ...process.env,
    GIT_DIR: repo.path,
    GIT_WORK_TREE: workTree,
    ...(index ? { GIT_INDEX_FILE: index } : {}),
  })
  return {
    name: "git",
    kind: "baseline",
    available: () => version("git", ["--version"]),
    ignores: { dirMtimes: true },
    async init(repo, m) {
      // A non-bare git dir whose work tree is the corpus itself (no copy):
      // its index is git's stat cache, as in a checkout of the tree.
      await m.run("git", ["init", "-q", "--bare", repo.path], { env: { ...process.env } })
      await m.run("git", ["--git-dir", repo.path, "config", "core.bare", "false"])
    },
    async snapshot(repo, dir, tag, m) {
      // Each snapshot is a parentless commit under refs/snaps/, so deleting
      // refs and running gc frees what only those snapshots used.
      const g = `git ${gitArgs.join(" ")}`
      await m.sh(`${g} add -A && C=$(${g} commit-tree $(${g} write-tree) -m ${tag}) && ${g} update-ref refs/snaps/${tag} $C`, {
        cwd: dir,
        env: env(repo, dir),
      })
      return tag
    },
    async restore(repo, id, dest, m) {
      // A fresh index per restore, so parallel restores do not share one.
      await m.run("git", [...gitArgs, "read-tree", "--reset", "-u", `refs/snaps/${id}`], {
        cwd: dest,
        env: env(repo, dest, join(repo.aux, `restore-${id}-${Math.random().toString(36).slice(2)}.index`)),
      })
    },
    async list(repo, m) {
      const r = await m.run("git", ["for-each-ref", "--format=%(refname:lstrip=2)", "refs/snaps"], { env: env(repo, repo.path) })
      return r.stdout.trim().split("\n").filter(Boolean)
    },
    async forget(repo, ids, m) {
      for (const id of ids) await m.run("git", ["update-ref", "-d", `refs/snaps/${id}`], { env: env(repo, repo.path) })
    },
    async gc(repo, m) {
      await m.sh("git reflog expire --expire=now --all && git gc -q --prune=now", { env: { ...process.env, GIT_DIR: repo.path } })
    },
    repoSize: defaultSize,
  }
}

export const ALL_TOOLS = ["cairn", "restic", "borg", "casync", "cp", "tar", "git"] as const

export function makeTools(): Tool[] {
  return [cairn(), restic(), borg(), casync(), cp(), tar(), git()]
}

/** Removes a repository and its aux directory. */
export async function removeRepo(repo: Repo): Promise<void> {
  await removeTree(repo.path)
  await removeTree(repo.aux)
}
