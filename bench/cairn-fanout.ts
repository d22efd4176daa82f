// One process, N restores of one snapshot through cairn's library API with
// Promise.all (the in-process counterpart of N parallel `cairn restore`s).
//
//   node dist/bench/cairn-fanout.js REPO SNAPSHOT DEST...

import { Repository } from "../engine/index.js"

async function main(): Promise<void> {
  const [repoPath, id, ...dests] = process.argv.slice(2)
  if (!repoPath || !id || dests.length === 0) {
    console.error("usage: cairn-fanout REPO SNAPSHOT DEST...")
    process.exit(2)
  }
  const repo = await Repository.open({ path: repoPath, create: false })
  await Promise.all(dests.map((dest) => repo.snapshots.restore(id, dest)))
  await repo.close()
}

await main()
