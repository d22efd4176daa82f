#!/usr/bin/env node
// Library-level stand-in for CLI commands this build may not have yet
// (`cairn gc`, `cairn verify --read-data`), run as a real subprocess so that
// the crash and concurrency tests can SIGKILL it like the CLI. Usage:
//   node driver.mjs gc REPO
//   node driver.mjs verify REPO      (exit 3 on damage, one JSON line on stdout)
//   node driver.mjs box-create REPO NAME AT   (waits until Date.now() >= AT, so that
//                                              several processes race for real)
// It imports the compiled library from dist/, as the CLI does.
import path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.resolve(here, "../../dist/engine")
const { Repository } = await import(path.join(dist, "repository.js"))
const { collectGarbage } = await import(path.join(dist, "gc.js"))
const { flattenTree } = await import(path.join(dist, "walk.js"))
const { Box } = await import(path.join(dist, "box.js"))

const [op, repoPath] = process.argv.slice(2)
const repo = await Repository.open({ path: repoPath, create: false })
let code = 0
try {
  if (op === "gc") {
    const r = typeof repo.gc === "function" ? await repo.gc({}) : await collectGarbage(repo.store, {})
    process.stdout.write(JSON.stringify({ packsDeleted: r.packsDeleted, packsRepacked: r.packsRepacked }) + "\n")
  } else if (op === "verify") {
    const damage = []
    const snapshots = await repo.snapshots.list()
    const seen = new Set()
    for (const s of snapshots) {
      try {
        for (const p of await flattenTree(repo.store, s.tree)) {
          for (const id of p.entry.chunks ?? []) {
            if (seen.has(id)) continue
            seen.add(id)
            try {
              await repo.store.getBlob(id)
            } catch (err) {
              damage.push({ snapshot: s.id, path: p.rel, blob: id, code: err.code, message: err.message })
            }
          }
        }
      } catch (err) {
        damage.push({ snapshot: s.id, code: err.code, message: err.message })
      }
    }
    process.stdout.write(JSON.stringify({ ok: damage.length === 0, snapshots: snapshots.length, blobs: seen.size, damage }) + "\n")
    code = damage.length === 0 ? 0 : 3
  } else if (op === "box-create") {
    const [name, at] = process.argv.slice(4)
    while (Date.now() < Number(at)) await new Promise((resolve) => setTimeout(resolve, 1))
    const box = await Box.create({ repo, name })
    process.stdout.write(JSON.stringify({ id: box.id }) + "\n")
  } else throw new Error(`unknown op ${op}`)
} catch (err) {
  process.stderr.write(`driver: ${err?.code ?? ""} ${err?.message ?? err}\n`)
  code = err?.code === "INTEGRITY" ? 3 : err?.code === "LOCKED" ? 4 : err?.code === "ALREADY_EXISTS" ? 6 : 1
} finally {
  await repo.close().catch(() => {})
}
process.exitCode = code
