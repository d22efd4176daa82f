// A small, table-driven argument parser: each command declares its flags
// (boolean, string, repeatable string) and its positional arguments, and
// anything else is a usage error that names the culprit.

export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message)
    this.name = "UsageError"
  }
}

/** An operation the CLI cannot carry out (exit 1), raised by the CLI itself rather than the library. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = "FAILED",
  ) {
    super(message)
    this.name = "CliError"
  }
}

export interface FlagSpec {
  /** "bool": --x; "string": --x V or --x=V; "list": repeatable string */
  kind: "bool" | "string" | "list"
  alias?: string
  /** the only values a string flag accepts */
  choices?: string[]
  help: string
}

export interface CommandSpec {
  name: string
  summary: string
  /** e.g. ["SNAP", "DEST"]; a trailing "..." marks a variadic last argument; "[X]" is optional */
  args: string[]
  flags: Record<string, FlagSpec>
  /** extra lines for `cairn help CMD` */
  details?: string
}

export interface Parsed {
  positional: string[]
  flags: Record<string, string | boolean | string[] | undefined>
  /** everything after a bare "--" */
  rest: string[]
}

export const GLOBAL_FLAGS: Record<string, FlagSpec> = {
  repo: { kind: "string", help: "repository path or s3://bucket/prefix (default $CAIRN_REPO, else ~/.cairn)" },
  json: { kind: "bool", help: "machine-readable output" },
  quiet: { kind: "bool", alias: "q", help: "no progress, less output" },
  debug: { kind: "bool", help: "print stack traces on errors" },
  help: { kind: "bool", alias: "h", help: "show help" },
}

export function parseArgs(argv: string[], spec: CommandSpec): Parsed {
  const flags: Parsed["flags"] = {}
  const positional: string[] = []
  let rest: string[] = []
  const all = { ...GLOBAL_FLAGS, ...spec.flags }
  const byAlias = new Map(Object.entries(all).flatMap(([name, f]) => (f.alias ? [[f.alias, name] as const] : [])))
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--") {
      rest = argv.slice(i + 1)
      break
    }
    if (arg.startsWith("-") && arg !== "-") {
      const long = arg.startsWith("--")
      let name = long ? arg.slice(2) : arg.slice(1)
      let value: string | undefined
      const eq = name.indexOf("=")
      if (long && eq >= 0) {
        value = name.slice(eq + 1)
        name = name.slice(0, eq)
      }
      if (!long) name = byAlias.get(name) ?? `-${name}`
      const f = all[name]
      if (!f) throw new UsageError(`unknown option ${arg} for "${spec.name}"`, spec.name)
      if (f.kind === "bool") {
        if (value !== undefined) throw new UsageError(`option --${name} takes no value`, spec.name)
        flags[name] = true
        continue
      }
      if (value === undefined) {
        value = argv[++i]
        if (value === undefined) throw new UsageError(`option --${name} needs a value`, spec.name)
      }
      // no option means anything by an empty value: it is a variable that was not set (--repo "$REPO")
      if (value === "") throw new UsageError(`option --${name} needs a value, not an empty string`, spec.name)
      if (f.choices && !f.choices.includes(value)) {
        throw new UsageError(`--${name} takes one of ${f.choices.join(", ")}, not ${JSON.stringify(value)}`, spec.name)
      }
      if (f.kind === "list") flags[name] = [...((flags[name] as string[] | undefined) ?? []), value]
      else flags[name] = value
      continue
    }
    positional.push(arg)
  }
  if (flags.help) return { positional, flags, rest }
  const required = spec.args.filter((a) => !a.startsWith("["))
  const variadic = spec.args.some((a) => a.endsWith("..."))
  if (positional.length < required.length) {
    throw new UsageError(`"${spec.name}" needs ${required.slice(positional.length).join(" ")}`, spec.name)
  }
  if (!variadic && positional.length > spec.args.length) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positional[spec.args.length])} for "${spec.name}"`, spec.name)
  }
  return { positional, flags, rest }
}

export function int(value: unknown, flag: string, command: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${flag} takes a whole number, not ${JSON.stringify(value)}`, command)
  return n
}

export function fraction(value: unknown, flag: string, command: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (value === "" || !Number.isFinite(n) || n < 0 || n > 1) throw new UsageError(`--${flag} takes a number from 0 to 1, not ${JSON.stringify(value)}`, command)
  return n
}

export function labels(values: unknown, command: string): Record<string, string> | undefined {
  if (values === undefined) return undefined
  const out: Record<string, string> = {}
  for (const v of values as string[]) {
    const eq = v.indexOf("=")
    if (eq <= 0) throw new UsageError(`--label takes key=value, not ${JSON.stringify(v)}`, command)
    out[v.slice(0, eq)] = v.slice(eq + 1)
  }
  return out
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [`usage: cairn ${spec.name}${spec.args.length ? " " + spec.args.join(" ") : ""} [options]`, "", spec.summary]
  if (spec.details) lines.push("", spec.details)
  const flags = Object.entries(spec.flags)
  if (flags.length) {
    lines.push("", "options:")
    for (const [name, f] of flags) {
      const value = f.choices ? ` ${f.choices.join("|")}` : f.kind === "bool" ? "" : " V"
      const left = `  --${name}${value}${f.kind === "list" ? " (repeatable)" : ""}${f.alias ? `, -${f.alias}` : ""}`
      lines.push(`${left.padEnd(34)} ${f.help}`)
    }
  }
  lines.push("", "global options:")
  for (const [name, f] of Object.entries(GLOBAL_FLAGS)) lines.push(`${`  --${name}${f.kind === "bool" ? "" : " V"}`.padEnd(34)} ${f.help}`)
  return lines.join("\n")
}
