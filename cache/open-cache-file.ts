// Opening and removing a cache data file without ever following a link: the cache dir is the daemon's own, and a
// link planted at a data file or a data/xx directory must be removed, never written or read through.
import { constants } from 'node:fs'
import { lstat, open, readlink, realpath, rm, unlink, type FileHandle } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { log } from '../daemon/log.js'
import { ensureOwnDir } from '../daemon/state-dir.js'

/** Why a data file opened by openCacheFile cannot be used as it is. */
class CacheFileProblem extends Error {
  /** 'replaced': a link or other odd entry is in its place; 'elsewhere': the open file is not where its path says (a directory on the way is a link). */
  constructor(
    readonly kind: 'replaced' | 'elsewhere',
    message: string,
  ) {
    super(message)
  }
}

/**
 * Opens a data file (<cache dir>/data/xx/<key>) without following any link: the data directories are
 * checked (a link in their place is removed), the file is opened O_NOFOLLOW (O_NONBLOCK, so a FIFO
 * cannot hang it), must be a regular file, and the open file must really be at that path in the
 * cache dir (/proc/self/fd tells, which also catches a directory swapped for a link meanwhile).
 * With `create`, a link or odd entry at the file's name is removed and logged, and a new file made;
 * the caller learns it (`replaced`) and must forget the blocks it had on record for it.
 */
export async function openCacheFile(path: string, create: boolean): Promise<{ fh: FileHandle; replaced: boolean }> {
  const root = dirname(dirname(dirname(path)))
  if (create) {
    await ensureOwnDir(dirname(dirname(path)))
    await ensureOwnDir(dirname(path))
  }
  const flags = (create ? constants.O_RDWR | constants.O_CREAT : constants.O_RDONLY) | constants.O_NOFOLLOW | constants.O_NONBLOCK
  let replaced = false
  for (let attempt = 0; ; attempt++) {
    let fh: FileHandle
    try {
      fh = await open(path, flags, 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOOP' || !create || attempt > 0) {
        if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new CacheFileProblem('replaced', `cache file ${path} is a symbolic link`)
        throw err
      }
      log.warn('removed a symbolic link in place of a cache file (desfs never follows links in its cache dir)', { file: path })
      await unlink(path)
      replaced = true
      continue
    }
    const st = await fh.stat()
    const where = await readlink(`/proc/self/fd/${fh.fd}`).catch(() => undefined)
    const expected = join(await realpath(root), relative(root, path))
    if (where !== undefined && where !== expected) {
      await fh.close()
      throw new CacheFileProblem('elsewhere', `cache file ${path} opened as ${where}: a directory on the way is a link`)
    }
    const uid = process.getuid?.()
    if (st.isFile() && (uid === undefined || st.uid === uid)) return { fh, replaced }
    await fh.close()
    const what = st.isFile() ? `a file of another user (uid ${st.uid})` : 'not a regular file'
    if (!create || attempt > 0) throw new CacheFileProblem('replaced', `cache file ${path} is ${what}`)
    log.warn('removed an entry that is not a desfs cache file from the cache dir', { file: path, was: what })
    await rm(path, { force: true })
    replaced = true
  }
}

/** Removes a data file, unless its directory is not a real one of ours (then nothing outside is touched). */
export async function removeCacheFile(path: string): Promise<void> {
  const d = await lstat(dirname(path)).catch(() => undefined)
  if (d && (d.isSymbolicLink() || !d.isDirectory())) {
    log.warn('a cache data directory is not a directory of its own; nothing removed through it', { dir: dirname(path) })
    await rm(dirname(path), { force: true })
    return
  }
  await unlink(path)
}
