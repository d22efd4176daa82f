// `cairn demo`: the main job end to end on the default store. A box gets a
// small npm project, is snapshotted, and three boxes branch from the snapshot
// in parallel; one of them changes; sizes show what was shared.

import { Box, type Repository } from "../engine/index.js"
import { bytes, ratio, table, type ProgressBar } from "./format.js"

export async function demo(repo: Repository, opts: { keep: boolean; json: boolean; progress: ProgressBar }): Promise<void> {
  const log = (line: string) => {
    if (!opts.json) process.stdout.write(line + "\n")
  }
  log(`repository: ${repo.location}`)
  // box names are unique, and an earlier demo's boxes may remain: this run's names get a number if need be
  const taken = new Set((await Box.list({ repo })).map((b) => b.name))
  let run = 1
  const named = (name: string) => (run === 1 ? name : `${name}-${run}`)
  const names = () => [named("demo-setup"), ...[1, 2, 3].map((i) => named(`demo-branch-${i}`))]
  while (names().some((n) => taken.has(n))) run++
  const box = await Box.create({ repo, name: named("demo-setup") })
  log(`1. created box ${box.id} at ${box.dir}`)
  const install = await box.exec(
    "npm init -y >/dev/null && npm install --no-audit --no-fund --ignore-scripts --loglevel=error is-number@7.0.0 left-pad@1.3.0",
    { timeoutMs: 120_000 },
  )
  let installed = "npm install is-number@7.0.0 left-pad@1.3.0"
  if (install.exitCode !== 0) {
    const why = install.stderr.trim().split("\n").pop()?.slice(0, 160) || `exit code ${install.exitCode}`
    installed = `npm was not usable here (${why}), so a few files were written instead`
    await box.files.write({ path: "/package.json", content: JSON.stringify({ name: "demo", version: "1.0.0" }, null, 2) })
    await box.files.write({ path: "/node_modules/left-pad/index.js", content: "module.exports = (s, n, c = ' ') => String(s).padStart(n, c)\n" })
  }
  await box.files.write({ path: "/src/app.js", content: "console.log(require('left-pad')('cairn', 10))\n" })
  log(`2. installed into it: ${installed}`)
  const snapshot = await box.snapshot({ name: "demo-after-setup", onProgress: opts.progress.update })
  opts.progress.done()
  log(`3. snapshot ${snapshot.id}: ${snapshot.stats.files} files, ${bytes(snapshot.stats.logicalBytes)} logical, ${bytes(snapshot.stats.storedBytes)} stored, ${bytes(snapshot.stats.addedBytes)} new to the store`)
  const t0 = performance.now()
  const branches = await Promise.all([1, 2, 3].map((i) => Box.fromSnapshot(snapshot.id, { repo, name: named(`demo-branch-${i}`) })))
  log(`4. branched 3 boxes from it in parallel in ${((performance.now() - t0) / 1000).toFixed(2)} s`)
  await branches[0]!.files.write({ path: "/src/app.js", content: "console.log('branch 1 went its own way')\n" })
  const changed = await branches[0]!.snapshot({ name: "demo-branch-1-changed" })
  log(`5. changed one file in ${branches[0]!.id} and snapshotted it: ${bytes(changed.stats.addedBytes)} new to the store`)
  const same = (await branches[1]!.files.read("/src/app.js")).toString() === (await box.files.read("/src/app.js")).toString()
  log(`   the other branches are unaffected: ${same ? "yes" : "NO"}`)
  const rows = [snapshot, changed].map((s) => [s.name ?? s.id, bytes(s.stats.logicalBytes), bytes(s.stats.storedBytes), bytes(s.stats.addedBytes)])
  log("")
  log(table(["snapshot", "logical", "stored", "added"], rows))
  const logical = snapshot.stats.logicalBytes + changed.stats.logicalBytes
  const added = snapshot.stats.addedBytes + changed.stats.addedBytes
  log(`\n${bytes(logical)} of snapshots cost ${bytes(added)} in the store (${(logical / Math.max(1, added)).toFixed(1)}x) and 4 boxes share it`)
  const stats = await repo.stats()
  log(`the whole repository: ${stats.snapshots} snapshots, ${bytes(stats.logicalBytes)} logical in ${bytes(stats.physicalBytes)} of packs, dedup ${ratio(stats.logicalBytes, stats.dedupRatio)}`)
  const mine = new Set([box.id, ...branches.map((b) => b.id)])
  const boxes = (await Box.list({ repo })).filter((b) => mine.has(b.id))
  log("")
  log(table(["box", "name", "from", "last snapshot", "dir"], boxes.map((b) => [b.id, b.name ?? "", b.info.fromSnapshot ?? "", b.info.lastSnapshot ?? "", b.dir])))
  if (!opts.keep) {
    for (const b of branches) await b.delete()
    log(`the 3 branched boxes were removed (--keep keeps them); their snapshots and the setup box ${box.id} stay`)
  }
  log("")
  log("try next:")
  log(`  cairn ls                                   the snapshots`)
  log(`  cairn show -r ${snapshot.name}          the files inside`)
  log(`  cairn diff ${snapshot.name} ${changed.name}   what the branch changed`)
  log(`  cairn box exec ${box.id} -- ls node_modules`)
  log(`  cairn box create --from ${snapshot.name}   another branch`)
  log(`  cairn stats                                sizes and dedup of the whole repository`)
  if (opts.json) {
    process.stdout.write(JSON.stringify({ installed, snapshot, changed, boxes: boxes.map((b) => b.info), stats, kept: opts.keep }, null, 2) + "\n")
  }
}
