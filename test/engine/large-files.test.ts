// A snapshot reads large files through the chunk readers (chunkFile), two at
// a time, and at most one that takes more than one reader span: such a file
// keeps both readers busy alone and holds up to four span buffers.
import path from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import * as reader from "../../engine/chunk-reader.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { buildTree, describeTree, type DirSpec } from "../fixtures.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

vi.mock("../../engine/chunk-reader.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../engine/chunk-reader.js")>()
  return { ...actual, chunkFile: vi.fn(actual.chunkFile) }
})
const chunkFile = vi.mocked(reader.chunkFile)
const actual = await vi.importActual<typeof import("../../engine/chunk-reader.js")>("../../engine/chunk-reader.js")

afterEach(() => {
  chunkFile.mockReset()
  chunkFile.mockImplementation(actual.chunkFile)
})

describe("large files", () => {
  it("are read two at a time, and of those at most one of several spans", async () => {
    const active = { all: 0, multi: 0 }
    const most = { all: 0, multi: 0 }
    chunkFile.mockImplementation(async function* (file, params, gear, opts) {
      const multi = (opts?.sizeHint ?? Infinity) > actual.SPAN
      active.all++
      if (multi) active.multi++
      most.all = Math.max(most.all, active.all)
      most.multi = Math.max(most.multi, active.multi)
      try {
        yield* actual.chunkFile(file, params, gear, opts)
      } finally {
        active.all--
        if (multi) active.multi--
      }
    })
    const src = await tempDir()
    const spec: DirSpec = {}
    for (let i = 0; i < 3; i++) spec[`big${i}.bin`] = { file: Buffer.concat([textBytes(`big${i}`, actual.SPAN), seededBytes(`big${i}`, 300_000)]) }
    for (let i = 0; i < 5; i++) spec[`mid${i}.txt`] = { file: textBytes(`mid${i}`, 400_000 + i * 1000) }
    await buildTree(src, spec)
    const store = await Store.init({ backend: new MemoryObjectStore(), cacheDir: await tempDir() })
    const { snapshot } = await createSnapshot(store, src)
    expect(chunkFile).toHaveBeenCalledTimes(8)
    expect(most.multi).toBe(1)
    expect(most.all).toBeLessThanOrEqual(2)
    const dest = path.join(await tempDir(), "out")
    expect((await restoreSnapshot(store, snapshot, dest)).failed).toEqual([])
    expect(await describeTree(dest)).toEqual(await describeTree(src))
    await store.close()
  })
})
