// Declarative test trees (after restic's TestDir): build one on disk, read one back.
import { createHash } from "node:crypto"
import { promises as fsp } from "node:fs"
import path from "node:path"

export type Spec =
  | { file: string | Uint8Array; mode?: number; mtimeNs?: bigint }
  | { dir: Record<string, Spec>; mode?: number }
  | { symlink: string }
  | { hardlink: string } // path from the tree root of an earlier file

export type DirSpec = Record<string, Spec>

export async function buildTree(root: string, spec: DirSpec): Promise<void> {
  await fsp.mkdir(root, { recursive: true })
  const links: Array<[string, string]> = []
  const dirModes: Array<[string, number]> = []
  const build = async (dir: string, s: DirSpec) => {
    for (const [name, node] of Object.entries(s)) {
      const p = path.join(dir, name)
      if ("file" in node) {
        await fsp.writeFile(p, node.file)
        if (node.mode !== undefined) await fsp.chmod(p, node.mode)
        if (node.mtimeNs !== undefined) {
          const t = Number(node.mtimeNs / 1000n) / 1e6
          await fsp.utimes(p, t, t)
        }
      } else if ("dir" in node) {
        await fsp.mkdir(p)
        await build(p, node.dir)
        if (node.mode !== undefined) dirModes.push([p, node.mode])
      } else if ("symlink" in node) {
        await fsp.symlink(node.symlink, p)
      } else {
        links.push([path.join(root, node.hardlink), p])
      }
    }
  }
  await build(root, spec)
  for (const [target, p] of links) await fsp.link(target, p)
  for (const [p, mode] of dirModes.reverse()) await fsp.chmod(p, mode)
}

export interface Listing {
  [rel: string]: string
}

/**
 * A comparable description of a tree: type, mode, mtime (microseconds),
 * content hash or link target, and hardlink groups; the root's own metadata
 * is left out.
 */
export async function describeTree(root: string, opts: { mtimes?: boolean } = {}): Promise<Listing> {
  const out: Listing = {}
  const inodes = new Map<bigint, string>()
  const walk = async (dir: string, rel: string) => {
    const names = (await fsp.readdir(dir)).sort()
    for (const name of names) {
      const p = path.join(dir, name)
      const r = rel ? `${rel}/${name}` : name
      const st = await fsp.lstat(p, { bigint: true })
      const mtime = opts.mtimes === false ? "" : ` mtime=${st.mtimeNs / 1000n}`
      const mode = (st.mode & 0o7777n).toString(8)
      if (st.isSymbolicLink()) out[r] = `symlink -> ${await fsp.readlink(p)}${mtime}`
      else if (st.isDirectory()) {
        out[r] = `dir ${mode}${mtime}`
        await walk(p, r)
      } else {
        const first = st.nlink > 1n ? inodes.get(st.ino) : undefined
        if (st.nlink > 1n && !first) inodes.set(st.ino, r)
        const hash = createHash("sha256").update(await fsp.readFile(p)).digest("hex").slice(0, 16)
        out[r] = `file ${mode} ${st.size} ${hash}${mtime}${first ? ` link=${first}` : ""}`
      }
    }
  }
  await walk(root, "")
  return out
}
