// Exclude rules with gitignore semantics (the lines of a .cairnignore file).
//
// Each pattern is compiled once into a Rule { regex, negated, dirOnly }. The
// regex is matched against the whole relative path ("/"-separated, no leading
// slash):
//   - a pattern with no "/" (ignoring a trailing one) floats: it matches the
//     last path component at any depth, compiled as ^(?:.*/)?BODY$;
//   - a pattern with a leading or middle "/" is anchored to the root: ^BODY$.
//
// Line syntax, in git's order: trailing spaces are trimmed unless escaped with
// "\"; blank lines and lines starting with "#" are skipped; a leading "!"
// negates; a trailing "/" restricts the rule to directories; a leading "/" is
// dropped (the pattern is anchored). "\x" is always the literal x, so "\#" and
// "\!" start a pattern with "#" or "!".
//
// Glob translation: "*" -> [^/]*, "?" -> [^/], "[a-z]" / "[!a-z]" / "[^a-z]"
// (and POSIX "[[:alpha:]]" names) -> a class that never matches "/".
// A run of two or more stars that fills a whole path segment is special:
// leading "**/" -> (?:.*/)?, "/**/" -> /(?:.*/)?, trailing "/**" -> /.*, and a
// pattern of just "**" matches everything. Any other run of stars is one "*".
//
// Invariants:
//   - the last matching rule wins; no matching rule means "not ignored";
//   - a dir-only rule matches only when isDir is true;
//   - a path below an ignored directory is ignored. The scanner checks parents
//     first and never descends into an ignored directory, so (as in git) a
//     negation cannot re-include a file below an excluded directory. `ignores`
//     checks every ancestor prefix itself, so it gives the same answer when
//     asked about a deep path directly.
//   - matching is case-sensitive and works on code points: "?" matches one
//     character such as an emoji, where git (which works on bytes) would need
//     "????". Names containing newlines are handled.

export interface IgnoreRules {
  /** returns true if the path (relative to the snapshot root, "/"-separated, no leading slash) is excluded */
  ignores(relPath: string, isDir: boolean): boolean
}

interface Rule {
  readonly regex: RegExp
  readonly negated: boolean
  readonly dirOnly: boolean
}

/**
 * Compiles the lines of a .cairnignore (gitignore syntax, see the module
 * header) into a matcher. Throws an Error naming the pattern if one is invalid
 * (unterminated "[", reversed range, trailing "\", unknown "[:class:]", or a
 * pattern that is empty once "!" and "/" are removed).
 */
export function compileIgnore(patterns: string[]): IgnoreRules {
  const rules: Rule[] = []
  for (const line of patterns) {
    const rule = compileRule(line)
    if (rule !== null) rules.push(rule)
  }
  return {
    ignores(relPath: string, isDir: boolean): boolean {
      return isIgnored(rules, relPath, isDir)
    },
  }
}

/** Parses the text of a .cairnignore file into patterns (blank and comment lines dropped; BOM and CRLF handled). */
export function parseIgnoreFile(text: string): string[] {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text
  return body.split(/\r?\n/).filter((line) => {
    const trimmed = trimTrailingSpaces(line)
    return trimmed !== "" && !trimmed.startsWith("#")
  })
}

function isIgnored(rules: readonly Rule[], relPath: string, isDir: boolean): boolean {
  if (relPath === "") return false // the snapshot root itself is never excluded
  const parts = relPath.split("/")
  if (parts.some((p) => p === "")) {
    throw new Error(`ignores: path ${JSON.stringify(relPath)} must be relative, "/"-separated, without empty segments`)
  }
  let prefix = ""
  for (let i = 0; i < parts.length - 1; i++) {
    prefix = i === 0 ? parts[0]! : `${prefix}/${parts[i]!}`
    if (decide(rules, prefix, true)) return true
  }
  return decide(rules, relPath, isDir)
}

/** The verdict of the last rule that matches the path itself; false if none does. */
function decide(rules: readonly Rule[], path: string, isDir: boolean): boolean {
  for (let i = rules.length - 1; i >= 0; i--) {
    const rule = rules[i]!
    if (rule.dirOnly && !isDir) continue
    if (rule.regex.test(path)) return !rule.negated
  }
  return false
}

function compileRule(line: string): Rule | null {
  let p = trimTrailingSpaces(line)
  if (p === "" || p.startsWith("#")) return null
  const negated = p.startsWith("!")
  if (negated) p = p.slice(1)
  const dirOnly = p.endsWith("/")
  if (dirOnly) p = p.slice(0, -1)
  const anchored = p.includes("/")
  if (p.startsWith("/")) p = p.slice(1)
  if (p === "") throw invalid(line, "it matches nothing once '!' and '/' are removed")
  const body = globToRegex(line, Array.from(p))
  const source = anchored ? `^${body}$` : `^(?:.*/)?${body}$`
  let regex: RegExp
  try {
    regex = new RegExp(source, "su")
  } catch (cause) {
    throw invalid(line, `it does not compile (${String(cause)})`, cause)
  }
  return { regex, negated, dirOnly }
}

/** git's trim_trailing_spaces: drop trailing spaces, but not one escaped by "\". */
function trimTrailingSpaces(line: string): string {
  let lastSpace = -1
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (c === " ") {
      if (lastSpace === -1) lastSpace = i
    } else {
      if (c === "\\") i++
      lastSpace = -1
    }
  }
  return lastSpace === -1 ? line : line.slice(0, lastSpace)
}

function globToRegex(line: string, cs: readonly string[]): string {
  let out = ""
  for (let i = 0; i < cs.length; i++) {
    const c = cs[i]!
    if (c === "\\") {
      i++
      if (i >= cs.length) throw invalid(line, "it ends with an unescaped '\\'")
      out += escapeLiteral(cs[i]!)
    } else if (c === "*") {
      const r = compileStars(cs, i)
      out += r.source
      i = r.end
    } else if (c === "?") {
      out += "[^/]"
    } else if (c === "[") {
      const r = compileClass(line, cs, i)
      out += r.source
      i = r.end
    } else {
      out += escapeLiteral(c)
    }
  }
  return out
}

interface Piece {
  readonly source: string
  /** index of the last pattern character consumed */
  readonly end: number
}

function compileStars(cs: readonly string[], start: number): Piece {
  let j = start
  while (cs[j] === "*") j++
  const wholeSegment = (start === 0 || cs[start - 1] === "/") && (j === cs.length || cs[j] === "/")
  if (j - start < 2 || !wholeSegment) return { source: "[^/]*", end: j - 1 }
  if (j === cs.length) return { source: ".*", end: j - 1 } // trailing "/**", or "**" alone
  return { source: "(?:.*/)?", end: j } // leading "**/" or middle "/**/": also eat the "/"
}

const POSIX_CLASSES: Readonly<Record<string, string>> = {
  alnum: "a-zA-Z0-9",
  alpha: "a-zA-Z",
  blank: " \\t",
  cntrl: "\\x00-\\x1f\\x7f",
  digit: "0-9",
  graph: "!-~",
  lower: "a-z",
  print: " -~",
  punct: "!-\\/:-@\\[-`{-~",
  space: " \\t\\n\\r\\f\\v",
  upper: "A-Z",
  xdigit: "0-9A-Fa-f",
}

/** Compiles the bracket expression opening at cs[start] === "[". */
function compileClass(line: string, cs: readonly string[], start: number): Piece {
  let i = start + 1
  const negated = cs[i] === "!" || cs[i] === "^"
  if (negated) i++
  let items = ""
  let first = true
  for (; i < cs.length; i++) {
    if (cs[i] === "]" && !first) {
      return { source: negated ? `[^/${items}]` : `(?!/)[${items}]`, end: i }
    }
    first = false
    if (cs[i] === "[" && cs[i + 1] === ":") {
      const close = cs.indexOf(":", i + 2)
      const name = close === -1 || cs[close + 1] !== "]" ? undefined : cs.slice(i + 2, close).join("")
      if (name !== undefined) {
        const cls = POSIX_CLASSES[name]
        if (cls === undefined) throw invalid(line, `unknown character class "[:${name}:]"`)
        items += cls
        i = close + 1
        continue
      }
    }
    const lo = classChar(line, cs, i)
    i = lo.end
    if (cs[i + 1] === "-" && i + 2 < cs.length && cs[i + 2] !== "]") {
      const hi = classChar(line, cs, i + 2)
      if (lo.char.codePointAt(0)! > hi.char.codePointAt(0)!) {
        throw invalid(line, `range "${lo.char}-${hi.char}" is reversed`)
      }
      items += `${escapeClassChar(lo.char)}-${escapeClassChar(hi.char)}`
      i = hi.end
    } else {
      items += escapeClassChar(lo.char)
    }
  }
  throw invalid(line, "unterminated character class '['")
}

/** One (possibly "\"-escaped) character inside a bracket expression. */
function classChar(line: string, cs: readonly string[], i: number): { char: string; end: number } {
  if (cs[i] !== "\\") return { char: cs[i]!, end: i }
  if (i + 1 >= cs.length) throw invalid(line, "unterminated character class '['")
  return { char: cs[i + 1]!, end: i + 1 }
}

function escapeLiteral(c: string): string {
  return c.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&")
}

function escapeClassChar(c: string): string {
  return /[\\\]\[^-]/.test(c) ? `\\${c}` : c
}

function invalid(line: string, reason: string, cause?: unknown): Error {
  const message = `invalid ignore pattern ${JSON.stringify(line)}: ${reason}`
  return cause === undefined ? new Error(message) : new Error(message, { cause })
}
