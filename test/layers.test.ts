// Dependencies point one way: cli -> engine -> store. The store knows nothing
// of files and trees; nothing imports the CLI.
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"

const ROOT = path.resolve(import.meta.dirname, "..")

async function sources(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await fsp.readdir(path.join(ROOT, dir), { withFileTypes: true }).catch(() => [])) {
    const rel = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...(await sources(rel)))
    else if (e.name.endsWith(".ts")) out.push(rel)
  }
  return out
}

async function importsOf(file: string): Promise<string[]> {
  const text = await fsp.readFile(path.join(ROOT, file), "utf8")
  const specs = [...text.matchAll(/(?:import|export)[^"']*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g)]
  return specs
    .map((m) => m[1] ?? m[2]!)
    .filter((s) => s.startsWith("."))
    .map((s) => path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), s)))
}

const forbidden: Record<string, string[]> = {
  store: ["engine", "cli", "bench"],
  engine: ["cli", "bench"],
}

describe("layers", () => {
  for (const [layer, banned] of Object.entries(forbidden)) {
    it(`${layer}/ imports nothing from ${banned.join(", ")}`, async () => {
      const files = await sources(layer)
      expect(files.length).toBeGreaterThan(0)
      const bad: string[] = []
      for (const f of files) for (const target of await importsOf(f)) if (banned.some((b) => target.startsWith(`${b}/`))) bad.push(`${f} -> ${target}`)
      expect(bad).toEqual([])
    })
  }
})
