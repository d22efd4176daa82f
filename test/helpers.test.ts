// The test helpers' own contract: temp directories do not outlive their test file.
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { removeTempDirs, tempDir } from "./helpers.js"

describe("tempDir", () => {
  it("makes fresh directories that removeTempDirs deletes, read-only ones too", async () => {
    const a = await tempDir()
    const b = await tempDir()
    expect(a).not.toBe(b)
    const locked = path.join(b, "locked", "inner")
    await fsp.mkdir(locked, { recursive: true })
    await fsp.writeFile(path.join(locked, "f"), "x")
    await fsp.chmod(locked, 0o500)
    await fsp.chmod(path.dirname(locked), 0o500)
    await removeTempDirs()
    await expect(fsp.stat(a)).rejects.toMatchObject({ code: "ENOENT" })
    await expect(fsp.stat(b)).rejects.toMatchObject({ code: "ENOENT" })
  })
})
