// The real CLI as a subprocess, on temp directories and a temp repository.
import { execFile, spawn } from "node:child_process"
import { promises as fsp } from "node:fs"
import os from "node:os"
import path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { pidSpace } from "../../store/lock.js"
import { buildTree, describeTree } from "../fixtures.js"
import { seededBytes, tempDir } from "../helpers.js"

const MAIN = path.resolve(import.meta.dirname, "../../dist/cli/main.js")

interface Run {
  code: number
  stdout: string
  stderr: string
}

function cairn(args: string[], env: Record<string, string> = {}, input?: Buffer): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [MAIN, ...args],
      { env: { ...process.env, ...env }, encoding: "buffer", maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0
        resolve({ code: typeof code === "number" ? code : 1, stdout: stdout.toString(), stderr: stderr.toString() })
      },
    )
    if (input) child.stdin!.end(input)
  })
}

let repo: string
let src: string
let env: Record<string, string>
const lastLine = (s: string) => s.trim().split("\n").pop()!

beforeAll(async () => {
  const root = await tempDir()
  repo = path.join(root, "repo")
  src = path.join(root, "src")
  env = { CAIRN_CACHE_DIR: path.join(root, "cache"), CAIRN_REPO: path.join(root, "default-repo") }
  await buildTree(src, {
    "a.txt": { file: "alpha\n", mode: 0o640 },
    bin: { dir: { "run.sh": { file: "#!/bin/sh\necho hi\n", mode: 0o755 } } },
    empty: { dir: {} },
    link: { symlink: "a.txt" },
  })
  expect((await cairn(["--repo", repo, "init"], env)).code).toBe(0)
})

describe("cairn CLI", () => {
  it("the executable runs itself, with the node flags and malloc settings of its #! line, not passed on", async () => {
    const preload = path.join(await tempDir(), "flags.mjs")
    const show = "(when) => process.stderr.write(when + ' ' + JSON.stringify([process.env.MALLOC_ARENA_MAX, process.env.MALLOC_MMAP_THRESHOLD_, process.env.MALLOC_TRIM_THRESHOLD_]) + '\\n')"
    await fsp.writeFile(
      preload,
      `const show = ${show}\nshow('start')\nprocess.on('exit', () => { show('exit'); process.stderr.write('execArgv ' + JSON.stringify(process.execArgv) + '\\n') })\n`,
    )
    const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile(MAIN, ["--version"], { env: { ...process.env, NODE_OPTIONS: `--import=${preload}` } }, (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr }))),
    )
    expect(stdout).toMatch(/^cairn \d+\.\d+\.\d+ /)
    expect(stderr).toContain('execArgv ["--max-semi-space-size=2","--heap-growing-percent=120","--interrupt-budget=1000000"]')
    expect(stderr).toContain('start ["2","4194304","67108864"]') // what glibc read when the process started
    expect(stderr).toContain("exit [null,null,null]") // and what a command it runs would not see
  })

  it("an unchanged snapshot loads neither node:child_process, node:zlib nor node:worker_threads (start-up time)", async () => {
    const preload = path.join(await tempDir(), "modules.cjs")
    await fsp.writeFile(preload, "process.on('exit', () => process.stderr.write('modules ' + JSON.stringify(process.moduleLoadList) + '\\n'))\n")
    const root = await tempDir()
    await buildTree(path.join(root, "w"), { "a.txt": { file: "a" }, d: { dir: { "b.txt": { file: "b" } } } })
    const where = ["--repo", path.join(root, "repo")]
    const envs = { CAIRN_CACHE_DIR: path.join(root, "cache") }
    expect((await cairn([...where, "init"], envs)).code).toBe(0)
    expect((await cairn([...where, "snapshot", path.join(root, "w")], envs)).code).toBe(0)
    const again = await cairn([...where, "snapshot", path.join(root, "w")], { ...envs, NODE_OPTIONS: `--require=${preload}` })
    expect(again.code).toBe(0)
    const loaded = JSON.parse(again.stderr.split("modules ")[1]!) as string[]
    expect(loaded).toContain("NativeModule fs") // the list is node's own
    for (const name of ["child_process", "zlib", "worker_threads"]) expect(loaded).not.toContain(`NativeModule ${name}`)
  })

  it("snapshot prints the id last; ls, show, cat and restore round-trip", async () => {
    const snap = await cairn(["--repo", repo, "snapshot", src, "--name", "first"], env)
    expect(snap.code).toBe(0)
    const id = lastLine(snap.stdout)
    expect(id).toMatch(/^snap_[0-9a-f]{16}$/)
    expect(snap.stderr).toBe("") // no progress bar when stderr is not a TTY
    const ls = await cairn(["--repo", repo, "ls", "--json"], env)
    expect(JSON.parse(ls.stdout).map((s: { id: string }) => s.id)).toContain(id)
    expect((await cairn(["--repo", repo, "ls"], env)).stdout).toContain("first")
    const show = await cairn(["--repo", repo, "show", id, "/bin"], env)
    expect(show.stdout).toContain("/bin/run.sh")
    expect((await cairn(["--repo", repo, "cat", "first", "a.txt"], env)).stdout).toBe("alpha\n")
    const dest = path.join(await tempDir(), "out")
    const restore = await cairn(["--repo", repo, "restore", id, dest], env)
    expect(restore.code).toBe(0)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
  })

  it("cat of a symlink names its target, of a directory says to list it; stats of an empty repository shows no ratio", async () => {
    const link = await cairn(["--repo", repo, "cat", "first", "link"], env)
    expect(link.code).not.toBe(0)
    expect(link.stderr).toMatch(/^cairn: link is a symlink in the snapshot \(to "a\.txt"\), not a file/)
    const dir = await cairn(["--repo", repo, "cat", "first", "bin"], env)
    expect(dir.code).not.toBe(0)
    expect(dir.stderr).toMatch(/^cairn: bin is a directory in the snapshot, not a file; list it instead \(cairn show/)
    const empty = path.join(await tempDir(), "empty-repo")
    expect((await cairn(["--repo", empty, "init"], env)).code).toBe(0)
    const stats = await cairn(["--repo", empty, "stats"], env)
    expect(stats.stdout).toMatch(/dedup ratio\s+- \(nothing stored yet\)/)
    expect(JSON.parse((await cairn(["--repo", empty, "stats", "--json"], env)).stdout)).toMatchObject({ snapshots: 0, dedupRatio: 0 })
  })

  it("restores into a non-empty directory only with --overwrite, and writes nothing otherwise", async () => {
    const dest = await tempDir()
    await fsp.writeFile(path.join(dest, "mine.txt"), "keep")
    const r = await cairn(["--repo", repo, "restore", "first", dest], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^cairn: .*not empty.*--overwrite/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect(await fsp.readdir(dest)).toEqual(["mine.txt"])
  })

  it("restore into several destinations fills each in one pass; a refused one is reported and exits non-zero", async () => {
    const root = await tempDir()
    const [a, b, c] = ["a", "b", "c"].map((n) => path.join(root, n)) as [string, string, string]
    const r = await cairn(["--repo", repo, "restore", "first", a, b, "--json"], env)
    expect(r.code).toBe(0)
    const out = JSON.parse(r.stdout)
    expect(out.results.map((x: { dest: string; sharedWith: number }) => [x.dest, x.sharedWith])).toEqual([
      [a, 1],
      [b, 1],
    ])
    expect(out.failed).toEqual([])
    for (const d of [a, b]) expect(await describeTree(d)).toEqual(await describeTree(src))
    await fsp.mkdir(c)
    await fsp.writeFile(path.join(c, "mine.txt"), "keep")
    const d = path.join(root, "d")
    const partly = await cairn(["--repo", repo, "restore", "first", c, d], env)
    expect(partly.code).toBe(1)
    expect(partly.stdout).toBe(`restored 2 files, 2 dirs, 1 symlinks (24 B) into ${d}\n`)
    expect(partly.stderr).toMatch(/^cairn: cannot restore into .*\/c: it is not empty/)
    expect(await describeTree(d)).toEqual(await describeTree(src))
    expect(await fsp.readdir(c)).toEqual(["mine.txt"])
    const both = await cairn(["--repo", repo, "restore", "first", c, path.join(c, "inside")], env)
    expect(both.code).toBe(1)
    expect(both.stderr).toMatch(/^cairn: 2 of 2 restores failed: .*not empty.*; .*one lies inside the other/)
  })

  it("a refused restore of a large snapshot exits (its writer threads had started)", async () => {
    const many = await tempDir()
    await buildTree(many, Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`f${i}.txt`, { file: `file ${i}` }])))
    const id = lastLine((await cairn(["--repo", repo, "snapshot", many], env)).stdout)
    const dest = await tempDir()
    await fsp.writeFile(path.join(dest, "mine.txt"), "keep")
    const started = Date.now()
    const r = await cairn(["--repo", repo, "restore", id, dest], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^cairn: .*not empty/)
    expect(Date.now() - started).toBeLessThan(20_000)
    expect(await fsp.readdir(dest)).toEqual(["mine.txt"])
  })

  it("SIGINT or SIGTERM stops a restore cleanly: no temp file, the lock released, exit 128+signal", async () => {
    const many = await tempDir()
    await buildTree(many, { d: { dir: Object.fromEntries(Array.from({ length: 6000 }, (_, i) => [`f${i}.bin`, { file: seededBytes(`sig${i}`, 3000) }])) } })
    const id = lastLine((await cairn(["--repo", repo, "snapshot", many], env)).stdout)
    for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      const dest = path.join(await tempDir(), "out")
      const child = execFile(process.execPath, [MAIN, "--repo", repo, "restore", id, dest], { env: { ...process.env, ...env } })
      let stderr = ""
      child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()))
      const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
      // the signal lands once the restore has made its destination, long before 6,000 files are in place
      while (!(await fsp.stat(dest).catch(() => undefined))) await new Promise((r) => setTimeout(r, 2))
      child.kill(signal)
      expect(await exited).toBe(code)
      expect(stderr).toBe(`cairn: interrupted by ${signal}: restore stopped cleanly\n`)
      const left = await fsp.readdir(dest, { recursive: true })
      expect(left.length).toBeLessThan(6001)
      expect(left.filter((n) => n.includes(".cairn-"))).toEqual([])
      // the lock is released: the same restore runs to the end
      const again = await cairn(["--repo", repo, "restore", "--overwrite", id, dest], env)
      expect(again.code).toBe(0)
      expect(await fsp.readdir(path.join(dest, "d"))).toHaveLength(6000)
    }
  })

  it("latest names the newest snapshot; restore --no-cache and --link", async () => {
    const big = await tempDir()
    await buildTree(big, { "big.bin": { file: seededBytes("cli-link", 400_000), mode: 0o644 }, "s.txt": { file: "s\n" } })
    const id = lastLine((await cairn(["--repo", repo, "snapshot", big, "--quiet"], env)).stdout)
    const shown = await cairn(["--repo", repo, "show", "latest", "--json"], env)
    expect(shown.code, shown.stderr).toBe(0)
    expect(shown.stdout).toContain("big.bin")
    const plain = path.join(await tempDir(), "plain")
    const r1 = await cairn(["--repo", repo, "restore", "latest", plain, "--no-cache", "--json"], env)
    expect(r1.code, r1.stderr).toBe(0)
    expect(JSON.parse(r1.stdout).fromCache ?? 0).toBe(0)
    expect(await describeTree(plain)).toEqual(await describeTree(big))
    // the first restore that uses the cache fills it, the next copies from it
    const restoreJson = async (...extra: string[]) => {
      const r = await cairn(["--repo", repo, "restore", id, path.join(await tempDir(), "out"), "--json", ...extra], env)
      expect(r.code, r.stderr).toBe(0)
      return JSON.parse(r.stdout) as { dest: string; fromCache?: number }
    }
    expect((await restoreJson()).fromCache ?? 0).toBe(0)
    expect((await restoreJson()).fromCache).toBe(1)
    // --link: the large file is a read-only hardlink into the cache (its entries carry mode and mtime)
    await restoreJson("--link")
    const again = await restoreJson("--link")
    expect(again.fromCache).toBe(1)
    const linked = again.dest
    const st = await fsp.stat(path.join(linked, "big.bin"))
    expect(st.nlink).toBeGreaterThan(1)
    expect(st.mode & 0o222).toBe(0)
    expect(await fsp.readFile(path.join(linked, "big.bin"))).toEqual(await fsp.readFile(path.join(big, "big.bin")))
    const both = await cairn(["--repo", repo, "restore", id, path.join(await tempDir(), "x"), "--link", "--no-cache"], env)
    expect(both.code).toBe(2)
    expect(both.stderr).toMatch(/--link .*--no-cache/)
  })

  it("rm removes a snapshot; the other stays", async () => {
    const a = lastLine((await cairn(["--repo", repo, "snapshot", src, "--name", "tmp"], env)).stdout)
    expect((await cairn(["--repo", repo, "rm", a], env)).code).toBe(0)
    expect((await cairn(["--repo", repo, "show", a], env)).code).toBe(5)
    expect((await cairn(["--repo", repo, "show", "first"], env)).code).toBe(0)
  })

  it("boxes: create, ls, exec, rm", async () => {
    const created = await cairn(["--repo", repo, "box", "create", "--from", "first", "--name", "dev", "--json"], env)
    expect(created.code).toBe(0)
    const box = JSON.parse(created.stdout)
    expect(await describeTree(box.dir)).toEqual(await describeTree(src))
    const exec = await cairn(["--repo", repo, "box", "exec", "dev", "--", "sh", "-c", "cat a.txt; exit 7"], env)
    expect(exec).toMatchObject({ code: 7, stdout: "alpha\n" })
    expect((await cairn(["--repo", repo, "box", "ls"], env)).stdout).toContain(box.id)
    const snap = await cairn(["--repo", repo, "snapshot", "dev"], env)
    expect(snap.code).toBe(0)
    expect((await cairn(["--repo", repo, "box", "rm", "dev"], env)).code).toBe(0)
    await expect(fsp.stat(box.dir)).rejects.toThrow()
    expect((await cairn(["--repo", repo, "show", lastLine(snap.stdout)], env)).code).toBe(0)
    // several boxes from one snapshot, in one pass
    const many = await cairn(["--repo", repo, "box", "create", "--from", "first", "--count", "3", "--json"], env)
    expect(many.code).toBe(0)
    const made = JSON.parse(many.stdout) as Array<{ id: string; dir: string; fromSnapshot: string }>
    expect(made).toHaveLength(3)
    for (const b of made) expect(await describeTree(b.dir)).toEqual(await describeTree(src))
    const plain = await cairn(["--repo", repo, "box", "create", "--from", "first", "--count", "2", "--quiet"], env)
    expect(plain.stdout).toMatch(/^box_[0-9a-f]{16}\nbox_[0-9a-f]{16}\n$/)
    for (const bad of [["--count", "2"], ["--from", "first", "--count", "0"], ["--from", "first", "--count", "2", "--name", "x"]]) {
      const r = await cairn(["--repo", repo, "box", "create", ...bad], env)
      expect(r.code, bad.join(" ")).toBe(2)
      expect(r.stderr).toMatch(/^cairn: .*--count/)
    }
  })

  it("export and import a tar stream", async () => {
    const tarFile = path.join(await tempDir(), "snap.tar")
    expect(await cairn(["--repo", repo, "export", "first", "-o", tarFile], env)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^wrote 2 files \(/) })
    const one = path.join(path.dirname(tarFile), "one.tar")
    expect((await cairn(["--repo", repo, "export", "first", "--path", "a.txt", "-o", one], env)).stdout).toBe(`wrote 1 file (6 B) to ${one}\n`)
    const imported = await cairn(["--repo", repo, "import", "-", "--name", "from-tar"], env, await fsp.readFile(tarFile))
    expect(imported.code).toBe(0)
    const dest = path.join(await tempDir(), "t")
    expect((await cairn(["--repo", repo, "restore", "from-tar", dest], env)).code).toBe(0)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
  })

  it("import keeps a symlink to outside the archive only with --external-symlinks", async () => {
    const dir = await tempDir()
    await buildTree(path.join(dir, "src"), { "f.txt": { file: "x" }, sh: { symlink: "/bin/sh" } })
    const snap = lastLine((await cairn(["--repo", repo, "snapshot", path.join(dir, "src")], env)).stdout)
    const tar = path.join(dir, "links.tar")
    expect((await cairn(["--repo", repo, "export", snap, "-o", tar], env)).code).toBe(0)
    const refused = await cairn(["--repo", repo, "import", tar], env)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/^cairn: tar entry "sh" is refused: .*absolute path; .*cairn import --external-symlinks/)
    const kept = await cairn(["--repo", repo, "import", tar, "--external-symlinks"], env)
    expect(kept.code).toBe(0)
    const dest = path.join(dir, "out")
    expect((await cairn(["--repo", repo, "restore", lastLine(kept.stdout), dest], env)).code).toBe(0)
    expect(await fsp.readlink(path.join(dest, "sh"))).toBe("/bin/sh")
  })

  it("a destination or box directory that cannot be made is refused with the reason, not 'unexpected'", async () => {
    const dir = await tempDir()
    await fsp.writeFile(path.join(dir, "file"), "x")
    const restore = await cairn(["--repo", repo, "restore", "first", path.join(dir, "file", "out")], env)
    expect(restore).toMatchObject({ code: 1, stderr: `cairn: cannot create the destination ${path.join(dir, "file", "out")}: ${path.join(dir, "file")} is not a directory; choose a destination you can write to\n` })
    const box = await cairn(["--repo", repo, "box", "create", "--dir", path.join(dir, "file", "box")], env)
    expect(box.code).toBe(1)
    expect(box.stderr).toMatch(/^cairn: cannot create the box directory .*file is not a directory; choose a directory you can write to\n$/)
  })

  it("usage errors exit 2 and say what was wrong", async () => {
    for (const [args, pattern] of [
      [["frobnicate"], /unknown command "frobnicate"/],
      [["ls", "--bogus"], /unknown option --bogus/],
      [["restore", "first"], /needs DEST/],
      [["box"], /needs a subcommand/],
      [["box", "exec", "x"], /after "--"/],
      [["ls", "--repo", ""], /option --repo needs a value, not an empty string/],
      [["snapshot", ".", "--name="], /option --name needs a value, not an empty string/],
    ] as Array<[string[], RegExp]>) {
      const r = await cairn(["--repo", repo, ...args], env)
      expect(r.code, args.join(" ")).toBe(2)
      expect(r.stderr).toMatch(pattern)
    }
  })

  it("missing things exit 5; a missing or foreign --repo is refused and left untouched", async () => {
    expect((await cairn(["--repo", repo, "restore", "no-such-snap", path.join(await tempDir(), "x")], env)).code).toBe(5)
    // each message names what is missing
    const nowhere = path.join(await tempDir(), "no-such-dir")
    const snap = await cairn(["--repo", repo, "snapshot", nowhere], env)
    expect(snap).toMatchObject({ code: 5, stderr: `cairn: cannot snapshot ${nowhere}: it is neither a directory nor a box's name or id; "cairn box ls" lists the boxes\n` })
    expect((await cairn(["--repo", repo, "cat", "first", "/bin/nope/deeper"], env)).stderr).toBe("cairn: there is no /bin/nope in the snapshot\n")
    expect((await cairn(["--repo", repo, "cat", "first", "/a.txt/x"], env)).stderr).toBe("cairn: /a.txt is not a directory in the snapshot\n")
    // files named on the command line: a clear error, no stack trace, nothing left behind
    const noTar = path.join(await tempDir(), "missing.tar")
    expect(await cairn(["--repo", repo, "import", noTar], env)).toMatchObject({ code: 5, stderr: `cairn: cannot read ${noTar}: no such file or directory\n` })
    const noDir = path.join(await tempDir(), "no-such-dir")
    expect(await cairn(["--repo", repo, "export", "first", "-o", path.join(noDir, "x.tar")], env)).toMatchObject({
      code: 5,
      stderr: `cairn: cannot write ${path.join(noDir, "x.tar")}: no such file or directory\n`,
    })
    const missing = path.join(await tempDir(), "nowhere")
    const r = await cairn(["--repo", missing, "ls"], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("cairn init")
    await expect(fsp.stat(missing)).rejects.toThrow()
    const foreign = await tempDir()
    await fsp.writeFile(path.join(foreign, "notes.txt"), "mine")
    for (const cmd of [["ls"], ["init"], ["snapshot", src]]) {
      const f = await cairn(["--repo", foreign, ...cmd], env)
      expect(f.code, cmd.join(" ")).toBe(1)
      expect(f.stderr).toMatch(/not (a cairn repository|empty)/)
    }
    expect(await fsp.readdir(foreign)).toEqual(["notes.txt"])
  })

  it("--json errors are JSON; --help works everywhere", async () => {
    const r = await cairn(["--repo", repo, "cat", "first", "nope.txt", "--json"], env)
    expect(r.code).toBe(5)
    expect(JSON.parse(r.stderr)).toMatchObject({ error: { code: "NOT_FOUND" } })
    const help = await cairn(["--help"], env)
    expect(help.code).toBe(0)
    expect(help.stdout).toContain("exit codes")
    expect((await cairn(["help", "snapshot"], env)).stdout).toContain("--exclude")
    expect((await cairn(["restore", "--help"], env)).stdout).toContain("--overwrite")
    const version = await cairn(["--version"], env)
    expect(version.code).toBe(0)
    expect(version.stdout).toMatch(/^cairn \d+\.\d+\.\d+ \(format 1, node \d+/)
  })

  it("the default repository ($CAIRN_REPO) is created on first use", async () => {
    const r = await cairn(["snapshot", src], env)
    expect(r.code).toBe(0)
    expect(await fsp.stat(path.join(env.CAIRN_REPO!, "config"))).toBeTruthy()
  })

  it("init refuses a location that already holds a repository", async () => {
    const r = await cairn(["--repo", repo, "init"], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^cairn: .*already exists/)
  })

  it("--quiet prints only the id; --json prints the record and warnings", async () => {
    const quiet = await cairn(["--repo", repo, "snapshot", src, "--quiet"], env)
    expect(quiet.stdout).toMatch(/^snap_[0-9a-f]{16}\n$/)
    const json = await cairn(["--repo", repo, "snapshot", src, "--json", "--label", "k=v"], env)
    expect(JSON.parse(json.stdout)).toMatchObject({ id: expect.stringMatching(/^snap_/), labels: { k: "v" }, warnings: [] })
    const ls = JSON.parse((await cairn(["--repo", repo, "ls", "--label", "k=v", "--json"], env)).stdout)
    expect(ls.map((s: { id: string }) => s.id)).toEqual([JSON.parse(json.stdout).id])
  })

  it("show -r lists every path below a directory, and only those", async () => {
    const all = await cairn(["--repo", repo, "show", "-r", "first", "--json"], env)
    expect(JSON.parse(all.stdout).map((f: { path: string }) => f.path).sort()).toEqual(["/a.txt", "/bin", "/bin/run.sh", "/empty", "/link"])
    const below = await cairn(["--repo", repo, "show", "-r", "first", "bin", "--json"], env)
    expect(JSON.parse(below.stdout).map((f: { path: string }) => f.path).sort()).toEqual(["/bin", "/bin/run.sh"])
    const human = await cairn(["--repo", repo, "show", "first"], env)
    expect(human.stdout).toMatch(/^type\s+mode\s+size\s+modified\s+path\n/)
    expect(human.stdout).toContain("/link -> a.txt")
  })

  it("human output quotes names with control characters, quotes or backslashes; --json keeps them exact", async () => {
    const odd = await tempDir()
    await buildTree(odd, { "new\nline.txt": { file: "a" }, "tab\tx": { file: "b" }, 'say "hi"': { symlink: "back\\slash" }, "plain é.txt": { file: "c" } })
    const id = lastLine((await cairn(["--repo", repo, "snapshot", odd, "--name", "odd"], env)).stdout)
    const show = await cairn(["--repo", repo, "show", id], env)
    expect(show.stdout).toContain('"/new\\nline.txt"')
    expect(show.stdout).toContain('"/tab\\tx"')
    expect(show.stdout).toContain('"/say \\"hi\\"" -> "back\\\\slash"')
    expect(show.stdout).toContain(" /plain é.txt\n") // printable names stay as they are
    expect(show.stdout.trim().split("\n")).toHaveLength(5) // header + one line per entry
    const json = JSON.parse((await cairn(["--repo", repo, "show", id, "--json"], env)).stdout) as Array<{ path: string }>
    expect(json.map((f) => f.path)).toContain("/new\nline.txt")
    await fsp.writeFile(path.join(odd, "new\nline.txt"), "changed")
    const diff = await cairn(["--repo", repo, "diff", id, odd], env)
    expect(diff.stdout).toMatch(/^M\s+file\s+"new\\nline\.txt"\s+content/m)
  })

  it("an S3 repository without credentials: one line that says so, no SDK warning", async () => {
    const home = await tempDir()
    const bare = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_")))
    const run = await new Promise<Run>((resolve) => {
      // nothing leaves the machine: no instance metadata, and an endpoint on loopback that refuses
      const env = { ...bare, HOME: home, AWS_EC2_METADATA_DISABLED: "true", AWS_ENDPOINT_URL: "http://127.0.0.1:9", AWS_CONFIG_FILE: path.join(home, "none"), AWS_SHARED_CREDENTIALS_FILE: path.join(home, "none") }
      execFile(process.execPath, [MAIN, "--repo", "s3://nobucket/x", "ls"], { env }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }))
    })
    expect(run.code).toBe(1)
    expect(run.stderr).toBe(
      "cairn: could not read s3://nobucket/x/config (CredentialsProviderError): no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)\n",
    )
  })

  it("a reader that leaves early (cairn ... | head): exit 141 as for SIGPIPE, no message, no lock left; a full disk: exit 1, said once", async () => {
    const big = await tempDir()
    await fsp.writeFile(path.join(big, "big.bin"), seededBytes("pipe", 3_000_000))
    // show -r prints ~400 KB, far more than a pipe holds: its write meets the closed pipe
    for (let i = 0; i < 1500; i++) await fsp.writeFile(path.join(big, `${String(i).padStart(200, "f")}.txt`), `file ${i}\n`)
    const id = lastLine((await cairn(["--repo", repo, "snapshot", big, "--name", "piped"], env)).stdout)
    /** Runs cairn, reads its first bytes of output, then closes the pipe, as head does. */
    const headOf = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [MAIN, "--repo", repo, ...args], { env: { ...process.env, ...env } })
        let stderr = ""
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
        child.stdout.once("data", () => child.stdout.destroy())
        child.on("close", (code) => resolve({ code, stderr }))
      })
    for (const args of [["cat", id, "big.bin"], ["export", id], ["show", "-r", id]]) {
      expect({ args, ...(await headOf(args)) }).toEqual({ args, code: 141, stderr: "" })
    }
    // output that cannot be written (a full disk: /dev/full) is an error, said once
    const full = await fsp.open("/dev/full", "w")
    try {
      for (const args of [["cat", id, "big.bin"], ["export", id]]) {
        const run = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, [MAIN, "--repo", repo, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", full.fd, "pipe"] })
          let stderr = ""
          child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()))
          child.on("close", (code) => resolve({ code, stderr }))
        })
        expect({ args, ...run }).toEqual({ args, code: 1, stderr: "cairn: cannot write the output (ENOSPC: the disk is full)\n" })
      }
    } finally {
      await full.close()
    }
    expect(await fsp.readdir(path.join(repo, "locks")).catch(() => [])).toEqual([])
  })

  it("a reader slower than the output gets all of it: cairn exits only once its output is written", async () => {
    const tree = await tempDir()
    // show -r prints ~400 KB: the pipe (64 KiB) fills while the reader waits, and node holds the rest
    for (let i = 0; i < 1500; i++) await fsp.writeFile(path.join(tree, `${String(i).padStart(200, "s")}.txt`), `file ${i}\n`)
    const id = lastLine((await cairn(["--repo", repo, "snapshot", tree, "--name", "slow-reader"], env)).stdout)
    const prompt = await cairn(["--repo", repo, "show", "-r", id], env)
    expect(prompt.stdout.length).toBeGreaterThan(300_000)
    const slow = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, [MAIN, "--repo", repo, "show", "-r", id], { env: { ...process.env, ...env } })
      const chunks: Buffer[] = []
      child.stdout.pause()
      setTimeout(() => {
        child.stdout.on("data", (d: Buffer) => chunks.push(d))
        child.stdout.resume()
      }, 1500)
      child.on("close", (code) => resolve({ code, stdout: Buffer.concat(chunks).toString() }))
    })
    expect(slow).toEqual({ code: 0, stdout: prompt.stdout })
  })

  it("box exec gives the command the terminal: output as it comes, stdin passed through; --json captures", async () => {
    const box = JSON.parse((await cairn(["--repo", repo, "box", "create", "--name", "live", "--json"], env)).stdout)
    // the command prints, then waits for a file this test creates only once it has seen that output:
    // with output held back until the command ends, it would wait until its --timeout
    const script = "echo first; while [ ! -e GO ]; do sleep 0.05; done; echo second; read line; echo \"got $line\"; echo err >&2; exit 4"
    const child = spawn(process.execPath, [MAIN, "--repo", repo, "box", "exec", "live", "--timeout", "20", "--", "sh", "-c", script], { env: { ...process.env, ...env } })
    let stdout = ""
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
    await new Promise<void>((resolve) => {
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString()
        if (stdout.includes("first")) resolve()
      })
    })
    expect(stdout).toBe("first\n") // seen while the command still runs
    await fsp.writeFile(path.join(box.dir, "GO"), "")
    child.stdin.end("typed\n")
    expect(await exited).toBe(4)
    expect({ stdout, stderr }).toEqual({ stdout: "first\nsecond\ngot typed\n", stderr: "err\n" })
    const json = await cairn(["--repo", repo, "box", "exec", "live", "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 2"], env)
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout)).toEqual({ exitCode: 2, stdout: "out\n", stderr: "err\n", timedOut: false })
    const slow = await cairn(["--repo", repo, "box", "exec", "live", "--timeout", "0.5", "--", "sleep", "30"], env)
    expect(slow).toMatchObject({ code: 143, stderr: "cairn: the command timed out after 0.5 s (sent SIGTERM, and SIGKILL 2 s later if it still ran)\n" })
  })

  it("demo, the README's first command, runs end to end, and again on the same repository", async () => {
    // npm may install only from its cache: nothing leaves the machine (without the packages, the demo writes files)
    const demoEnv = { ...env, CAIRN_REPO: path.join(await tempDir(), "demo-repo"), npm_config_offline: "true", npm_config_registry: "http://127.0.0.1:9/" }
    for (const round of [1, 2]) {
      const run = await cairn(["demo"], demoEnv)
      expect({ round, code: run.code, stderr: run.stderr }).toEqual({ round, code: 0, stderr: "" })
      expect(run.stdout).toContain("the other branches are unaffected: yes")
    }
    const boxes = JSON.parse((await cairn(["box", "ls", "--json"], demoEnv)).stdout) as Array<{ name?: string }>
    expect(boxes.map((b) => b.name).sort()).toEqual(["demo-setup", "demo-setup-2"]) // each run's branches were removed
  })

  it("a command that waits for another process's lock says so once, then goes on when it is released", async () => {
    const now = new Date().toISOString()
    const space = pidSpace()
    const holder = { exclusive: true, host: os.hostname(), pid: process.pid, what: "gc", time: now, refreshed: now, ...(space ? { pidSpace: space } : {}) }
    const lock = path.join(repo, "locks", "lock_0123456789abcdef")
    await fsp.mkdir(path.dirname(lock), { recursive: true })
    await fsp.writeFile(lock, JSON.stringify(holder))
    setTimeout(() => void fsp.rm(lock, { force: true }), 1_000)
    const run = await cairn(["--repo", repo, "verify"], env)
    expect(run.code).toBe(0)
    expect(run.stderr).toBe(`cairn: waiting for the repository: gc (process ${process.pid} on ${os.hostname()}, since ${now}) holds it\n`)
    await fsp.writeFile(lock, JSON.stringify(holder))
    setTimeout(() => void fsp.rm(lock, { force: true }), 500)
    expect(await cairn(["--repo", repo, "verify", "--quiet"], env)).toMatchObject({ code: 0, stderr: "" }) // --quiet: not a word
  })

  it("export --path writes a sub-tree; a tar stream from stdin becomes a snapshot", async () => {
    const tar = await cairn(["--repo", repo, "export", "first", "--path", "bin"], env)
    expect(tar.code).toBe(0)
    const imported = await cairn(["--repo", repo, "import", "-", "--name", "bin-only", "--json"], env, Buffer.from(tar.stdout, "latin1"))
    expect(imported.code).toBe(0)
    expect(JSON.parse(imported.stdout)).toMatchObject({ name: "bin-only", warnings: [] })
    expect((await cairn(["--repo", repo, "cat", "bin-only", "run.sh"], env)).stdout).toBe("#!/bin/sh\necho hi\n")
  })

  it("a stack trace only with --debug", async () => {
    const plain = await cairn(["--repo", repo, "cat", "first", "nope.txt"], env)
    expect(plain.code).toBe(5)
    expect(plain.stderr.trim().split("\n")).toHaveLength(1)
    expect(plain.stderr).toMatch(/^cairn: /)
    const debug = await cairn(["--repo", repo, "cat", "first", "nope.txt", "--debug"], env)
    expect(debug.code).toBe(5)
    expect(debug.stderr).toMatch(/\n\s+at /)
  })

  it("more usage errors: bad values, a box with --parent, help on a group", async () => {
    for (const args of [
      ["forget", "--group-by", "planet", "--keep-last", "1"],
      ["forget"],
      ["forget", "--keep-last", "two"],
      ["gc", "--repack-threshold", "2"],
      ["snapshot", "no-such-box-or-dir", "--parent", "first"],
      ["snapshot", src, "--label", "novalue"],
      ["help", "nope"],
      [],
    ]) {
      const r = await cairn(["--repo", repo, ...args], env)
      expect(r.code, args.join(" ")).toBe(2)
      expect(r.stderr).toMatch(/^cairn: /)
    }
    expect((await cairn(["help", "box"], env)).stdout).toContain("cairn box exec")
  })
})

// diff, du, stats, verify, gc and forget call Repository methods the engine is
// adding (repo.snapshots.diff/du, repo.stats/verify/gc/forget).
describe("cairn maintenance commands", () => {
  let mrepo: string
  let src2: string
  const m = (args: string[], input?: Buffer) => cairn(["--repo", mrepo, ...args], env, input)

  beforeAll(async () => {
    const root = await tempDir()
    mrepo = path.join(root, "repo")
    src2 = path.join(root, "src2")
    expect((await m(["init"])).code).toBe(0)
    expect((await m(["snapshot", src, "--name", "m1"])).code).toBe(0)
    await fsp.cp(src, src2, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true })
    await fsp.writeFile(path.join(src2, "a.txt"), "alpha, changed\n")
    await fsp.writeFile(path.join(src2, "new.txt"), seededBytes("new", 40_000))
    await fsp.rm(path.join(src2, "link"))
    expect((await m(["snapshot", src2, "--name", "m2"])).code).toBe(0)
  })

  const changed = [
    expect.objectContaining({ change: "modified", path: expect.stringMatching(/(^|\/)a\.txt$/) }),
    expect.objectContaining({ change: "added", path: expect.stringMatching(/(^|\/)new\.txt$/) }),
    expect.objectContaining({ change: "removed", path: expect.stringMatching(/(^|\/)link$/) }),
  ]

  it("diff of two snapshots, and of a snapshot and a directory", async () => {
    const two = await m(["diff", "m1", "m2", "--json"])
    expect(two.code).toBe(0)
    const d = JSON.parse(two.stdout)
    expect(d.changes).toEqual(expect.arrayContaining(changed))
    expect(d.changes).toHaveLength(3)
    expect(d.addedBytes).toBeGreaterThanOrEqual(40_000)
    const live = JSON.parse((await m(["diff", "m1", src2, "--json"])).stdout)
    expect(live.changes).toEqual(expect.arrayContaining(changed))
    const human = await m(["diff", "m1", "m2"])
    expect(human.stdout).toMatch(/new\.txt/)
    expect(human.stdout).toMatch(/1 added \(39\.\d+ KiB\), 1 removed/)
    expect((await m(["diff", "m1", "m1"])).stdout).toBe("no differences\n")
    expect(await m(["diff", "m1", "/no/such/dir"])).toMatchObject({
      code: 5,
      stderr: `cairn: /no/such/dir is neither a directory nor a snapshot's id or name; "cairn ls" lists the snapshots\n`,
    })
    expect((await m(["diff", "no-such-snap", "m1"])).stderr).toMatch(/^cairn: no snapshot with id or name "no-such-snap"/)
  })

  it("du, per directory; stats, for the repository", async () => {
    const du = await m(["du", "m2", "--json"])
    expect(du.code).toBe(0)
    const rows = JSON.parse(du.stdout) as Array<{ path: string; logicalBytes: number; storedBytes: number; uniqueBytes: number }>
    expect(rows.length).toBeGreaterThan(0)
    expect(Math.max(...rows.map((r) => r.logicalBytes))).toBeGreaterThanOrEqual(40_000)
    expect((await m(["du", "m2"])).stdout).toMatch(/^\s*logical\s+stored\s+unique\s+path\n/)
    const stats = await m(["stats", "--json"])
    expect(stats.code).toBe(0)
    expect(JSON.parse(stats.stdout)).toMatchObject({ snapshots: 2, packs: expect.any(Number), dedupRatio: expect.any(Number) })
    expect((await m(["stats"])).stdout).toMatch(/dedup ratio\s+[\d.]+x/)
  })

  it("verify finds nothing wrong in a healthy repository", async () => {
    const quick = await m(["verify", "--json"])
    expect(quick.code).toBe(0)
    expect(JSON.parse(quick.stdout)).toMatchObject({ ok: true, damage: [] })
    const full = await m(["verify", "--read-data"])
    expect(full.code).toBe(0)
    expect(full.stdout).toMatch(/^no damage found/)
  })

  it("forget applies a policy (dry run first), then gc reclaims; the rest still restores", async () => {
    const f: string[] = []
    for (let i = 0; i < 3; i++) f.push(lastLine((await m(["snapshot", src, "--name", "f", "--quiet"])).stdout))
    const dry = await m(["forget", "--keep-last", "1", "--group-by", "name", "--dry-run", "--json"])
    expect(dry.code).toBe(0)
    const plan = JSON.parse(dry.stdout) as { keep: Array<{ id: string }>; remove: Array<{ id: string }> }
    expect(plan.remove.map((r) => r.id).sort()).toEqual(f.slice(0, 2).sort())
    expect(plan.keep.map((k) => k.id)).toContain(f[2])
    expect(JSON.parse((await m(["ls", "--json"])).stdout)).toHaveLength(5)
    const real = await m(["forget", "--keep-last", "1", "--group-by", "name"])
    expect(real.code).toBe(0)
    expect(real.stdout).toMatch(/2 snapshots removed/)
    expect(JSON.parse((await m(["ls", "--name", "f", "--json"])).stdout).map((s: { id: string }) => s.id)).toEqual([f[2]])

    expect((await m(["rm", "m2"])).code).toBe(0)
    const gcDry = JSON.parse((await m(["gc", "--dry-run", "--json"])).stdout)
    expect(gcDry).toMatchObject({ dryRun: true, touched: [] })
    expect(gcDry.reclaimableBytes).toBeGreaterThan(0)
    const gc = await m(["gc", "--repack-threshold", "0", "--json"])
    expect(gc.code).toBe(0)
    const report = JSON.parse(gc.stdout)
    expect(report.dryRun).toBe(false)
    expect(report.packsDeleted + report.packsRepacked).toBeGreaterThan(0)
    expect((await m(["gc"])).stdout).toMatch(/^deleted \d+ packs?, repacked \d+, freed /)
    expect((await m(["verify", "--read-data"])).code).toBe(0)
    const dest = path.join(await tempDir(), "after-gc")
    expect((await m(["restore", "m1", dest])).code).toBe(0)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
  }, 30_000)

  it("damaged data: cat exits 3, verify --read-data exits 3 and names what is hit", async () => {
    const root = await tempDir()
    const drepo = path.join(root, "repo")
    const dsrc = path.join(root, "src")
    await buildTree(dsrc, { "big.bin": { file: seededBytes("big", 200_000) } })
    const d = (args: string[]) => cairn(["--repo", drepo, ...args], env)
    expect((await d(["init"])).code).toBe(0)
    expect((await d(["snapshot", dsrc, "--name", "dmg"])).code).toBe(0)
    for (const sub of await fsp.readdir(path.join(drepo, "data"))) {
      for (const name of await fsp.readdir(path.join(drepo, "data", sub))) {
        const file = path.join(drepo, "data", sub, name)
        const bytes = await fsp.readFile(file)
        for (let i = 0; i < 64; i++) bytes[(bytes.length >> 1) + i]! ^= 0xff
        await fsp.writeFile(file, bytes)
      }
    }
    const cat = await d(["cat", "dmg", "big.bin"])
    expect(cat.code).toBe(3)
    expect(cat.stderr).toMatch(/^cairn: /m)
    const verify = await d(["verify", "--read-data", "--json"])
    expect(verify.code).toBe(3)
    const r = JSON.parse(verify.stdout)
    expect(r.ok).toBe(false)
    expect(r.damage.length).toBeGreaterThan(0)
    expect(r.damage.flatMap((x: { snapshots: string[] }) => x.snapshots).length).toBeGreaterThan(0)
    const human = await d(["verify", "--read-data"])
    expect(human.code).toBe(3)
    expect(human.stdout).toMatch(/^DAMAGE/)
    // a pack removed by hand: its line names the pack and the blob once each
    for (const sub of await fsp.readdir(path.join(drepo, "data"))) await fsp.rm(path.join(drepo, "data", sub), { recursive: true })
    const missing = await d(["verify"])
    expect(missing.code).toBe(3)
    const lines = missing.stdout.split("\n").filter((l) => l.includes("is missing from the repository"))
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) {
      const ids = line.match(/\b[0-9a-f]{64}\b/g) ?? []
      expect(ids.length).toBeGreaterThan(0)
      expect(new Set(ids).size, line).toBe(ids.length)
    }
  }, 20_000)

  it("verify gives a missing pack one line, counting its blobs and joining the paths they hit (--json: one entry per blob)", async () => {
    const root = await tempDir()
    const drepo = path.join(root, "repo")
    const dsrc = path.join(root, "src")
    await buildTree(dsrc, Object.fromEntries([1, 2, 3, 4].map((i) => [`f${i}.bin`, { file: seededBytes(`f${i}`, 5_000_000) }])))
    const d = (args: string[]) => cairn(["--repo", drepo, ...args], env)
    expect((await d(["init"])).code).toBe(0)
    expect((await d(["snapshot", dsrc])).code).toBe(0)
    // the largest pack holds file chunks only (trees are written last)
    const packs = (await fsp.readdir(path.join(drepo, "data"), { recursive: true })).map((p) => path.join(drepo, "data", String(p)))
    const sizes = await Promise.all(packs.map(async (p) => [p, (await fsp.stat(p)).isFile() ? (await fsp.stat(p)).size : 0] as const))
    const [largest] = sizes.sort((a, b) => b[1] - a[1])[0]!
    await fsp.rm(largest)
    const json = JSON.parse((await d(["verify", "--json"])).stdout) as { damage: Array<{ pack?: string }> }
    const mine = json.damage.filter((x) => x.pack === path.basename(largest))
    expect(mine.length).toBeGreaterThan(1)
    const human = await d(["verify"])
    expect(human.code).toBe(3)
    const lines = human.stdout.split("\n").filter((l) => l.includes(path.basename(largest)))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(new RegExp(`is missing[^(]*\\(${mine.length} blobs\\); affects snapshots snap_[0-9a-f]+; paths /f\\d\\.bin`))
  }, 30_000)
})

describe("cairn pin and expiry", () => {
  it("forget never removes a pinned snapshot and removes an expired one", async () => {
    const root = await tempDir()
    const r = path.join(root, "repo")
    const p = (args: string[]) => cairn(["--repo", r, ...args], env)
    expect((await p(["init"])).code).toBe(0)
    const pinned = lastLine((await p(["snapshot", src, "--pin"])).stdout)
    const plain = lastLine((await p(["snapshot", src])).stdout)
    const expiring = lastLine((await p(["snapshot", src, "--expires", "1s"])).stdout)
    const newest = lastLine((await p(["snapshot", src])).stdout)
    await new Promise((res) => setTimeout(res, 1100))
    const forget = await p(["forget", "--keep-last", "1", "--json"])
    expect(forget.code).toBe(0)
    const plan = JSON.parse(forget.stdout)
    expect(plan.remove.map((x: { id: string }) => x.id).sort()).toEqual([expiring, plain].sort())
    expect(plan.keep.map((x: { id: string }) => x.id).sort()).toEqual([newest, pinned].sort())
    expect((await p(["pin", pinned, "--unpin"])).code).toBe(0)
    expect((await p(["pin", newest, "--expires", "soon"])).code).toBe(2)
  })
})
