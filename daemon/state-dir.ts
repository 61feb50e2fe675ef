// The state dir holds the control socket, the tree index, what we learned from the archive, and the
// log. It is private: created 0700, and refused when group or others can get in (the socket answers
// SQL and cache commands, so another user must not reach it).
import { mkdirSync, statSync } from 'node:fs'
import { UserError } from './errors.js'

/** What is wrong with an existing directory that must be private, or undefined when nothing is. */
export function privateDirProblem(dir: string, what: string): string | undefined {
  const st = statSync(dir)
  if (!st.isDirectory()) return `${what} ${dir} is not a directory`
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) return `${what} ${dir} belongs to another user (uid ${st.uid}): choose your own directory`
  if ((st.mode & 0o077) !== 0) return `${what} ${dir} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}): run chmod 700 ${dir}`
  return undefined
}

export function ensurePrivateDir(dir: string, what: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new UserError(`cannot create ${what} ${dir}: ${(err as NodeJS.ErrnoException).code}; choose another location`)
  }
  const problem = privateDirProblem(dir, what)
  if (problem) throw new UserError(problem)
}
