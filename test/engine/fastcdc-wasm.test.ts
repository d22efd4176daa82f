// The cut loop runs as WebAssembly (engine/fastcdc.wat) where the runtime has
// it, and as JavaScript where it does not (node --jitless). The golden and
// reference tests in fastcdc.test.ts run the WebAssembly one; these check
// that the compiled bytes come from the .wat, and that the JavaScript
// fallback, on the main thread and in the chunk readers, cuts the same.
import { execFileSync } from "node:child_process"
import { promises as fsp } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { chunkFile } from "../../engine/chunk-reader.js"
import { Chunker, chunkLengths, gearTable, resolve, wasmCutter } from "../../engine/fastcdc.js"
import { CUT_WASM_BASE64 } from "../../engine/fastcdc-wasm.js"
import { seededBytes, tempDir, textBytes } from "../helpers.js"

const ROOT = path.resolve(import.meta.dirname, "../..")
const SEED = "wasm fallback seed"
const PARAMS = { minSize: 2048, avgSize: 8192, maxSize: 32768 }

describe("the WebAssembly cut loop", () => {
  it("is the compiled engine/fastcdc.wat (run node scripts/build-wasm.mjs after editing it)", async () => {
    const script = path.join(ROOT, "scripts", "build-wasm.mjs")
    const { compileWat, renderTs } = (await import(script)) as { compileWat(): Promise<Buffer>; renderTs(b: Buffer): string }
    const bytes = await compileWat()
    expect(bytes.toString("base64")).toBe(CUT_WASM_BASE64)
    expect(await fsp.readFile(path.join(ROOT, "engine", "fastcdc-wasm.ts"), "utf8")).toBe(renderTs(bytes))
  })

  it("is available here, so that the other chunker tests exercise it", () => {
    expect(wasmCutter(CUT_WASM_BASE64)).toBeDefined()
  })

  it("grows its memory for a view larger than it holds and keeps cutting right", () => {
    const cutter = wasmCutter(CUT_WASM_BASE64)!
    const gear = gearTable(new TextEncoder().encode(SEED))
    const data = seededBytes("grow", 3 << 20)
    const expected = chunkLengths(data, PARAMS, gear)
    const r = resolve(PARAMS, gear)
    cutter.view(10).set(data.subarray(0, 10)) // the gear table goes in before the memory grows
    expect(cutter.cut(0, 10, r)).toBe(10)
    cutter.view(data.length).set(data)
    const lengths: number[] = []
    for (let pos = 0; pos < data.length; pos += lengths[lengths.length - 1]!) lengths.push(cutter.cut(pos, data.length, r))
    expect(lengths).toEqual(expected)
  })
})

describe("without WebAssembly (node --jitless)", () => {
  it("chunkLengths, Chunker and the chunk readers give the boundaries and ids the WebAssembly loop gives", async () => {
    const dir = await tempDir()
    const file = path.join(dir, "mixed.bin")
    // text, random and a constant run (no content-defined cut points): every branch of the loop
    await fsp.writeFile(file, Buffer.concat([textBytes("t", 400_000), seededBytes("r", 300_000), Buffer.alloc(100_000, 7)]))
    const child = `
      import fs from "node:fs"
      import { chunkLengths, Chunker, gearTable, wasmCutter } from ${JSON.stringify(path.join(ROOT, "dist/engine/fastcdc.js"))}
      import { chunkFile } from ${JSON.stringify(path.join(ROOT, "dist/engine/chunk-reader.js"))}
      const [file, seed, params] = process.argv.slice(1)
      const p = JSON.parse(params)
      const gear = gearTable(new TextEncoder().encode(seed))
      const data = fs.readFileSync(file)
      const streamed = new Chunker(p, gear)
      const parts = [...streamed.push(data.subarray(0, 123_457)), ...streamed.push(data.subarray(123_457)), ...streamed.finish()]
      const read = []
      // each batch's buffer given back: the JavaScript reader reads into it
      const counts = { requests: 0, windows: 0, cut: 0, reused: 0, made: 0 }
      for await (const batch of chunkFile(file, p, gear, { span: 100_000, counts })) {
        read.push(...batch.ids)
        batch.release()
      }
      console.log(JSON.stringify({ reused: counts.reused, requests: counts.requests }))
      console.log(JSON.stringify({ wasm: typeof WebAssembly, cutter: wasmCutter("") === undefined, whole: chunkLengths(data, p, gear), streamed: parts.map((c) => c.length), read }))
    `
    const out = execFileSync(process.execPath, ["--jitless", "--no-warnings", "--input-type=module", "-e", child, file, SEED, JSON.stringify(PARAMS)], { encoding: "utf8" })
    const [reuse, result] = out.trim().split("\n")
    // the first requests go out before any batch is given back
    const { reused, requests } = JSON.parse(reuse!) as { reused: number; requests: number }
    expect(reused).toBeGreaterThanOrEqual(requests - 4)
    expect(reused).toBeGreaterThan(0)
    const js = JSON.parse(result!) as { wasm: string; cutter: boolean; whole: number[]; streamed: number[]; read: string[] }
    expect(js.wasm).toBe("undefined")
    expect(js.cutter).toBe(true)

    const gear = gearTable(new TextEncoder().encode(SEED))
    const data = await fsp.readFile(file)
    const whole = chunkLengths(data, PARAMS, gear)
    expect(whole.length).toBeGreaterThan(50)
    expect(js.whole).toEqual(whole)
    const chunker = new Chunker(PARAMS, gear)
    expect(js.streamed).toEqual([...chunker.push(data), ...chunker.finish()].map((c) => c.length))
    const read: string[] = []
    for await (const batch of chunkFile(file, PARAMS, gear, { span: 100_000 })) read.push(...batch.ids)
    expect(js.read).toEqual(read)
  }, 60_000)
})
