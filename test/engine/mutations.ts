// Random trees and random edits of live trees, shared by the property tests
// of diff and of incremental snapshots. An oracle listing reads a tree back
// from the filesystem.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"
import fc from "fast-check"
import type { DirSpec, Spec } from "../fixtures.js"
import { seededBytes } from "../helpers.js"

export interface Node {
  type: "file" | "dir" | "symlink"
  mode: number
  size: number
  hash?: string
  target?: string
}

/** path -> what a diff can see of it (the root itself left out). */
export async function listing(root: string): Promise<Map<string, Node>> {
  const out = new Map<string, Node>()
  const walk = async (dir: string, rel: string) => {
    for (const name of await fsp.readdir(dir)) {
      const abs = path.join(dir, name)
      const r = rel ? `${rel}/${name}` : name
      const st = await fsp.lstat(abs)
      const mode = st.mode & 0o7777
      if (st.isSymbolicLink()) out.set(r, { type: "symlink", mode, size: 0, target: await fsp.readlink(abs) })
      else if (st.isDirectory()) {
        out.set(r, { type: "dir", mode, size: 0 })
        await walk(abs, r)
      } else {
        const hash = createHash("sha256").update(await fsp.readFile(abs)).digest("hex")
        out.set(r, { type: "file", mode, size: st.size, hash })
      }
    }
  }
  await walk(root, "")
  return out
}

export const T0 = 1_700_000_000_000_000_000n
const names = fc.constantFrom("a", "b", "c.txt", "d.bin", "e e", "é", "x-1")
const content = fc.oneof(fc.string({ maxLength: 60 }), fc.integer({ min: 0, max: 200_000 }).map((n) => seededBytes(`f${n}`, n % 70_000)))
const fileSpec = fc.record({ file: content, mode: fc.constantFrom(0o644, 0o600, 0o755), mtimeNs: fc.constant(T0) }) as fc.Arbitrary<Spec>
export const { dir: dirSpec } = fc.letrec<{ dir: DirSpec; node: Spec }>((tie) => ({
  dir: fc.dictionary(names, tie("node"), { maxKeys: 5 }),
  node: fc.oneof(
    { depthSize: "small", maxDepth: 3 },
    fileSpec,
    fileSpec,
    fc.record({ symlink: fc.constantFrom("a", "../b", "/nowhere") }) as fc.Arbitrary<Spec>,
    fc.record({ dir: tie("dir") }) as fc.Arbitrary<Spec>,
  ),
}))

/**
 * One random edit of a live tree; `pick` chooses the path it applies to.
 * Ops 0-5 are what a diff can see (5 is a touch, which it must not report);
 * 6-8 (hardlink, an edit only the ctime reveals, rename) stress caches.
 */
export async function mutate(root: string, op: number, pick: number, step: number): Promise<void> {
  const all = [...(await listing(root)).entries()]
  const dirs = ["", ...all.filter(([, n]) => n.type === "dir").map(([p]) => p)]
  if (all.length === 0 || op === 3) {
    const dir = dirs[pick % dirs.length]!
    await fsp.writeFile(path.join(root, dir, `new-${step}`), seededBytes(`new${step}`, 100 + pick % 5000))
    return
  }
  const [rel, node] = all[pick % all.length]!
  const abs = path.join(root, rel)
  const t = Number((T0 + BigInt(step + 1) * 1_000_000_000n) / 1000n) / 1e6
  switch (op) {
    case 0: // edit, sometimes keeping the size; a new mtime so a live diff hashes it
      if (node.type !== "file") return
      await fsp.writeFile(abs, pick % 2 ? seededBytes(`edit${step}`, node.size) : `edited ${step} ${pick}`)
      await fsp.utimes(abs, t, t)
      return
    case 1: // chmod (symlinks have no mode of their own on Linux)
      if (node.type === "symlink") return
      await fsp.chmod(abs, node.mode === 0o600 ? 0o644 : 0o600)
      if (node.type === "dir") await fsp.chmod(abs, 0o750)
      return
    case 2:
      await fsp.rm(abs, { recursive: true })
      return
    case 4: // type change
      await fsp.rm(abs, { recursive: true })
      if (node.type === "symlink") await fsp.writeFile(abs, "was a symlink")
      else await fsp.symlink("elsewhere", abs)
      return
    case 5: // touch only: not a change
      if (node.type === "file") await fsp.utimes(abs, t, t)
      return
    case 6: // a hardlink to a file, elsewhere in the tree
      if (node.type !== "file") return
      await fsp.link(abs, path.join(root, dirs[pick % dirs.length]!, `link-${step}`))
      return
    case 7: // same size, same mtime, other bytes: only the ctime tells
      if (node.type !== "file" || node.size === 0) return
      {
        const st = await fsp.stat(abs)
        await fsp.writeFile(abs, seededBytes(`same${step}`, node.size))
        await fsp.utimes(abs, st.atime, st.mtime)
      }
      return
    case 8: // rename within the tree
      await fsp.rename(abs, path.join(root, dirs[pick % dirs.length]!, `moved-${step}`)).catch(() => {}) // into itself: skip
      return
  }
}

