// The scan's lstat (engine/lstat.ts): the binding's numbers, when used, are
// exactly fs.lstatSync's, failures included; a binding that is absent, gives
// other numbers or throws is not used.
import fs, { promises as fsp } from "node:fs"
import { describe, expect, it } from "vitest"
import { lstatEntry, makeLstatEntry, type LstatHost } from "../../engine/lstat.js"
import { tempDir } from "../helpers.js"

const real: LstatHost = { fs, process }
const withoutBinding: LstatHost = { fs, process: { execArgv: [], env: {} } }

/** What an lstat gave: its stat, or its error's code. */
function outcome(lstat: (full: string) => unknown, full: string): unknown {
  try {
    return { st: lstat(full) }
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code }
  }
}

describe("lstatEntry", () => {
  it("gives what fs.lstatSync gives, for every kind of entry and failure", async () => {
    const dir = await tempDir()
    await fsp.writeFile(`${dir}/file`, "content")
    await fsp.chmod(`${dir}/file`, 0o640)
    await fsp.utimes(`${dir}/file`, new Date("1969-07-20T20:17:40.123Z"), new Date("1969-07-20T20:17:40.123Z")) // before 1970: negative seconds
    await fsp.link(`${dir}/file`, `${dir}/hardlink`)
    await fsp.symlink("file", `${dir}/link`)
    await fsp.symlink("nowhere", `${dir}/dangling`)
    await fsp.mkdir(`${dir}/sub`)
    const paths = [dir, `${dir}/file`, `${dir}/hardlink`, `${dir}/link`, `${dir}/dangling`, `${dir}/sub`, `${dir}/missing`, `${dir}/file/below`, `${dir}/${"n".repeat(300)}`, `/${"d/".repeat(2100)}x`]
    const bare = makeLstatEntry(real)
    const api = makeLstatEntry(withoutBinding)
    expect(api.bare).toBe(false)
    // node 20 has the binding (the project's node); where it is missing or refused, both are the API
    expect(bare.bare).toBe(typeof (process as { binding?: unknown }).binding === "function")
    const outcomes = paths.map((p) => outcome(api, p))
    expect(outcomes.map((o) => Object.keys(o as object)[0])).toEqual(["st", "st", "st", "st", "st", "st", "st", "code", "code", "code"])
    expect((outcomes[6] as { st: unknown }).st).toBeUndefined()
    expect(outcomes.slice(7).map((o) => (o as { code: string }).code)).toEqual(["ENOTDIR", "ENAMETOOLONG", "ENAMETOOLONG"])
    expect(paths.map((p) => outcome(bare, p))).toEqual(outcomes)
    expect(paths.map((p) => outcome(lstatEntry, p))).toEqual(outcomes)
    // the fields themselves, against node's BigIntStats
    const st = fs.lstatSync(`${dir}/file`, { bigint: true })
    expect(bare(`${dir}/file`)).toEqual({ mode: Number(st.mode), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, dev: st.dev, nlink: 2, uid: Number(st.uid), gid: Number(st.gid), size: 7 })
    expect(st.mtimeNs).toBe(-14182939877000000n)
  })

  it("is not used when the binding gives other numbers, throws, would warn, would skip the permission model's checks, or is called otherwise by node", () => {
    const shifted = new BigInt64Array(36).fill(7n)
    const wrong: LstatHost = { fs, process: { execArgv: [], env: {}, binding: () => ({ lstat: () => shifted }) } }
    expect(makeLstatEntry(wrong).bare).toBe(false)
    const throwing: LstatHost = { fs, process: { execArgv: [], env: {}, binding: () => { throw new Error("no such module") } } }
    expect(makeLstatEntry(throwing).bare).toBe(false)
    const noLstat: LstatHost = { fs, process: { execArgv: [], env: {}, binding: () => ({}) } }
    expect(makeLstatEntry(noLstat).bare).toBe(false)
    let asked = false
    const binding = (name: string) => {
      asked = true
      return (process as unknown as { binding(n: string): unknown }).binding(name)
    }
    expect(makeLstatEntry({ fs, process: { execArgv: ["--pending-deprecation"], env: {}, binding } }).bare).toBe(false)
    expect(makeLstatEntry({ fs, process: { execArgv: [], env: { NODE_OPTIONS: "--pending-deprecation" }, binding } }).bare).toBe(false)
    expect(asked).toBe(false)
    // node's permission model on (its checks are fs.lstatSync's), or an fs.lstatSync that does not call the binding as this module does
    expect(makeLstatEntry({ fs, process: { execArgv: [], env: {}, binding, permission: { has: () => true } } }).bare).toBe(false)
    const wrapped = { lstatSync: (p: string, o: { bigint: true; throwIfNoEntry: false }) => fs.lstatSync(p, o) }
    expect(makeLstatEntry({ fs: wrapped, process: { execArgv: [], env: {}, binding } }).bare).toBe(false)
    expect(asked).toBe(false)
    // and the same binding, asked plainly, is used
    expect(makeLstatEntry({ fs, process: { execArgv: [], env: {}, binding } }).bare).toBe(true)
    expect(asked).toBe(true)
  })
})
