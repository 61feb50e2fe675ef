// What a CLI command is, and the option parsing all commands share (node:util parseArgs), so every
// command has --help and reports bad usage the same way.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EXIT, UserError } from '../daemon/errors.js'
import { SETTINGS } from '../daemon/config.js'

export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  multiple?: boolean
  help: string
  /** Shown as --name VALUE. */
  value?: string
}

export interface Command {
  name: string
  summary: string
  usage: string
  /** Extra paragraphs after the options. */
  details?: string
  options: Record<string, OptionSpec>
  run(args: { flags: Record<string, string | boolean | string[] | undefined>; positionals: string[] }): Promise<number>
}

/** Options that set daemon settings, generated from the settings table so they never drift. */
export function settingOptions(keys: string[]): Record<string, OptionSpec> {
  const out: Record<string, OptionSpec> = {}
  for (const s of SETTINGS) {
    if (!s.flag || !keys.includes(s.key)) continue
    const isBool = s.key === 'allow_other'
    const env = s.env?.length ? ` [env ${s.env.join(', ')}]` : ''
    out[s.flag] = isBool ? { type: 'boolean', help: s.help + env } : { type: 'string', help: s.help + env, value: s.key.toUpperCase() }
  }
  return out
}

/** The settings-related flags of a parsed command line, as strings for resolveSettings(). */
export function settingFlags(flags: Record<string, unknown>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const s of SETTINGS) {
    const v = flags[s.flag ?? '']
    if (s.flag && v !== undefined) out[s.flag] = typeof v === 'boolean' ? String(v) : String(v)
  }
  return out
}

export function parse(cmd: Command, argv: string[]) {
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } }
  for (const [name, spec] of Object.entries(cmd.options)) {
    options[name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) }
  }
  // A value that looks like a negative number (`--cache-size -1`) is the option's value, not another
  // option: it is handed on as `--name=value`, so the setting's own check says what is wrong with it.
  const args: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const next = argv[i + 1]
    const takesValue = /^--[a-z-]+$/.test(a) && options[a.slice(2)]?.type === 'string'
    if (takesValue && next !== undefined && /^-\d/.test(next)) args.push(`${a}=${argv[++i]}`)
    else args.push(a)
  }
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true })
    return { flags: values as Record<string, string | boolean | string[] | undefined>, positionals }
  } catch (err) {
    throw new UserError(`desfs ${cmd.name}: ${(err as Error).message.split('\n')[0]} (see desfs ${cmd.name} --help)`, EXIT.USAGE)
  }
}

export function helpText(cmd: Command): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary]
  const opts = Object.entries(cmd.options)
  if (opts.length) {
    lines.push('', 'options:')
    const left = opts.map(([n, s]) => `  ${s.short ? `-${s.short}, ` : ''}--${n}${s.type === 'string' ? ` ${s.value ?? 'VALUE'}` : ''}`)
    const width = Math.min(34, Math.max(...left.map((l) => l.length)) + 2)
    opts.forEach(([, s], i) => lines.push(left[i]!.padEnd(width) + s.help))
    lines.push('  -h, --help'.padEnd(width) + 'show this help')
  }
  if (cmd.details) lines.push('', cmd.details)
  return lines.join('\n') + '\n'
}
