// A restore into a file system that fills up: the CLI exits 1 with an IO
// error that says the disk is full, stops reading packs once the kernel has
// said so (the files it had not begun are reported "not restored", not each
// tried), and leaves no temporary file and no partial file under a final
// name: whatever is there is whole. In a fan-out (one restore into several
// destinations), only the destination whose disk filled fails: the others
// are restored whole.
//
// The small file system is a tmpfs mounted in a private user and mount
// namespace (unshare --user --map-root-user --mount), so the test needs no
// root and nothing outside it sees the mount. Where the kernel refuses such
// namespaces (some containers), the test is skipped and says why.

import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { cairn, lastLine, MAIN, tempDir } from "./harness.js"
import { seededBytes } from "../helpers.js"

const FILES = 320
const FILE_BYTES = 64 * 1024
const TMPFS_BYTES = 2 * 1024 * 1024

/** Why a private tmpfs cannot be mounted here, or undefined if it can. */
function whyNoTmpfs(): string | undefined {
  const r = spawnSync("unshare", ["--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt || mount -t tmpfs -o size=1m none /tmp"], { encoding: "utf8" })
  if (r.error) return `unshare(1) is not available (${r.error.message})`
  return r.status === 0 ? undefined : `this kernel or container refuses a private mount namespace: ${(r.stderr || "").trim()}`
}

const noTmpfs = whyNoTmpfs()
if (noTmpfs) console.warn(`[reliability] disk-full: skipped: ${noTmpfs}`)

/** A temp directory holding a snapshot of FILES files of FILE_BYTES each; want maps their paths to their sha256. */
async function snapshotOfFiles(): Promise<{ dir: string; repo: string; id: string; want: Map<string, string> }> {
  const dir = await tempDir("cairn-full-")
  const src = path.join(dir, "src")
  const want = new Map<string, string>()
  for (let i = 0; i < FILES; i++) {
    const rel = `d${i % 6}/f${i}.bin`
    const data = seededBytes(`full-${i}`, FILE_BYTES)
    await fsp.mkdir(path.join(src, path.dirname(rel)), { recursive: true })
    await fsp.writeFile(path.join(src, rel), data)
    want.set(rel, createHash("sha256").update(data).digest("hex"))
  }
  const repo = path.join(dir, "repo")
  expect((await cairn(["--repo", repo, "init"])).code).toBe(0)
  const snap = await cairn(["--repo", repo, "snapshot", src, "--quiet"])
  expect(snap.code).toBe(0)
  const id = lastLine(snap.stdout)
  return { dir, repo, id, want }
}

describe.skipIf(noTmpfs !== undefined)("restore into a file system that fills up", () => {
  it("exits 1 saying the disk is full, stops trying files, and leaves only whole files under final names", async () => {
    const { dir, repo, id, want } = await snapshotOfFiles()

    // inside the namespace: mount, restore, then list what is there (the mount goes away with the namespace)
    const mnt = path.join(dir, "mnt")
    await fsp.mkdir(mnt)
    const script = [
      `mount -t tmpfs -o size=${TMPFS_BYTES} none "$1" || exit 90`,
      `"$2" "$3" --repo "$4" --json restore "$5" "$1/dest" --no-cache 2>"$1/../stderr"`,
      `echo "exit $?"`,
      `cd "$1/dest" && find . -type f -exec sha256sum {} +`,
    ].join("\n")
    const r = spawnSync("unshare", ["--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", mnt, process.execPath, MAIN, repo, id], { encoding: "utf8", timeout: 60_000 })
    expect(r.status, r.stderr).toBe(0)
    const lines = r.stdout.trim().split("\n")
    expect(lines[0]).toBe("exit 1")
    const present = new Map(lines.slice(1).map((l) => {
      const [sum, file] = l.split(/\s+/) as [string, string]
      return [file.replace(/^\.\//, ""), sum]
    }))

    const { error } = JSON.parse(await fsp.readFile(path.join(dir, "stderr"), "utf8")) as { error: { code: string; message: string; data: { failed: Array<{ path: string; reason: string }> } } }
    expect(error.code).toBe("IO")
    expect(error.message).toMatch(/the destination's disk is full: free some space, then restore again/)
    // nothing half-written under a final name, no temp file left, and every file accounted for
    for (const [rel, sum] of present) expect(sum, rel).toBe(want.get(rel))
    const failed = new Set(error.data.failed.map((f) => f.path))
    for (const rel of want.keys()) expect(present.has(rel) !== failed.has(rel), rel).toBe(true)
    expect(present.size).toBeLessThan(FILES)
    // the restore stopped at the first full-disk failure instead of trying every remaining file
    expect(error.data.failed[0]!.reason).toMatch(/ENOSPC/)
    expect(error.data.failed.filter((f) => f.reason.startsWith("not restored: the destination's file system is full")).length).toBeGreaterThan(0)
  })

  it("in a fan-out, only the destination whose disk is full fails; the other is restored whole", async () => {
    const { dir, repo, id, want } = await snapshotOfFiles()
    const mnt = path.join(dir, "mnt")
    const ok = path.join(dir, "ok")
    await fsp.mkdir(mnt)
    const script = [
      `mount -t tmpfs -o size=${TMPFS_BYTES} none "$1" || exit 90`,
      `"$2" "$3" --repo "$4" --json restore "$5" "$1/dest" "$6" --no-cache 2>"$1/../stderr"`,
      `echo "exit $?"`,
    ].join("\n")
    const r = spawnSync("unshare", ["--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", mnt, process.execPath, MAIN, repo, id, ok], { encoding: "utf8", timeout: 60_000 })
    expect(r.status, r.stderr).toBe(0)
    const lines = r.stdout.trim().split("\n")
    expect(lines.pop()).toBe("exit 1")
    const json = lines.join("\n")
    const out = JSON.parse(json) as { results: Array<{ dest: string; files: number; sharedWith: number }>; failed: Array<{ dest: string; code: string; message: string }> }
    expect(out.results).toEqual([expect.objectContaining({ dest: ok, files: FILES, sharedWith: 1 })])
    expect(out.failed).toEqual([expect.objectContaining({ dest: path.join(mnt, "dest"), code: "IO", message: expect.stringMatching(/disk is full/) })])
    const { error } = JSON.parse(await fsp.readFile(path.join(dir, "stderr"), "utf8")) as { error: { data: { failed: Array<{ reason: string }> } } }
    expect(error.data.failed.filter((f) => f.reason.startsWith("not restored: the destination's file system is full")).length).toBeGreaterThan(0)
    for (const [rel, sum] of want) expect(createHash("sha256").update(await fsp.readFile(path.join(ok, rel))).digest("hex"), rel).toBe(sum)
    expect((await fsp.readdir(ok, { recursive: true })).filter((n) => n.includes(".cairn-"))).toEqual([])
  })
})
