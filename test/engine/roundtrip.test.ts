import { execFileSync } from "node:child_process"
import { existsSync, promises as fsp, readdirSync } from "node:fs"
import path from "node:path"
import { Readable } from "node:stream"
import fc from "fast-check"
import tarStream from "tar-stream"
import { describe, expect, it } from "vitest"
import { isZeroChunk } from "../../engine/file-writer.js"
import { chunkLengths, gearTable } from "../../engine/fastcdc.js"
import { FsObjectStore } from "../../store/backends/fs.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { Store } from "../../store/store.js"
import { restoreSnapshot } from "../../engine/restore.js"
import { createSnapshot } from "../../engine/snapshot.js"
import { importTar } from "../../engine/tar.js"
import { IoError, isCairnError } from "../../store/errors.js"
import { buildTree, describeTree } from "../fixtures.js"
import { pastTick, seededBytes, tempDir, textBytes } from "../helpers.js"

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

  it.each([
    ["writer threads", true],
    ["inline writes", false],
  ] as const)("fills a new or empty destination through a stage: nothing shows under a final name before every file is done (%s)", async (_label, writers) => {
    const store = await setup()
    const src = await tempDir()
    const many: Record<string, { file: Uint8Array | string }> = {}
    for (let i = 0; i < 300; i++) many[`f${i}.txt`] = { file: textBytes(`s${i}`, 100 + i * 37) }
    await buildTree(src, {
      many: { dir: many },
      "big.bin": { file: seededBytes("staged big", 1_500_000) },
      ro: { dir: { "x.txt": { file: "x" } }, mode: 0o555 },
      link: { symlink: "big.bin" },
      "hard-1": { file: "one inode" },
      "hard-2": { hardlink: "hard-1" },
    })
    const { snapshot } = await createSnapshot(store, src)
    const root = await tempDir()
    const stage = /^\.cairn-[0-9a-f]{8}-[0-9a-z]+\.stage$/
    for (const dest of [path.join(root, "new"), path.join(root, "empty")]) {
      if (dest.endsWith("empty")) await fsp.mkdir(dest)
      const seen = new Set<string>()
      const result = await restoreSnapshot(store, snapshot, dest, {
        writers,
        onProgress: () => {
          for (const name of readdirSync(dest)) seen.add(stage.test(name) ? "stage" : name)
        },
      })
      expect(result.failed).toEqual([])
      expect([...seen]).toEqual(["stage"])
      expect(await describeTree(dest)).toEqual(await describeTree(src))
    }
    // a non-empty destination (overwrite) has no stage: its files are replaced one by one, each through a temp name
    const full = path.join(root, "full")
    await buildTree(full, { "keep.txt": { file: "mine" }, "big.bin": { file: "old" } })
    const seen = new Set<string>()
    await restoreSnapshot(store, snapshot, full, { writers, overwrite: true, onProgress: () => readdirSync(full).forEach((n) => seen.add(n)) })
    expect([...seen].filter((n) => n.endsWith(".stage"))).toEqual([])
    const { "keep.txt": kept, ...restored } = await describeTree(full)
    expect(kept).toMatch(/^file /)
    expect(restored).toEqual(await describeTree(src))
    await store.close()
  })

  it("gives the destination the snapshotted directory's own mode and mtime (records before them: 0755, mtime left)", async () => {
    const store = await setup()
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "a" }, sub: { dir: { "b.txt": { file: "b" } } } })
    await fsp.chmod(src, 0o750)
    const mtimeNs = 1_650_000_000_987_654_000n
    const t = new Date(Number(mtimeNs / 1_000_000n))
    await fsp.utimes(src, t, t)
    const { snapshot } = await createSnapshot(store, src)
    expect(snapshot.root).toMatchObject({ mode: 0o750, mtime: String((await fsp.stat(src, { bigint: true })).mtimeNs) })
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(store, snapshot, dest)
    const st = await fsp.stat(dest, { bigint: true })
    expect(Number(st.mode & 0o7777n)).toBe(0o750)
    expect(st.mtimeNs).toBe((await fsp.stat(src, { bigint: true })).mtimeNs)
    // a record from before root metadata was kept: 0755, and not an mtime of 1970
    const { root: _, ...legacy } = snapshot
    const old = path.join(await tempDir(), "old")
    await restoreSnapshot(store, legacy, old)
    const ost = await fsp.stat(old)
    expect(ost.mode & 0o7777).toBe(0o755)
    expect(Date.now() - ost.mtimeMs).toBeLessThan(60_000)
    await store.close()
  })

  it("leaves out the repository and its cache when they are inside the tree, with a warning", async () => {
    const src = await tempDir()
    await buildTree(src, { "a.txt": { file: "a" }, sub: { dir: { "b.txt": { file: "b" } } } })
    const store = await Store.init({ backend: new FsObjectStore(path.join(src, "sub", "repo")), cacheDir: path.join(src, "cache", "r1") })
    const first = await createSnapshot(store, src)
    const second = await createSnapshot(store, src) // the repository now holds the first snapshot's packs
    for (const { snapshot, warnings } of [first, second]) {
      expect(warnings).toEqual([
        { path: "cache/r1", reason: "skipped: it is the repository being written to, or its cache" },
        { path: "sub/repo", reason: "skipped: it is the repository being written to, or its cache" },
      ])
      expect(snapshot.stats).toMatchObject({ files: 2, dirs: 2 }) // sub and cache, without what they hold
    }
    expect(second.snapshot.tree).toBe(first.snapshot.tree)
    const dest = path.join(await tempDir(), "out")
    await restoreSnapshot(store, second.snapshot, dest)
    const expected = Object.fromEntries(Object.entries(await describeTree(src)).filter(([p]) => !/^(sub\/repo|cache\/r1)(\/|$)/.test(p)))
    expect(await describeTree(dest)).toEqual(expected)
    await store.close()
  })

  it("an unchanged tree is re-snapshotted without reading any file", async () => {
    const store = await setup()
    const src = await tempDir()
    const spec: Record<string, { file: string }> = {}
    for (let i = 0; i < 300; i++) spec[`f${i}.txt`] = { file: `content ${i}` }
    await buildTree(src, spec)
    await pastTick()
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

describe("paths longer than the system allows (PATH_MAX)", () => {
  /** 22 directories of 200-byte names: the deepest ones lie past 4,096 bytes from any temp dir. */
  const NAME = "d".repeat(200)
  const LEVELS = 22

  it("a snapshot leaves out what lies too deep, with a warning, and keeps the rest", async () => {
    const store = await setup()
    const src = await tempDir()
    await fsp.writeFile(path.join(src, "a.txt"), "shallow")
    // made and removed by relative steps: node's fs takes whole paths, which the kernel refuses past PATH_MAX
    execFileSync("bash", ["-c", `for i in $(seq ${LEVELS}); do mkdir ${NAME} && cd ${NAME}; done; echo deep > f.txt`], { cwd: src })
    try {
      const { snapshot, warnings } = await createSnapshot(store, src)
      const fits = Math.floor((4095 - Buffer.byteLength(src)) / (NAME.length + 1)) // directories whose path fits
      expect(warnings).toHaveLength(1)
      expect(warnings[0]!.reason).toMatch(/^skipped: its path is longer than the system allows \(\d+ bytes\)$/)
      expect(warnings[0]!.path).toBe(Array(fits + 1).fill(NAME).join("/"))
      expect(snapshot.stats).toMatchObject({ files: 1, dirs: fits })
      const dest = path.join(await tempDir(), "out")
      await restoreSnapshot(store, snapshot, dest)
      expect(await fsp.readFile(path.join(dest, "a.txt"), "utf8")).toBe("shallow")
    } finally {
      execFileSync("rm", ["-rf", path.join(src, NAME)])
    }
    await store.close()
  })

  it("a restore of a snapshot holding such a path is refused before anything is written; a part of it restores", async () => {
    const store = await setup()
    const pack = tarStream.pack()
    const deep = `${Array(LEVELS).fill(NAME).join("/")}/f.txt`
    pack.entry({ name: deep }, "deep\n")
    pack.entry({ name: "ok.txt" }, "ok\n")
    pack.finalize()
    const { snapshot } = await importTar(store, Readable.from(pack), { name: "deep" })
    const dest = path.join(await tempDir(), "out")
    const err = await restoreSnapshot(store, snapshot, dest).catch((e: unknown) => e)
    expect(isCairnError(err, "BAD_INPUT")).toBe(true)
    expect((err as Error).message).toMatch(/holds paths longer than this system allows there \(\d+ bytes, at most 4095\).*restore a part of the snapshot/)
    expect(existsSync(dest)).toBe(false)
    await restoreSnapshot(store, snapshot, dest, { subPath: "ok.txt" })
    expect(await fsp.readdir(dest)).toEqual(["ok.txt"])
    await store.close()
  })
})

describe("sparse files", () => {
  it("isZeroChunk: all zeros and at least a block long, whatever the length and where a non-zero byte sits", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 300_000 }), fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }))), (len, poke) => {
        const b = new Uint8Array(len)
        if (poke && len > 0) b[poke[0] % len] = poke[1]
        expect(isZeroChunk(b)).toBe(len >= 4096 && b.every((x) => x === 0))
      }),
      { numRuns: 300 },
    )
    expect(isZeroChunk(new Uint8Array(65536 * 3 + 5))).toBe(true)
    const late = new Uint8Array(65536 * 3 + 5)
    late[65536 * 2 + 17] = 1 // past the first compare window
    expect(isZeroChunk(late)).toBe(false)
  })

  it("restore leaves zero chunks as holes: same bytes, few blocks; with and without writer threads, and again later", async () => {
    const store = await setup()
    const src = await tempDir()
    const MiB = 1 << 20
    // data, a 3 MiB run of zeros, data, then a 2 MiB zero tail (a file ending in a hole)
    const img = Buffer.concat([seededBytes("head", MiB), Buffer.alloc(3 * MiB), seededBytes("mid", 100_000), Buffer.alloc(2 * MiB)])
    await fsp.writeFile(path.join(src, "disk.img"), img)
    await fsp.writeFile(path.join(src, "zeros.bin"), Buffer.alloc(300_000)) // one chunk, all zeros
    await fsp.writeFile(path.join(src, "tiny-zeros"), Buffer.alloc(1000)) // under a block: written
    const { snapshot } = await createSnapshot(store, src)
    // the bytes of disk.img's chunks that are not all zeros: where its chunk boundaries fall depends on the
    // repository's gear table (random per repository), and a chunk holding data and zeros is written whole
    const c = store.config.chunker
    const lengths = chunkLengths(img, { minSize: c.minSize, avgSize: c.avgSize, maxSize: c.maxSize }, gearTable(Buffer.from(c.seed, "hex")))
    let dataBytes = 0
    let at = 0
    for (const len of lengths) {
      if (!isZeroChunk(img.subarray(at, at + len))) dataBytes += len
      at += len
    }
    expect(dataBytes).toBeLessThan(img.length - 2 * MiB) // most of the zeros are whole chunks
    for (const [n, opts] of [[1, {}], [2, { writers: false }], [3, {}]] as const) {
      const dest = path.join(await tempDir(), `out${n}`)
      await restoreSnapshot(store, snapshot, dest, opts)
      expect(await describeTree(dest)).toEqual(await describeTree(src))
      const disk = await fsp.stat(path.join(dest, "disk.img"))
      expect(disk.size).toBe(img.length)
      // the zero chunks are holes: only the other chunks are allocated (a block of slack per chunk)
      expect(disk.blocks * 512).toBeLessThanOrEqual(dataBytes + lengths.length * 4096)
      expect((await fsp.stat(path.join(dest, "zeros.bin"))).blocks).toBe(0)
      expect((await fsp.readFile(path.join(dest, "tiny-zeros"))).equals(Buffer.alloc(1000))).toBe(true)
    }
    await store.close()
  })
})

describe("a pack write that fails part-way through a snapshot", () => {
  /** A slow disk that fills up: every pack write takes a while, and those after the first `room` fail with ENOSPC. */
  class FillingStore extends MemoryObjectStore {
    constructor(private room: number) {
      super()
    }
    override async put(key: string, data: Uint8Array): Promise<void> {
      if (key.startsWith("data/")) {
        await new Promise((resolve) => setTimeout(resolve, 10))
        if (this.room-- <= 0) throw new IoError(`could not write ${key} (ENOSPC): the disk is full`, { key, errno: "ENOSPC" })
      }
      return super.put(key, data)
    }
  }

  it("fails with the write's error and nothing else: no unhandled rejection, no snapshot record", async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on("unhandledRejection", onUnhandled)
    try {
      const src = await tempDir()
      // many chunks of large files in flight (the reader threads' path) while packs fill and fail
      for (let i = 0; i < 3; i++) await fsp.writeFile(path.join(src, `big-${i}.bin`), textBytes(`big ${i}`, 6_000_000))
      for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(src, `small-${i}.txt`), textBytes(`small ${i}`, 20_000))
      const backend = new FillingStore(2)
      const store = await Store.init({ backend, cacheDir: await tempDir(), config: { packSize: 64 * 1024 } })
      const err = await createSnapshot(store, src).catch((e: unknown) => e)
      expect(isCairnError(err, "IO")).toBe(true)
      expect((err as Error).message).toMatch(/ENOSPC/)
      await new Promise((resolve) => setTimeout(resolve, 50)) // let any stray rejection surface
      expect(unhandled).toEqual([])
      expect((await backend.list("snapshots/")).length).toBe(0)
      await store.close().catch(() => store.releaseIndex())
    } finally {
      process.off("unhandledRejection", onUnhandled)
    }
  })
})

describe("restoring a part of a snapshot that holds hardlinks", () => {
  it("a member whose holder lies outside the part gets its content; the group's other members inside link to it", async () => {
    const store = await setup()
    const src = await tempDir()
    await buildTree(src, {
      a: { dir: { one: { file: "shared\n", mode: 0o640 } } },
      b: { dir: { two: { hardlink: "a/one" }, c: { dir: { three: { hardlink: "a/one" } } }, link: { symlink: "../a/one" } } },
    })
    const { snapshot } = await createSnapshot(store, src)
    const part = path.join(await tempDir(), "part")
    const result = await restoreSnapshot(store, snapshot, part, { subPath: "b" })
    expect(result.failed).toEqual([])
    const two = await fsp.stat(path.join(part, "two"))
    const three = await fsp.stat(path.join(part, "c", "three"))
    expect(await fsp.readFile(path.join(part, "c", "three"), "utf8")).toBe("shared\n")
    expect([three.ino, two.nlink, two.mode & 0o7777]).toEqual([two.ino, 2, 0o640])
    expect(await fsp.readlink(path.join(part, "link"))).toBe("../a/one")
    // a single member: a file of its own, in a directory as mkdir makes one
    const single = path.join(await tempDir(), "single")
    await restoreSnapshot(store, snapshot, single, { subPath: "b/c/three" })
    expect(await fsp.readFile(path.join(single, "three"), "utf8")).toBe("shared\n")
    expect((await fsp.stat(single)).mode & 0o777).toBe(0o755)
    await store.close()
  })
})
