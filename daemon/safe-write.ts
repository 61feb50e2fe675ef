// Writing files where another user may have planted something: a result file in a shared directory,
// a download beside the DB, a token file. desfs's writers (query results, manifests, db download,
// token files, job records, the log, the SQL history, `desfs get`'s temporary names) go through
// here; the cache's data files have their own opener (cache/block-store.ts openCacheFile). So that:
// - a temporary file has a name nobody can guess and is created new (O_CREAT|O_EXCL|O_NOFOLLOW): a
//   link planted at its name is refused, never written through (`FILE.partial` was predictable, and
//   a root-run query in a sticky /tmp wrote wherever such a link pointed);
// - the finished file is renamed into place, so a link at the final name is replaced, not followed,
//   and a failed write leaves no half file under the final name;
// - a file that must keep a fixed name (a resumable download's partial) is opened without following
//   a link and used only when it is a regular file of our own.
import { randomBytes } from 'node:crypto'
import { closeSync, constants, fsyncSync, openSync, readdirSync, renameSync, unlinkSync, writeSync, lstatSync } from 'node:fs'
import { open, rename, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { UserError } from './errors.js'

const { O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_APPEND } = constants

/** Flags that create a file that did not exist under any form (a dangling link counts as existing). */
const CREATE_NEW = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW
/** The same, write-only: openSync(tempNameFor(final), NEW_FILE_FLAGS, mode), then a stream on the fd. */
export const NEW_FILE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
/** For a file appended to under a fixed name (a log, a history): created when missing, never through a link (ELOOP). */
export const APPEND_FLAGS = O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW

const TEMP_SUFFIX = '.tmp'

/** A name beside `final` that cannot be guessed: .<name>.<16 random hex>.tmp (hidden, like editors' temps). */
export function tempNameFor(final: string): string {
  return join(dirname(final), `.${basename(final)}.${randomBytes(8).toString('hex')}${TEMP_SUFFIX}`)
}

/** True for names tempNameFor(final) makes. */
function isTempOf(final: string, name: string): boolean {
  const prefix = `.${basename(final)}.`
  return name.startsWith(prefix) && name.endsWith(TEMP_SUFFIX) && /^[0-9a-f]{16}$/.test(name.slice(prefix.length, -TEMP_SUFFIX.length))
}

/** Creates a new file at `path`; fails with EEXIST when anything (a file, a link) is there. */
export function createNew(path: string, mode = 0o600): Promise<FileHandle> {
  return open(path, CREATE_NEW, mode)
}

/** A new temporary file beside `final`, open for reading and writing. */
export async function createTemp(final: string, mode = 0o600): Promise<{ path: string; fh: FileHandle }> {
  // 64 random bits do not clash by chance: after a few tries, give up with the error.
  for (let i = 0; ; i++) {
    const path = tempNameFor(final)
    try {
      return { path, fh: await createNew(path, mode) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || i >= 3) throw err
    }
  }
}

/**
 * A temporary file with no name at all (created beside `near`, then unlinked at once): scratch space
 * for one process that nobody can open, and that vanishes with the process however it ends.
 * Returns the open file descriptor.
 */
export function anonymousTempSync(near: string): number {
  for (let i = 0; ; i++) {
    const path = tempNameFor(near)
    try {
      const fd = openSync(path, CREATE_NEW, 0o600)
      try {
        unlinkSync(path)
      } catch {
        /* removed already */
      }
      return fd
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || i >= 3) throw err
    }
  }
}

/** A file being written under a temporary name, to be renamed into place (commit) or removed (abort). */
export interface AtomicFile {
  /** The temporary file's path (its name is random). */
  readonly tempPath: string
  readonly fh: FileHandle
  /** Flushes to disk (when asked), closes, and renames over the final name. */
  commit(): Promise<void>
  /** Closes and removes the temporary file. */
  abort(): Promise<void>
}

export async function openAtomic(final: string, opts: { mode?: number; fsync?: boolean } = {}): Promise<AtomicFile> {
  const { path, fh } = await createTemp(final, opts.mode ?? 0o600)
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await fh.close()
  }
  return {
    tempPath: path,
    fh,
    async commit() {
      try {
        if (opts.fsync) await fh.sync()
        await close()
        await rename(path, final)
      } catch (err) {
        await close().catch(() => undefined)
        await unlink(path).catch(() => undefined)
        throw err
      }
    },
    async abort() {
      await close().catch(() => undefined)
      await unlink(path).catch(() => undefined)
    },
  }
}

/** Writes a whole file atomically: a new temporary file, then a rename over `final`. */
export async function writeFileAtomic(final: string, data: string | Buffer, opts: { mode?: number; fsync?: boolean } = {}): Promise<void> {
  const f = await openAtomic(final, opts)
  try {
    await f.fh.writeFile(data)
  } catch (err) {
    await f.abort()
    throw err
  }
  await f.commit()
}

/** writeFileAtomic for synchronous callers (the CLI's manifests). */
export function writeFileAtomicSync(final: string, data: string | Buffer, opts: { mode?: number; fsync?: boolean } = {}): void {
  let path = ''
  let fd = -1
  for (let i = 0; fd < 0; i++) {
    path = tempNameFor(final)
    try {
      fd = openSync(path, NEW_FILE_FLAGS, opts.mode ?? 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || i >= 3) throw err
    }
  }
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off)
    if (opts.fsync) fsyncSync(fd)
    closeSync(fd)
    fd = -1
    renameSync(path, final)
  } catch (err) {
    if (fd >= 0) closeSync(fd)
    try {
      unlinkSync(path)
    } catch {
      /* already gone */
    }
    throw err
  }
}

/** Appends text to a file (created 0600 when missing), never through a link. */
export async function appendNoFollow(path: string, text: string): Promise<void> {
  const fh = await open(path, APPEND_FLAGS, 0o600)
  try {
    await fh.writeFile(text)
  } finally {
    await fh.close()
  }
}

/**
 * Removes temporary files tempNameFor(final) made that a crash left behind (call it while holding
 * the lock that keeps other writers of `final` away). Only regular files of our own are removed.
 */
export function removeStaleTemps(final: string): number {
  let n = 0
  let names: string[]
  try {
    names = readdirSync(dirname(final))
  } catch {
    return 0
  }
  for (const name of names) {
    if (!isTempOf(final, name)) continue
    const p = join(dirname(final), name)
    try {
      const st = lstatSync(p)
      if (st.isFile() && st.uid === process.getuid?.()) {
        unlinkSync(p)
        n++
      }
    } catch {
      // gone meanwhile
    }
  }
  return n
}

/**
 * Opens a file that keeps a fixed name (a resumable partial), creating it when missing, without
 * following a link, and only when it is a regular file of our own with no other name: anything else
 * planted there is refused with a clear error, and nothing is written to it.
 */
export async function openOwnFile(path: string, what: string, mode = 0o600): Promise<FileHandle> {
  let fh: FileHandle
  try {
    // O_NONBLOCK: a FIFO planted there must not hang the open (no effect on regular files).
    fh = await open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw new UserError(`${what} ${path} is a symbolic link: desfs does not write through links; remove it`)
    throw err
  }
  const st = await fh.stat()
  const uid = process.getuid?.()
  const problem = !st.isFile()
    ? 'is not a regular file'
    : uid !== undefined && st.uid !== uid
      ? `belongs to another user (uid ${st.uid})`
      : st.nlink > 1
        ? `has ${st.nlink} names (hard links)`
        : undefined
  if (problem) {
    await fh.close()
    throw new UserError(`${what} ${path} ${problem}: desfs writes only its own files; remove it`)
  }
  return fh
}
