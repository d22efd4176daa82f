// Tree objects are the repository's format: their bytes decide every tree id,
// so the encoding is pinned here, and decoding must give back exactly what
// was encoded.
import { createHash } from "node:crypto"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeTree, encodeTree, type TreeEntry } from "../../engine/tree.js"
import type { BlobId } from "../../store/ids.js"

const C = "ab".repeat(32) as BlobId
const T = "cd".repeat(32) as BlobId

describe("tree objects", () => {
  it("encode to fixed bytes: sorted names, keys in canonical order, hardlinks without chunks", () => {
    const entries: TreeEntry[] = [
      { name: "z-dir", type: "dir", mode: 0o755, mtime: "1700000000000000001", uid: 1000, gid: 1000, size: 12, tree: T },
      { name: "a.txt", type: "file", mode: 0o644, mtime: "1700000000123456789", uid: 0, gid: 0, size: 5, chunks: [C] },
      { name: "empty", type: "file", mode: 0o600, mtime: "0", uid: 1, gid: 2, size: 0 },
      { name: "hard", type: "file", mode: 0o644, mtime: "1700000000123456789", uid: 0, gid: 0, size: 5, link: "a.txt", chunks: [C] },
      { name: "ln", type: "symlink", mode: 0o777, mtime: "-5", uid: 0, gid: 0, target: "../x y/ü" },
    ]
    const bytes = encodeTree(entries)
    expect(bytes.toString("utf8")).toBe(
      `{"v":1,"entries":[` +
        `{"name":"a.txt","type":"file","mode":420,"mtime":"1700000000123456789","uid":0,"gid":0,"size":5,"chunks":["${C}"]},` +
        `{"name":"empty","type":"file","mode":384,"mtime":"0","uid":1,"gid":2,"size":0,"chunks":[]},` +
        `{"name":"hard","type":"file","mode":420,"mtime":"1700000000123456789","uid":0,"gid":0,"size":5,"link":"a.txt"},` +
        `{"name":"ln","type":"symlink","mode":511,"mtime":"-5","uid":0,"gid":0,"target":"../x y/ü"},` +
        `{"name":"z-dir","type":"dir","mode":493,"mtime":"1700000000000000001","uid":1000,"gid":1000,"size":12,"tree":"${T}"}]}`,
    )
    expect(createHash("sha256").update(bytes).digest("hex")).toBe("0463d5790ae16bbb9f81511f9be8169819dd3c0a8c5b12a23f4ecc9da9713c72")
  })

  it("decode to exactly the entries encoded, whatever their order and kinds", () => {
    const id = fc.stringMatching(/^[0-9a-f]{64}$/) as fc.Arbitrary<BlobId>
    const base = {
      mode: fc.integer({ min: 0, max: 0o7777 }),
      mtime: fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }).map(String),
      uid: fc.nat(),
      gid: fc.nat(),
    }
    const entry = fc.oneof(
      fc.record({ ...base, type: fc.constant("file" as const), size: fc.nat(), chunks: fc.array(id, { maxLength: 3 }) }),
      fc.record({ ...base, type: fc.constant("file" as const), size: fc.nat(), link: fc.constant("some/first") }),
      fc.record({ ...base, type: fc.constant("symlink" as const), target: fc.string({ minLength: 1 }).filter((t) => !t.includes("\0")) }),
      fc.record({ ...base, type: fc.constant("dir" as const), size: fc.nat(), tree: id }),
    )
    const name = fc.string({ minLength: 1, maxLength: 12 }).filter((n) => n !== "." && n !== ".." && !n.includes("/") && !n.includes("\0"))
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, entry), { selector: ([n]) => n, maxLength: 12 }), (pairs) => {
        const entries = pairs.map(([n, e]) => ({ name: n, ...e }) as TreeEntry)
        const decoded = decodeTree(encodeTree(entries), "t").entries
        const want = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        expect(decoded).toStrictEqual(want)
      }),
      { numRuns: 300 },
    )
  })
})
