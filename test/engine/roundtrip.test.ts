import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { buildTree, describeTree } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

async function setup() {
  const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir(), config: { packSize: 256 * 1024 } })
  return store
}

describe("snapshot and restore", () => {
  it("restores contents, modes, mtimes, symlinks, empty dirs and hardlinks", async () => {
    const store = await setup()
    const src = await tempDir()
    await buildTree(src, {
      "a.txt": { file: "hello", mode: 0o640, mtimeNs: 1_700_000_000_123_456_789n },
      "big.bin": { file: seededBytes("big", 3_000_000) },
      "text.txt": { file: textBytes("t", 500_000) },
      empty: { file: "" },
      "exec.sh": { file: "#!/bin/sh\n", mode: 0o755 },
      sub: { dir: { deeper: { dir: { "x y é.txt": { file: "unicode" } } }, nothing: { dir: {} } }, mode: 0o750 },
      link: { symlink: "a.txt" },
      dangling: { symlink: "../../nowhere" },
      "hard-1": { file: "shared inode" },
      sub2: { dir: { "hard-2": { hardlink: "hard-1" } } },
    })
    const { snapshot, warnings } = await createSnapshot(store, src, { name: "first" })
    expect(warnings).toEqual([])
    expect(snapshot.stats.files).toBe(8)
    expect(snapshot.stats.logicalBytes).toBe(5 + 3_000_000 + 500_000 + 10 + 7 + 12)
    const dest = path.join(await tempDir(), "out")
    const result = await restoreSnapshot(store, snapshot, dest)
    expect(result.failed).toEqual([])
    expect(await describeTree(dest)).toEqual(await describeTree(src))
    await store.close()
  })

  it("an unchanged tree is re-snapshotted without reading any file", async () => {
    const store = await setup()
    const src = await tempDir()
    const spec: Record<string, { file: string }> = {}
    for (let i = 0; i < 300; i++) spec[`f${i}.txt`] = { file: `content ${i}` }
    await buildTree(src, spec)
    const first = await createSnapshot(store, src)
    const second = await createSnapshot(store, src, { parent: first.snapshot })
    expect(second.readBytes).toBe(0)
    expect(second.reusedFiles).toBe(300)
    expect(second.snapshot.tree).toBe(first.snapshot.tree)
    expect(second.snapshot.stats.addedBytes).toBe(0)
    expect(second.snapshot.stats.storedBytes).toBe(first.snapshot.stats.storedBytes)
    await fsp.writeFile(path.join(src, "f7.txt"), "changed")
    const third = await createSnapshot(store, src, { parent: second.snapshot })
    expect(third.reusedFiles).toBe(299)
    expect(third.snapshot.tree).not.toBe(first.snapshot.tree)
    await store.close()
  })
})
