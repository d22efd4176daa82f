// Permissions and secrets.
//   - Every file and directory of a repository (its cache included: it lives
//     in <repo>/cache) has no group or world write bit after init, snapshot,
//     restore, verify and gc, under the usual umask 022 and under umask 000
//     (cairn must not rely on the caller's umask: FORMAT.md promises 0600
//     files and 0700 directories).
//   - With fake AWS credentials in the environment and an s3:// repository
//     whose endpoint is a closed local port, no command prints the secret
//     key or the session token, with or without --debug and --json, and
//     nothing is written to the cache holding them.

import { promises as fsp } from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { FULL, buildCorpus, cairn, gc, lastLine, report, tempDir, walkModes, type CorpusOptions } from "./harness.js"

const SMALL: CorpusOptions = { dirs: 2, filesPerDir: 5, bigFiles: 1, bigSize: 300 * 1024 }
const figures = { pathsChecked: 0, writableByOthers: 0, commandsRun: 0, secretLeaks: 0 }
let root: string

beforeAll(async () => {
  root = await tempDir("cairn-rel-perm-")
})

afterAll(async () => {
  report("permissions", figures)
  await fsp.rm(root, { recursive: true, force: true })
})

async function exercise(repo: string, src: string, umask: string): Promise<void> {
  const run = async (args: string[]) => {
    figures.commandsRun++
    const r = await cairn(["--repo", repo, ...args], { umask })
    expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0)
    return r
  }
  await run(["init"])
  const first = lastLine((await run(["snapshot", src])).stdout)
  await fsp.writeFile(path.join(src, "later.txt"), "later\n")
  await run(["snapshot", src])
  await run(["restore", first, path.join(root, `out-${umask}`)])
  await run(["rm", first])
  figures.commandsRun++
  expect((await gc(repo, { umask })).code).toBe(0)
  await run(["verify", "--read-data"])
}

describe("permissions: nothing in a repository is writable by group or world", () => {
  for (const umask of ["022", "000"]) {
    it(`after init, snapshot, restore, gc and verify under umask ${umask}`, async () => {
      const repo = path.join(root, `repo-${umask}`)
      const src = path.join(root, `src-${umask}`)
      await buildCorpus(src, `perm-${umask}`, SMALL)
      await exercise(repo, src, umask)
      const all = await walkModes(repo)
      figures.pathsChecked += all.length
      const open = all.filter((e) => (e.mode & 0o022) !== 0).map((e) => `${e.rel} ${e.type} ${e.mode.toString(8)}`)
      figures.writableByOthers += open.length
      expect(open).toEqual([])
    })
  }
})

describe("credentials are never printed", () => {
  const SECRET = "SECRET-MARKER-8f3c2a91d7e6b5a4c3d2e1f0a9b8c7d6e5f4a3b2"
  const TOKEN = "TOKEN-MARKER-4c1e9a7b2d5f8e3a6c9b1d4f7a2e5c8b"
  let env: Record<string, string>
  let src: string

  beforeAll(async () => {
    src = path.join(root, "s3-src")
    await buildCorpus(src, "s3", SMALL)
    env = {
      AWS_ACCESS_KEY_ID: "AKIAMARKERKEYID00000",
      AWS_SECRET_ACCESS_KEY: SECRET,
      AWS_SESSION_TOKEN: TOKEN,
      AWS_REGION: "us-east-1",
      CAIRN_S3_ENDPOINT: "http://127.0.0.1:1",
      XDG_CACHE_HOME: path.join(root, "xdg-cache"),
      HOME: path.join(root, "home"),
    }
  })

  const commands: string[][] = FULL
    ? [["init"], ["ls"], ["snapshot", "SRC"], ["restore", "snap_0000000000000000", "OUT"], ["verify", "--read-data"], ["gc"], ["stats"]]
    : [["init"], ["snapshot", "SRC"], ["restore", "snap_0000000000000000", "OUT"]]
  const variants: string[][] = FULL ? [[], ["--debug"], ["--json"], ["--debug", "--json"]] : [["--debug"], ["--debug", "--json"]]

  it(`${commands.length * variants.length} commands against an unreachable s3:// repository print neither the secret key nor the token`, async () => {
    const leaks: string[] = []
    const runs = commands.flatMap((cmd) => variants.map((v) => ({ cmd, v })))
    // a few at a time: each spends ~1 s retrying a refused connection
    for (let i = 0; i < runs.length; i += 8) {
      await Promise.all(
        runs.slice(i, i + 8).map(async ({ cmd, v }) => {
          const args = cmd.map((a) => (a === "SRC" ? src : a === "OUT" ? path.join(root, `s3-out-${i}`) : a))
          const r = await cairn([...v, "--repo", "s3://cairn-bucket/team", ...args], { env, timeoutMs: 120_000 })
          figures.commandsRun++
          const text = r.stdout + r.stderr
          if (r.code === 0 && cmd[0] !== "ls") leaks.push(`${v.join(" ")} ${cmd.join(" ")}: succeeded against a closed port?`)
          for (const marker of [SECRET, TOKEN, SECRET.slice(0, 24)]) {
            if (text.includes(marker)) {
              figures.secretLeaks++
              leaks.push(`${v.join(" ")} ${cmd.join(" ")} printed ${marker.slice(0, 14)}...: ${text.slice(0, 300)}`)
            }
          }
        }),
      )
    }
    // nor is it written into the host cache
    const visit = async (dir: string): Promise<void> => {
      for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const p = path.join(dir, e.name)
        if (e.isDirectory()) await visit(p)
        else if ((await fsp.readFile(p)).includes(SECRET)) leaks.push(`${p} holds the secret`)
      }
    }
    await visit(path.join(root, "xdg-cache"))
    await visit(path.join(root, "home"))
    expect(leaks).toEqual([])
  }, FULL ? 600_000 : 80_000)
})
