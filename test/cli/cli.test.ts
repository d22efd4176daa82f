// The real CLI as a subprocess, on temp directories and a temp repository.
import { execFile } from "node:child_process"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { buildTree, describeTree } from "../fixtures.js"
import { tempDir } from "../helpers.js"

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
  it("snapshot prints the id last; ls, show, cat and restore round-trip", async () => {
    const snap = await cairn(["--repo", repo, "snapshot", src, "--name", "first"], env)
    expect(snap.code).toBe(0)
    const id = lastLine(snap.stdout)
    expect(id).toMatch(/^snap_[0-9a-f]{16}$/)
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

  it("restores into a non-empty directory only with --overwrite, and writes nothing otherwise", async () => {
    const dest = await tempDir()
    await fsp.writeFile(path.join(dest, "mine.txt"), "keep")
    const r = await cairn(["--repo", repo, "restore", "first", dest], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^cairn: .*not empty/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect(await fsp.readdir(dest)).toEqual(["mine.txt"])
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
  })

  it("export and import a tar stream", async () => {
    const tarFile = path.join(await tempDir(), "snap.tar")
    expect((await cairn(["--repo", repo, "export", "first", "-o", tarFile], env)).code).toBe(0)
    const imported = await cairn(["--repo", repo, "import", "-", "--name", "from-tar"], env, await fsp.readFile(tarFile))
    expect(imported.code).toBe(0)
    const dest = path.join(await tempDir(), "t")
    expect((await cairn(["--repo", repo, "restore", "from-tar", dest], env)).code).toBe(0)
    expect(await describeTree(dest)).toEqual(await describeTree(src))
  })

  it("usage errors exit 2 and say what was wrong", async () => {
    for (const [args, pattern] of [
      [["frobnicate"], /unknown command "frobnicate"/],
      [["ls", "--bogus"], /unknown option --bogus/],
      [["restore", "first"], /needs DEST/],
      [["box"], /needs a subcommand/],
      [["box", "exec", "x"], /after "--"/],
    ] as Array<[string[], RegExp]>) {
      const r = await cairn(["--repo", repo, ...args], env)
      expect(r.code, args.join(" ")).toBe(2)
      expect(r.stderr).toMatch(pattern)
    }
  })

  it("missing things exit 5; a missing or foreign --repo is refused and left untouched", async () => {
    expect((await cairn(["--repo", repo, "restore", "no-such-snap", path.join(await tempDir(), "x")], env)).code).toBe(5)
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
  })

  it("the default repository ($CAIRN_REPO) is created on first use", async () => {
    const r = await cairn(["snapshot", src], env)
    expect(r.code).toBe(0)
    expect(await fsp.stat(path.join(env.CAIRN_REPO!, "config"))).toBeTruthy()
  })
})
