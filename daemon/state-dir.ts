// The state dir holds the control socket, the tree index, what we learned from the archive, and the
// log; the cache dir holds the cache's record and data files. Both are private: created 0700, and
// refused when group or others can get in (the socket answers SQL and cache commands, so another user
// must not reach it). Nothing under them is reached through a symbolic link: a link planted there
// (by a mistake, or by whoever got in while the mode was loose) would make desfs write archive bytes,
// or delete files while cleaning up, wherever it points. The directories inside are checked with
// lstat (a real directory, ours) and a link or other odd entry in their place is removed and logged;
// files are opened with O_NOFOLLOW (cache/block-store.ts, daemon/safe-write.ts), and SQLite files,
// which SQLite opens itself, are checked before opening (refuseLinks).
import { lstatSync, mkdirSync, rmSync, statSync } from 'node:fs'
import { lstat, mkdir, rm } from 'node:fs/promises'
import { UserError } from './errors.js'
import { log } from './log.js'

/** What is wrong with an existing directory that must be private, or undefined when nothing is. */
export function privateDirProblem(dir: string, what: string): string | undefined {
  const uid = process.getuid?.()
  // The configured dir itself may be a link the user made (~/.cache -> /scratch); one that another
  // user planted (in a shared /tmp) is refused, whatever it points to.
  const link = lstatSync(dir)
  if (link.isSymbolicLink() && uid !== undefined && link.uid !== uid && link.uid !== 0)
    return `${what} ${dir} is a symbolic link made by another user (uid ${link.uid}): remove it or choose your own directory`
  const st = statSync(dir)
  if (!st.isDirectory()) return `${what} ${dir} is not a directory`
  if (uid !== undefined && st.uid !== uid) return `${what} ${dir} belongs to another user (uid ${st.uid}): choose your own directory`
  if ((st.mode & 0o077) !== 0)
    return `${what} ${dir} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}): run chmod 700 ${dir}`
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

/** What an entry that must be a directory of our own is instead, or undefined when it is one. */
function notOwnDir(st: { isDirectory(): boolean; isSymbolicLink(): boolean; uid: number }): string | undefined {
  if (st.isSymbolicLink()) return 'a symbolic link'
  if (!st.isDirectory()) return 'not a directory'
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) return `owned by another user (uid ${st.uid})`
  return undefined
}

/**
 * Makes `dir` (inside a private dir whose parent exists) a real directory of our own: created 0700
 * when missing; a link or a file in its place is removed (the link only, never what it points to)
 * and logged, then the directory is made. A directory of another user is refused.
 */
export function ensureOwnDirSync(dir: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(dir, { mode: 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const st = lstatSync(dir)
    const wrong = notOwnDir(st)
    if (!wrong) return
    if (st.isDirectory() || attempt > 0) throw new UserError(`${dir} is ${wrong}: desfs uses only its own directories here; remove it`)
    log.warn('removed what was in place of a desfs directory (desfs never follows links in its cache or state dir)', {
      path: dir,
      was: wrong,
    })
    rmSync(dir, { force: true })
  }
}

/**
 * ensureOwnDirSync for the cache's data directories, without blocking the event loop. Called at
 * every open of a data file to be written, where the directory nearly always exists: it is looked
 * at first and made only when missing (a mkdir failing with EEXIST cost the event loop ~0.4 ms in
 * a profile of a sync, for the error it makes).
 */
export async function ensureOwnDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    let st = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
    if (!st) {
      try {
        await mkdir(dir, { mode: 0o700 })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      st = await lstat(dir)
    }
    const wrong = notOwnDir(st)
    if (!wrong) return
    if (st.isDirectory() || attempt > 0) throw new Error(`${dir} is ${wrong}: desfs uses only its own directories here; remove it`)
    log.warn('removed what was in place of a desfs directory (desfs never follows links in its cache or state dir)', {
      path: dir,
      was: wrong,
    })
    await rm(dir, { force: true })
  }
}

/**
 * Refuses to go on when any of these files exists as something other than a regular file (a
 * symbolic link above all): SQLite opens its files itself, following links.
 */
export function refuseLinks(paths: string[], what: string): void {
  for (const p of paths) {
    let st
    try {
      st = lstatSync(p)
    } catch {
      continue
    }
    if (!st.isFile())
      throw new UserError(
        `${what} ${p} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: desfs never follows links in its cache or state dir; remove it`,
      )
  }
}

/** An SQLite database file and the files SQLite keeps beside it. */
export function sqliteFiles(db: string): string[] {
  return [db, `${db}-wal`, `${db}-journal`, `${db}-shm`]
}
