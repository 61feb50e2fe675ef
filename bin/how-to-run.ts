// How a person runs desfs from their shell, for hints we print (`desfs demo`): `desfs` when that name
// on their PATH is this very program, `npx desfs` in the package's own directory (after `npm ci`
// nothing puts desfs on the PATH), and otherwise node with this script's full path.
import { realpathSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'

function real(p: string): string | undefined {
  try {
    return realpathSync(p)
  } catch {
    return undefined
  }
}

/** Quotes a word for a POSIX shell when it needs it. */
export function shellWord(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`
}

export interface RunContext {
  /** This program's script (dist/bin/desfs.js). */
  script: string
  env: NodeJS.ProcessEnv
  cwd: string
}

/** The command prefix that runs this desfs when typed in the user's shell. */
export function desfsCommand(ctx: RunContext): string {
  const script = real(ctx.script) ?? ctx.script
  // Under npx/npm exec the PATH has npm's own additions, which the user's shell will not have.
  if (ctx.env.npm_command !== 'exec') {
    for (const dir of (ctx.env.PATH ?? '').split(delimiter)) {
      if (dir && real(join(dir, 'desfs')) === script) return 'desfs'
    }
  }
  const packageRoot = dirname(dirname(dirname(script))) // <root>/dist/bin/desfs.js
  if (real(ctx.cwd) === real(packageRoot)) return 'npx desfs'
  return `node ${shellWord(script)}`
}
