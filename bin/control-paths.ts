// Paths under a mount's query-defined directories (`$DESDATA/.desfs/...`) name the files a query
// selects: a by-name link names one file, a recipe's directory every file it lists. sync, get and
// cache pin take them like any other path; this turns them into the archive paths they stand for by
// asking the mount itself (listing the directory, reading the links), so the daemon runs the query
// exactly as `ls` would.
import { lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { posix } from 'node:path'
import { EXIT, UserError } from '../daemon/errors.js'

const CONTROL = '.desfs'
/** Recipe parameters nest a few levels; a walk deeper than this is a loop or a mistake. */
const MAX_DEPTH = 16

/** The mountpoint, when `abs` lies in a mount's .desfs directory. */
function mountOfControl(abs: string): string | undefined {
  const parts = abs.split('/')
  const i = parts.indexOf(CONTROL)
  return i < 1 ? undefined : parts.slice(0, i).join('/') || '/'
}

function problem(path: string, err: NodeJS.ErrnoException): UserError {
  const why =
    err.code === 'ENOENT'
      ? 'no such query directory, value or file name'
      : err.code === 'EACCES'
        ? 'this level cannot be listed (its recipe gives no values query); name a value below it'
        : err.code === 'EIO'
          ? "its query failed or timed out; the daemon's log says why"
          : (err.code ?? err.message)
  return new UserError(`${path}: ${why}`, err.code === 'ENOENT' || err.code === 'EACCES' ? EXIT.USAGE : EXIT.FAILURE)
}

/** Archive paths of the files a .desfs path selects (links in it, and in the directories under it). */
function expand(abs: string, mnt: string, shown: string, out: string[], depth: number): void {
  let st
  try {
    st = lstatSync(abs)
  } catch (err) {
    throw problem(shown, err as NodeJS.ErrnoException)
  }
  if (st.isSymbolicLink()) {
    const target = posix.resolve(posix.dirname(abs), readlinkSync(abs))
    if (!target.startsWith(mnt + '/')) throw new UserError(`${shown}: its link leads out of the mount (${target})`, EXIT.FAILURE)
    out.push(target.slice(mnt.length + 1))
    return
  }
  if (!st.isDirectory()) throw new UserError(`${shown}: neither a link to an archive file nor a directory of them`, EXIT.USAGE)
  if (depth >= MAX_DEPTH) throw new UserError(`${shown}: nested more than ${MAX_DEPTH} levels deep`, EXIT.USAGE)
  let names: string[]
  try {
    names = readdirSync(abs).sort()
  } catch (err) {
    throw problem(shown, err as NodeJS.ErrnoException)
  }
  for (const n of names) expand(`${abs}/${n}`, mnt, `${shown}/${n}`, out, depth + 1)
}

/**
 * `paths` with every one under a mount's .desfs directory replaced by the archive paths it selects
 * (in listing order, each once); the others are returned as given. `absolute`: the files' paths in
 * the mount instead, for commands that send the working directory along (a relative archive path
 * would be read relative to it when it lies inside the mount).
 */
export function expandControlPaths(paths: string[], { cwd = process.cwd(), absolute = false } = {}): string[] {
  const out: string[] = []
  for (const p of paths) {
    const abs = posix.resolve(cwd, p)
    const mnt = mountOfControl(abs) // also for a path relative to a working directory inside .desfs
    if (!mnt) {
      out.push(p)
      continue
    }
    const selected: string[] = []
    expand(abs, mnt, p, selected, 0)
    if (!selected.length) throw new UserError(`${p}: selects no files`, EXIT.USAGE)
    out.push(...(absolute ? selected.map((rel) => `${mnt}/${rel}`) : selected))
  }
  return [...new Set(out)]
}
