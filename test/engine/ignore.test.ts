import { describe, it, expect } from "vitest"
import { compileIgnore, parseIgnoreFile } from "../../engine/ignore.js"

interface Case {
  readonly rule: string
  readonly patterns: readonly string[]
  readonly path: string
  readonly dir: boolean
  readonly ignored: boolean
}

const c = (rule: string, patterns: readonly string[], path: string, dir: boolean, ignored: boolean): Case => ({
  rule,
  patterns,
  path,
  dir,
  ignored,
})

const F = false // a file
const D = true // a directory

const cases: readonly Case[] = [
  // a name without a slash matches at any depth
  c("float", ["foo"], "foo", F, true),
  c("float", ["foo"], "a/b/foo", F, true),
  c("float", ["foo"], "a/b/foo", D, true),
  c("float", ["foo"], "foobar", F, false),
  c("float", ["foo"], "a/xfoo", F, false),
  c("no rules", [], "anything", F, false),
  c("root", ["*"], "", D, false),

  // node_modules/
  c("node_modules/", ["node_modules/"], "node_modules", D, true),
  c("node_modules/", ["node_modules/"], "pkg/node_modules", D, true),
  c("node_modules/", ["node_modules/"], "node_modules/x/index.js", F, true),
  c("node_modules/", ["node_modules/"], "node_modules", F, false),
  c("node_modules/", ["node_modules/"], "node_modules_old", D, false),

  // *.log with !keep.log: last match wins
  c("*.log !keep.log", ["*.log", "!keep.log"], "a.log", F, true),
  c("*.log !keep.log", ["*.log", "!keep.log"], "logs/deep/b.log", F, true),
  c("*.log !keep.log", ["*.log", "!keep.log"], "keep.log", F, false),
  c("*.log !keep.log", ["*.log", "!keep.log"], "logs/keep.log", F, false),
  c("*.log !keep.log", ["*.log", "!keep.log"], "a.logx", F, false),
  c("order matters", ["!keep.log", "*.log"], "keep.log", F, true),
  c("negation alone", ["!foo"], "foo", F, false),

  // /build anchored vs nested build
  c("/build", ["/build"], "build", D, true),
  c("/build", ["/build"], "build/out.js", F, true),
  c("/build", ["/build"], "src/build", D, false),
  c("/build", ["/build"], "src/build/out.js", F, false),
  c("build", ["build"], "src/build/out.js", F, true),
  c("/build/ dir only", ["/build/"], "build", F, false),
  c("/build/ dir only", ["/build/"], "build", D, true),

  // a slash in the middle anchors too
  c("middle slash", ["doc/frotz"], "doc/frotz", F, true),
  c("middle slash", ["doc/frotz"], "a/doc/frotz", F, false),
  c("middle slash", ["doc/*.txt"], "doc/a.txt", F, true),
  c("middle slash", ["doc/*.txt"], "doc/sub/a.txt", F, false),

  // a/**/b: zero or more directories
  c("a/**/b", ["a/**/b"], "a/b", F, true),
  c("a/**/b", ["a/**/b"], "a/x/b", F, true),
  c("a/**/b", ["a/**/b"], "a/x/y/z/b", F, true),
  c("a/**/b", ["a/**/b"], "a/xb", F, false),
  c("a/**/b", ["a/**/b"], "c/a/b", F, false),

  // **/foo: anywhere
  c("**/foo", ["**/foo"], "foo", F, true),
  c("**/foo", ["**/foo"], "x/y/foo", D, true),
  c("**/foo", ["**/foo"], "x/foobar", F, false),
  c("**/foo/bar", ["**/foo/bar"], "x/foo/bar", F, true),
  c("**/foo/bar", ["**/foo/bar"], "foo/bar", F, true),
  c("**/foo/bar", ["**/foo/bar"], "foo/x/bar", F, false),

  // foo/**: everything inside, not foo itself
  c("foo/**", ["foo/**"], "foo/a", F, true),
  c("foo/**", ["foo/**"], "foo/a/b/c", F, true),
  c("foo/**", ["foo/**"], "foo", D, false),
  c("foo/**", ["foo/**"], "x/foo/a", F, false),
  c("foo/** !foo/keep", ["foo/**", "!foo/keep"], "foo/keep", F, false),
  c("** alone", ["**"], "any/deep/path", F, true),
  c("** not a whole segment", ["a**b"], "axyb", F, true),
  c("** not a whole segment", ["a**b"], "ax/yb", F, false),
  c("***/ acts as **/", ["***/foo"], "x/y/foo", F, true),

  // dir-only patterns vs files
  c("dir only", ["tmp/"], "tmp", D, true),
  c("dir only", ["tmp/"], "tmp", F, false),
  c("dir only", ["tmp/"], "a/tmp", F, false),
  c("dir only", ["tmp/"], "a/tmp/file", F, true),
  c("dir only, anchored", ["a/tmp/"], "a/tmp", D, true),
  c("dir only, anchored", ["a/tmp/"], "b/a/tmp", D, false),
  c("dir-only negation", ["*", "!*/"], "src", D, false),
  c("dir-only negation", ["*", "!*/"], "src/main.ts", F, true),

  // * and ? never cross "/"
  c("*", ["*.ts"], "a/b.ts", F, true),
  c("*", ["src/*"], "src/a/b.ts", F, true), // via its ancestor src/a
  c("*", ["src/*.ts"], "src/a/b.ts", F, false),
  c("?", ["a?c"], "abc", F, true),
  c("?", ["a?c"], "ac", F, false),
  c("?", ["a?c"], "abbc", F, false),
  c("?", ["a/?/c"], "a/x/c", F, true),
  c("?", ["x?y"], "x/y", F, false),
  c("? is one code point", ["?.txt"], "😀.txt", F, true),
  c("regex metachars are literal", ["a.b+(c)"], "a.b+(c)", F, true),
  c("regex metachars are literal", ["a.b"], "axb", F, false),
  c("newline in a name", ["*.tmp"], "a\nb.tmp", F, true),
  c("case-sensitive", ["*.LOG"], "a.log", F, false),

  // character classes
  c("[a-z]", ["file[0-9].txt"], "file7.txt", F, true),
  c("[a-z]", ["file[0-9].txt"], "filex.txt", F, false),
  c("[abc]", ["[abc].md"], "b.md", F, true),
  c("[abc]", ["[abc].md"], "d.md", F, false),
  c("[!a-z]", ["[!a-z]*"], "Readme", F, true),
  c("[!a-z]", ["[!a-z]*"], "readme", F, false),
  c("[^a-z]", ["[^a-z]*"], "Readme", F, true),
  c("[!...] never matches /", ["a[!x]b"], "a/b", F, false),
  c("[...] never matches /", ["a[/]b"], "a/b", F, false),
  c("] first is literal", ["[]]x"], "]x", F, true),
  c("- last is literal", ["[a-]x"], "-x", F, true),
  c("escaped ] in class", ["[\\]a]x"], "]x", F, true),
  c("[[:digit:]]", ["v[[:digit:]]"], "v3", F, true),
  c("[[:digit:]]", ["v[[:digit:]]"], "vx", F, false),
  c("[[:upper:][:digit:]]", ["[[:upper:][:digit:]]x"], "Qx", F, true),

  // escapes, comments, blank lines, trailing spaces
  c("# comment", ["#foo"], "#foo", F, false),
  c("\\# escape", ["\\#foo"], "#foo", F, true),
  c("\\! escape", ["\\!important"], "!important", F, true),
  c("\\! escape", ["\\!important"], "important", F, false),
  c("\\* escape", ["\\*"], "*", F, true),
  c("\\* escape", ["\\*"], "x", F, false),
  c("blank lines", ["", "   "], "x", F, false),
  c("trailing spaces trimmed", ["foo   "], "foo", F, true),
  c("trailing spaces trimmed", ["foo   "], "foo ", F, false),
  c("escaped trailing space kept", ["foo\\ "], "foo ", F, true),
  c("escaped trailing space kept", ["foo\\ "], "foo", F, false),
  c("escaped space then trimmed", ["foo\\   "], "foo ", F, true),
  c("leading spaces kept", [" foo"], " foo", F, true),
  c("leading spaces kept", [" foo"], "foo", F, false),

  // ancestors: once a directory is excluded, nothing below it comes back
  c("ancestor", ["build/", "!build/keep.txt"], "build/keep.txt", F, true),
  c("ancestor", ["build", "!*.txt"], "build/a/b.txt", F, true),
  c("ancestor", ["/a/b"], "a/b/c/d", F, true),
  c("ancestor", ["/a/b"], "a/bc/d", F, false),
  c("ancestor re-included first", ["/*", "!/foo"], "foo/bar", F, false),
  c("ancestor re-included first", ["/*", "!/foo"], "baz/bar", F, true),
  c("ancestor re-included first", ["/*", "!/foo"], "foo", D, false),
  c("ancestor re-included first", ["/*", "!/foo", "/foo/*", "!/foo/bar"], "foo/bar/x", F, false),
  c("ancestor re-included first", ["/*", "!/foo", "/foo/*", "!/foo/bar"], "foo/baz", F, true),
]

describe("compileIgnore", () => {
  it.each(cases)("$rule: $patterns, $path (dir=$dir) -> $ignored", ({ patterns, path, dir, ignored }) => {
    expect(compileIgnore([...patterns]).ignores(path, dir)).toBe(ignored)
  })

  it.each([
    ["[abc", /unterminated character class/],
    ["foo[", /unterminated character class/],
    ["[]", /unterminated character class/],
    ["[!]", /unterminated character class/],
    ["[a\\", /unterminated character class/],
    ["[z-a]", /reversed/],
    ["foo\\", /unescaped '\\'/],
    ["[[:nope:]]", /unknown character class/],
    ["!", /matches nothing/],
    ["/", /matches nothing/],
  ])("rejects %j", (pattern, reason) => {
    const compile = (): unknown => compileIgnore(["ok", pattern])
    expect(compile).toThrow(Error)
    expect(compile).toThrow(reason)
    expect(compile).toThrow(JSON.stringify(pattern))
  })

  it("rejects paths that are not relative and /-separated", () => {
    const rules = compileIgnore(["x"])
    expect(() => rules.ignores("/abs", false)).toThrow(Error)
    expect(() => rules.ignores("a//b", false)).toThrow(Error)
    expect(() => rules.ignores("a/", true)).toThrow(Error)
  })

  it("compiles once and answers repeatedly", () => {
    const rules = compileIgnore(["*.log"])
    expect([rules.ignores("a.log", false), rules.ignores("a.log", false), rules.ignores("b.txt", false)]).toEqual([
      true,
      true,
      false,
    ])
  })
})

describe("parseIgnoreFile", () => {
  it("drops blank and comment lines, keeps escapes, handles CRLF and BOM", () => {
    const text = "\uFEFF# deps\r\nnode_modules/\r\n\r\n   \n*.log\n!keep.log\n\\#literal\n  # not a comment\nfoo\\ \n"
    expect(parseIgnoreFile(text)).toEqual(["node_modules/", "*.log", "!keep.log", "\\#literal", "  # not a comment", "foo\\ "])
  })

  it("feeds compileIgnore", () => {
    const rules = compileIgnore(parseIgnoreFile("# build output\n/dist/\n*.log\n!keep.log\n"))
    expect(rules.ignores("dist", true)).toBe(true)
    expect(rules.ignores("dist/index.js", false)).toBe(true)
    expect(rules.ignores("src/dist", true)).toBe(false)
    expect(rules.ignores("x/y.log", false)).toBe(true)
    expect(rules.ignores("x/keep.log", false)).toBe(false)
  })

  it("returns nothing for an empty file", () => {
    expect(parseIgnoreFile("")).toEqual([])
  })
})
