// S3 benchmark: snapshot and restore of one corpus into a local S3 gateway
// (Ceph RGW from scripts/ceph-rgw.sh), next to cairn's filesystem backend and
// restic on both its local and its S3 backend, against the same server.
//
//   npx tsc -p tsconfig.json && node dist/bench/s3.js [--corpus DIR] [--reps N]
//       [--only cairn-fs,cairn-s3,restic-fs,restic-s3] [--endpoint URL] [--bucket B]
//       [--gen-mib N] [--out DIR] [--keep]
//
// Every command runs as a subprocess under /usr/bin/time (bench/harness.ts):
// wall time, peak RSS. Steps per tool, each repetition in a fresh repository:
//   snapshot           first snapshot of the corpus
//   restore            restore into an empty directory, same host (its cache as the snapshot left it)
//   restore, new host  the same with an empty cache directory (another machine's first restore)
// Every restore is verified against the corpus (content, modes, mtimes, symlinks).
// "objects" and "stored" are what the repository holds after the snapshot:
// S3 objects under the prefix (ListObjectsV2), or files under the directory.
// Credentials: the standard AWS_* variables; for a loopback endpoint they default
// to the keys scripts/ceph-rgw.sh creates. Nothing secret is printed.

import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from "node:fs"
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import os from "node:os"
import { join, resolve } from "node:path"
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3"
import { CORPORA_DIR, PROJECT_ROOT, SeededStream, textBytes } from "./corpora.js"
import { dirSize, manifest, onPath, removeTree, run, runTimed, summarize, useTrash, verificationLabel, verifyTree, type Manifest, type Verification } from "./harness.js"

const MiB = 1024 * 1024
const CLI = join(PROJECT_ROOT, "dist", "cli", "main.js")
const TOOLS = ["cairn-fs", "cairn-s3", "restic-fs", "restic-s3"] as const
type ToolName = (typeof TOOLS)[number]
const STEPS = ["snapshot", "restore", "restore, new host"] as const
type Step = (typeof STEPS)[number]

interface Flags {
  corpus?: string
  out: string
  endpoint: string
  bucket: string
  only: Set<ToolName>
  reps: number
  genMiB: number
  keep: boolean
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench/s3: ${msg}\n`)
  process.stderr.write(
    "usage: node dist/bench/s3.js [--corpus DIR] [--reps N] [--only cairn-fs,cairn-s3,restic-fs,restic-s3]\n" +
      "                             [--endpoint URL] [--bucket NAME] [--gen-mib N] [--out DIR] [--keep]\n",
  )
  process.exit(2)
}

function parseFlags(argv: string[]): Flags {
  const f: Flags = {
    out: join(PROJECT_ROOT, "bench", "out"),
    endpoint: process.env.CAIRN_S3_ENDPOINT || process.env.CAIRN_TEST_S3_ENDPOINT || "http://127.0.0.1:7480",
    bucket: process.env.CAIRN_BENCH_S3_BUCKET || "cairn-bench",
    only: new Set(TOOLS),
    reps: 1,
    genMiB: 320,
    keep: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const val = () => argv[++i] ?? usage(`${a} needs a value`)
    if (a === "--corpus") f.corpus = resolve(val())
    else if (a === "--out") f.out = resolve(val())
    else if (a === "--endpoint") f.endpoint = val()
    else if (a === "--bucket") f.bucket = val()
    else if (a === "--reps") f.reps = Math.max(1, Number.parseInt(val(), 10) || 1)
    else if (a === "--gen-mib") f.genMiB = Math.max(16, Number.parseInt(val(), 10) || 320)
    else if (a === "--keep") f.keep = true
    else if (a === "--only") {
      const names = val().split(",").map((s) => s.trim()).filter(Boolean)
      for (const n of names) if (!(TOOLS as readonly string[]).includes(n)) usage(`unknown tool ${n}`)
      f.only = new Set(names as ToolName[])
    } else if (a === "--help" || a === "-h") usage()
    else usage(`unknown flag ${a}`)
  }
  return f
}

const log = (s: string) => process.stderr.write(`[s3 bench] ${s}\n`)

// ---------------------------------------------------------------- corpus

/**
 * The fallback corpus when bench/corpora/workspace is absent: ~genMiB MiB of
 * seeded data shaped like a workspace (thousands of small text files, some
 * duplicated, symlinks, a few executables) plus one large mixed file and one
 * random file. Regenerated only when its stamp differs.
 */
function generatedCorpus(genMiB: number): string {
  const name = `s3-generated-${genMiB}m`
  const dir = join(CORPORA_DIR, name)
  const stamp = join(CORPORA_DIR, `${name}.recipe.json`)
  const recipe = JSON.stringify({ v: 1, genMiB })
  if (existsSync(dir) && existsSync(stamp) && readFileSync(stamp, "utf8") === recipe) return dir
  log(`generating ${dir} (${genMiB} MiB)`)
  const t0 = Date.now()
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const rng = new SeededStream(`s3-corpus-${genMiB}`)
  const smallBudget = Math.floor(genMiB * 0.25 * MiB)
  let written = 0
  let n = 0
  const seen: Buffer[] = []
  while (written < smallBudget) {
    const sub = join(dir, "src", `pkg-${n % 40}`, `mod-${Math.floor(n / 40) % 10}`)
    mkdirSync(sub, { recursive: true })
    const size = 256 + rng.int(48 * 1024)
    const dup = seen.length > 0 && rng.int(100) < 8
    const data = dup ? seen[rng.int(seen.length)]! : rng.int(10) < 8 ? textBytes(rng, size) : rng.bytes(size)
    if (!dup && seen.length < 200) seen.push(data)
    const file = join(sub, `file-${n}.${rng.int(10) < 8 ? "js" : "bin"}`)
    writeFileSync(file, data, { mode: rng.int(100) < 5 ? 0o755 : 0o644 })
    if (n % 500 === 0) symlinkSync(`file-${n}.js`, join(sub, `link-${n}`))
    written += data.length
    n++
  }
  mkdirSync(join(dir, "data"), { recursive: true })
  const big = Math.floor(genMiB * 0.62) * MiB
  const fd = openSync(join(dir, "data", "big-mixed.bin"), "w")
  try {
    for (let off = 0; off < big; off += MiB) writeSync(fd, rng.int(10) < 6 ? textBytes(rng, MiB) : rng.bytes(MiB))
  } finally {
    closeSync(fd)
  }
  const rnd = Math.max(1, Math.floor(genMiB * 0.1)) * MiB
  const fd2 = openSync(join(dir, "data", "random.bin"), "w")
  try {
    for (let off = 0; off < rnd; off += MiB) writeSync(fd2, rng.bytes(MiB))
  } finally {
    closeSync(fd2)
  }
  writeFileSync(stamp, recipe)
  log(`generated ${n} small files + 2 large in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return dir
}

// ---------------------------------------------------------------- S3 helpers

function s3client(endpoint: string): S3Client {
  return new S3Client({
    region: process.env.AWS_REGION ?? "us-east-1",
    endpoint,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  })
}

async function listPrefix(client: S3Client, bucket: string, prefix: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = []
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }))
    for (const o of page.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 })
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  return out
}

async function removePrefix(client: S3Client, bucket: string, prefix: string): Promise<void> {
  const keys = await listPrefix(client, bucket, prefix)
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000).map((k) => ({ Key: k.key }))
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } }))
  }
}

async function reachable(endpoint: string): Promise<boolean> {
  try {
    await fetch(endpoint, { signal: AbortSignal.timeout(3000) })
    return true
  } catch {
    return false
  }
}

// ---------------------------------------------------------------- tools

/** What a tool's repository occupies (its locks aside), and its removal; one shape for every tool. */
function repositorySpace(ctx: Ctx, backend: "fs" | "s3", base: string, prefix: string): Pick<Repo, "stored" | "remove"> {
  const { flags, client } = ctx
  return {
    async stored() {
      if (backend === "s3") {
        const objs = (await listPrefix(client, flags.bucket, `${prefix}/`)).filter((o) => !o.key.includes("/locks/"))
        return { objects: objs.length, bytes: objs.reduce((n, o) => n + o.size, 0) }
      }
      const s = await dirSize(join(base, "repo"))
      return { objects: s.files, bytes: s.bytes }
    },
    async remove() {
      if (backend === "s3") await removePrefix(client, flags.bucket, `${prefix}/`)
      await rm(base, { recursive: true, force: true })
    },
  }
}

interface Ctx {
  flags: Flags
  client: S3Client
  work: string
  runId: string
}

interface Sample {
  wallMs: number
  rssKiB: number
  objects?: number
  storedBytes?: number
  verification?: Verification
}

interface Adapter {
  name: ToolName
  /** where the repository lives, for the report */
  where: string
  /** fresh repository; returns a handle used by the other calls */
  init(rep: number): Promise<Repo>
}

interface Repo {
  snapshot(dir: string): Promise<{ wallMs: number; rssKiB: number }>
  restore(dest: string, newHost: boolean): Promise<{ wallMs: number; rssKiB: number }>
  stored(): Promise<{ objects: number; bytes: number }>
  remove(): Promise<void>
}

function cairnAdapter(ctx: Ctx, backend: "fs" | "s3"): Adapter {
  const { flags } = ctx
  return {
    name: backend === "fs" ? "cairn-fs" : "cairn-s3",
    where: backend === "fs" ? "a local directory" : `${flags.endpoint} (s3://${flags.bucket}/cairn-bench/...)`,
    async init(rep) {
      const base = join(ctx.work, `cairn-${backend}-${rep}`)
      await mkdir(base, { recursive: true })
      const prefix = `cairn-bench/${ctx.runId}/cairn-${rep}`
      const repoArg = backend === "fs" ? join(base, "repo") : `s3://${flags.bucket}/${prefix}`
      const env = (cache: string): NodeJS.ProcessEnv => ({
        ...process.env,
        CAIRN_CACHE_DIR: join(base, cache),
        CAIRN_S3_ENDPOINT: flags.endpoint,
        CAIRN_REPO: join(base, "unused-default"),
      })
      const cli = (args: string[], cache = "cache", cwd?: string) => runTimed(CLI, ["--repo", repoArg, ...args], { env: env(cache), cwd })
      await cli(["init"])
      let id = ""
      let hosts = 0
      return {
        async snapshot(dir) {
          const r = await cli(["snapshot", dir, "--name", "bench", "--quiet"])
          id = r.stdout.trim().split("\n").pop()!
          if (!/^snap_[0-9a-f]{16}$/.test(id)) throw new Error(`cairn snapshot printed no id: ${r.stdout.slice(-200)}`)
          return r
        },
        async restore(dest, newHost) {
          return cli(["restore", id, dest, "--quiet"], newHost ? `cache-host-${++hosts}` : "cache")
        },
        ...repositorySpace(ctx, backend, base, prefix),
      }
    },
  }
}

function resticAdapter(ctx: Ctx, backend: "fs" | "s3"): Adapter {
  const { flags } = ctx
  return {
    name: backend === "fs" ? "restic-fs" : "restic-s3",
    where: backend === "fs" ? "a local directory" : `s3:${flags.endpoint}/${flags.bucket}/cairn-bench/...`,
    async init(rep) {
      const base = join(ctx.work, `restic-${backend}-${rep}`)
      await mkdir(base, { recursive: true })
      const prefix = `cairn-bench/${ctx.runId}/restic-${rep}`
      const repository = backend === "fs" ? join(base, "repo") : `s3:${flags.endpoint.replace(/\/+$/, "")}/${flags.bucket}/${prefix}`
      const env = (cache: string): NodeJS.ProcessEnv => ({
        ...process.env,
        RESTIC_REPOSITORY: repository,
        RESTIC_PASSWORD: "cairn-bench",
        RESTIC_CACHE_DIR: join(base, cache),
      })
      await runTimed("restic", ["init", "--repository-version", "2", "-q"], { env: env("cache") })
      let hosts = 0
      return {
        async snapshot(dir) {
          // back up "." from inside the corpus, so that restores land at the top of the target
          return runTimed("restic", ["backup", "--compression", "auto", "--host", "bench", "-q", "."], { cwd: dir, env: env("cache") })
        },
        async restore(dest, newHost) {
          return runTimed("restic", ["restore", "latest", "--target", dest, "-q"], { env: env(newHost ? `cache-host-${++hosts}` : "cache") })
        },
        ...repositorySpace(ctx, backend, base, prefix),
      }
    },
  }
}

// ---------------------------------------------------------------- main

interface Row {
  tool: ToolName
  step: Step
  samples: Sample[]
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2))
  if (!existsSync(CLI)) usage(`${CLI} is missing: run "npm run build" first`)
  const notes: string[] = []

  const loopback = /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\/?$/.test(flags.endpoint)
  if (!process.env.AWS_ACCESS_KEY_ID && loopback) {
    // the keys scripts/ceph-rgw.sh gives its throwaway user
    process.env.AWS_ACCESS_KEY_ID = process.env.S3_ACCESS_KEY || "TESTKEY"
    process.env.AWS_SECRET_ACCESS_KEY = process.env.S3_SECRET_KEY || "TESTSECRET"
    notes.push("AWS_ACCESS_KEY_ID was unset: used the local gateway's test user (scripts/ceph-rgw.sh).")
  }
  process.env.AWS_REGION ??= "us-east-1"
  const wantsS3 = [...flags.only].some((t) => t.endsWith("-s3"))
  if (wantsS3 && !(await reachable(flags.endpoint))) {
    process.stderr.write(
      `bench/s3: no S3 endpoint answers at ${flags.endpoint}; start the local gateway with "bash scripts/ceph-rgw.sh start /tmp/cairn-rgw", or pass --endpoint\n`,
    )
    process.exit(1)
  }
  if (!(await onPath("restic"))) {
    for (const t of ["restic-fs", "restic-s3"] as const) flags.only.delete(t)
    notes.push('restic is not installed: its rows are skipped ("bash scripts/install-peers.sh" installs it).')
  }
  const resticVersion = flags.only.has("restic-s3") || flags.only.has("restic-fs") ? (await run("restic", ["version"])).stdout.trim() : ""

  const corpus = flags.corpus ?? (existsSync(join(CORPORA_DIR, "workspace")) ? join(CORPORA_DIR, "workspace") : generatedCorpus(flags.genMiB))
  if (!existsSync(corpus)) usage(`corpus ${corpus} does not exist`)
  log(`corpus ${corpus}`)
  const size = await dirSize(corpus)
  const expected: Manifest = await manifest(corpus)
  log(`${size.files} files, ${size.dirs} dirs, ${size.symlinks} symlinks, ${(size.bytes / MiB).toFixed(1)} MiB`)

  const client = s3client(flags.endpoint)
  if (wantsS3) {
    try {
      await client.send(new HeadBucketCommand({ Bucket: flags.bucket }))
    } catch {
      await client.send(new CreateBucketCommand({ Bucket: flags.bucket })).catch((err: { name?: string }) => {
        if (err.name !== "BucketAlreadyOwnedByYou" && err.name !== "BucketAlreadyExists") throw err
      })
    }
  }
  const work = await mkdtemp(join(os.tmpdir(), "cairn-bench-s3-"))
  const ctx: Ctx = { flags, client, work, runId: `${Date.now().toString(36)}-${process.pid}` }
  const adapters = [cairnAdapter(ctx, "fs"), cairnAdapter(ctx, "s3"), resticAdapter(ctx, "fs"), resticAdapter(ctx, "s3")].filter((a) =>
    flags.only.has(a.name),
  )
  const load0 = os.loadavg()
  const rows: Row[] = []
  const row = (tool: ToolName, step: Step): Row => {
    let r = rows.find((x) => x.tool === tool && x.step === step)
    if (!r) rows.push((r = { tool, step, samples: [] }))
    return r
  }
  const started = Date.now()
  await useTrash(join(work, "trash"))
  try {
    for (let rep = 0; rep < flags.reps; rep++) {
      for (const a of adapters) {
        log(`${a.name} rep ${rep + 1}/${flags.reps}`)
        const repo = await a.init(rep)
        try {
          const s = await repo.snapshot(corpus)
          const st = await repo.stored()
          row(a.name, "snapshot").samples.push({ wallMs: s.wallMs, rssKiB: s.rssKiB, objects: st.objects, storedBytes: st.bytes })
          log(`  snapshot ${(s.wallMs / 1000).toFixed(2)} s, ${st.objects} objects, ${(st.bytes / MiB).toFixed(1)} MiB`)
          for (const step of ["restore", "restore, new host"] as const) {
            const dest = join(work, `dest-${a.name}-${rep}-${step === "restore" ? "same" : "new"}`)
            const r = await repo.restore(dest, step !== "restore")
            const v = await verifyTree(expected, dest)
            row(a.name, step).samples.push({ wallMs: r.wallMs, rssKiB: r.rssKiB, verification: v })
            log(`  ${step} ${(r.wallMs / 1000).toFixed(2)} s, ${verificationLabel(v)}`)
            await removeTree(dest) // into the trash: a deletion would slow the next restore's file creation (bench/README.md)
          }
        } finally {
          if (!flags.keep) await repo.remove()
        }
      }
    }
  } finally {
    if (!flags.keep) await rm(work, { recursive: true, force: true })
    client.destroy()
  }
  const load1 = os.loadavg()

  // ------------------------------------------------------------ report
  const mb = size.bytes / 1e6
  const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "–")
  const ref = (step: Step) => rows.find((r) => r.tool === "cairn-fs" && r.step === step)
  const lines: string[] = []
  lines.push("# cairn on S3: snapshot and restore against a local gateway", "")
  lines.push(
    `Corpus \`${corpus.replace(PROJECT_ROOT, "")}\`: ${size.files} files, ${size.dirs} dirs, ${size.symlinks} symlinks, ` +
      `${(size.bytes / MiB).toFixed(1)} MiB (${mb.toFixed(1)} MB). S3 endpoint ${flags.endpoint}, bucket \`${flags.bucket}\`. ` +
      `${flags.reps} repetition(s), median shown (min–max when more than one). ${os.cpus().length} CPUs, Node ${process.version}` +
      (resticVersion ? `, ${resticVersion.split(" compiled")[0]}` : "") +
      ".",
    "",
  )
  lines.push("| tool | step | wall s | MB/s | peak RSS MiB | objects | stored MiB | vs cairn-fs | restore check |")
  lines.push("|---|---|---:|---:|---:|---:|---:|---:|---|")
  for (const step of STEPS) {
    for (const tool of TOOLS) {
      const r = rows.find((x) => x.tool === tool && x.step === step)
      if (!r) continue
      const t = summarize(r.samples.map((s) => s.wallMs / 1000))
      const rss = Math.max(...r.samples.map((s) => s.rssKiB)) / 1024
      const last = r.samples[r.samples.length - 1]!
      const base = ref(step)
      const baseT = base ? summarize(base.samples.map((s) => s.wallMs / 1000)).median : NaN
      const time = t.n > 1 ? `${fmt(t.median)} (${fmt(t.min)}–${fmt(t.max)})` : fmt(t.median)
      const checks = r.samples.map((s) => s.verification).filter((v): v is Verification => v !== undefined)
      const check = checks.length === 0 ? "–" : checks.every((v) => v.ok) ? "ok" : checks.map(verificationLabel).filter((l) => l !== "ok").join("; ")
      lines.push(
        `| ${tool} | ${step} | ${time} | ${fmt(mb / t.median, 1)} | ${fmt(rss, 0)} | ${last.objects ?? "–"} | ${
          last.storedBytes === undefined ? "–" : fmt(last.storedBytes / MiB, 1)
        } | ${tool === "cairn-fs" ? "1.00" : fmt(t.median / baseT)} | ${check} |`,
      )
    }
  }
  lines.push("")
  lines.push("- **wall s**: elapsed time of the one command (a new process: includes Node's and the SDK's start-up). **MB/s**: corpus logical MB (10^6 B) per second.")
  lines.push("- **peak RSS**: `/usr/bin/time -f %M` of the tool's process (the gateway's own memory is not included).")
  lines.push("- **objects / stored**: after the snapshot, what the repository holds (S3: objects and bytes under the prefix; fs: files and bytes under the directory; caches live outside and are not counted).")
  lines.push("- **restore, new host**: an empty cache directory (cairn: `CAIRN_CACHE_DIR`, restic: `RESTIC_CACHE_DIR`), as a first restore on another machine.")
  lines.push("- **vs cairn-fs**: the row's median time divided by cairn on the filesystem backend for the same step (above 1: slower).")
  lines.push(`- The gateway runs on this machine and competes for its CPUs. Load average at start ${load0.map((l) => l.toFixed(2)).join(" ")}, at end ${load1.map((l) => l.toFixed(2)).join(" ")}; ${((Date.now() - started) / 1000).toFixed(0)} s in all.`)
  for (const n of notes) lines.push(`- ${n}`)
  const md = lines.join("\n") + "\n"
  process.stdout.write(md)
  await mkdir(flags.out, { recursive: true })
  await writeFile(join(flags.out, "s3.md"), md)
  await writeFile(
    join(flags.out, "s3.json"),
    JSON.stringify({ corpus, size, endpoint: flags.endpoint, bucket: flags.bucket, reps: flags.reps, notes, rows }, (_k, v) => (typeof v === "bigint" ? String(v) : v), 2),
  )
  log(`wrote ${join(flags.out, "s3.md")}`)
}

main().catch((err) => {
  process.stderr.write(`bench/s3: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
})
