import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { makeDirs } from "../../store/dirs.js"
import { MemoryObjectStore } from "../../store/backends/memory.js"
import { CairnError } from "../../store/errors.js"
import { Store } from "../../store/store.js"
import { tempDir } from "../helpers.js"

const opts = { what: "cache directory", fix: "set CAIRN_CACHE_DIR to a writable directory" }

async function failure(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(CairnError)
  return err as CairnError
}

describe("makeDirs", () => {
  it("creates every missing level, owner-only, and accepts what exists (also when made at once)", async () => {
    const base = await tempDir()
    const deep = path.join(base, "a", "b", "c")
    await Promise.all([makeDirs(deep, opts), makeDirs(deep, opts), makeDirs(path.join(base, "a", "b"), opts)])
    for (const d of ["a", "a/b", "a/b/c"]) expect((await fsp.stat(path.join(base, d))).mode & 0o777).toBe(0o700)
    await makeDirs(deep, opts)
  })

  it("names the file in the way and says what to do", async () => {
    const base = await tempDir()
    await fsp.writeFile(path.join(base, "file"), "x")
    const err = await failure(makeDirs(path.join(base, "file", "c", "d"), opts))
    expect(err.code).toBe("IO")
    expect(err.message).toBe(`cannot create the cache directory ${path.join(base, "file", "c", "d")}: ${path.join(base, "file")} is not a directory; set CAIRN_CACHE_DIR to a writable directory`)
  })

  it.runIf(process.platform === "linux")("fails instead of retrying forever where the parent refuses new names (procfs)", async () => {
    const err = await failure(makeDirs("/proc/cairn-test/x", opts))
    expect(err.message).toMatch(/^cannot create the cache directory \/proc\/cairn-test\/x: \/proc\/cairn-test cannot be created \(ENOENT\); set CAIRN_CACHE_DIR/)
  }, 10_000)

  it("a store whose cache directory cannot be made fails to open with that message", async () => {
    const base = await tempDir()
    await fsp.writeFile(path.join(base, "file"), "x")
    const backend = new MemoryObjectStore()
    await (await Store.init({ backend, cacheDir: path.join(base, "ok") })).close()
    const err = await failure(Store.open({ backend, cacheDir: path.join(base, "file", "cache") }))
    expect(err.message).toMatch(/^cannot create the cache directory .*: .*file is not a directory; set CAIRN_CACHE_DIR \(or the cacheDir option\) to a writable directory$/)
  })
})
