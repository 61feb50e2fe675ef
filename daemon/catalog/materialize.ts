// Placing archive files into a real DESDATA directory, the way des-archive-access-download does
// (DESDATA/<archive path>), from desfs's cache: a copy, or a symlink into the mount. A copy is a
// reflink (FICLONE: the copy shares the cache file's disk blocks until either is written, so it costs
// no extra disk) where the file system offers one (btrfs, XFS, bcachefs), otherwise a full copy.
// There is no hardlink mode: a hardlink shares the cache file's inode, so editing the copy (root
// ignores a 0444 mode) changed what the mount serves; a reflink gives the same saving without that.
// A file is written under a temporary name nobody can guess (daemon/safe-write.ts), created new,
// checked (size and the archive's Adler-32, read back from disk) and only then renamed into place, so
// a partial or wrong file never sits under the final name. A file already there with the right size
// and checksum is left alone.
import { createReadStream, constants } from 'node:fs'
import { chmod, copyFile, mkdir, rename, rm, stat, symlink, lstat, readlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { adler32Fast, adler32Hex } from '../../cache/adler32.js'
import { tempNameFor } from '../safe-write.js'
import { openCacheFile } from '../../cache/block-store.js'

export type PlaceMode = 'copy' | 'symlink'

/** What is wrong with a --mode value, or undefined when it is one of the modes. */
export function placeModeProblem(mode: unknown): string | undefined {
  if (mode === 'copy' || mode === 'symlink') return undefined
  if (mode === 'hardlink')
    return "--mode hardlink is no longer offered: a hardlinked copy shared the cache's file, so editing it changed what the mount serves; use --mode copy (a reflink sharing disk blocks on btrfs/XFS, a full copy elsewhere) or --mode symlink (no extra disk, read through the mount)"
  return `--mode ${String(mode)}: use copy or symlink`
}

/** How a copy was made: sharing the cache file's blocks (reflink) or byte by byte. */
export type CopyKind = 'reflink' | 'copy'

export interface PlaceRequest {
  /** Archive-relative path. */
  rel: string
  size: number
  /** The archive's Adler-32 (hex), when known. */
  adler32: string | null
  /** The complete cache data file (copy). */
  cacheFile: string
  /** The path under the mount (symlink). */
  mounted?: string
  mode: PlaceMode
}

/** Adler-32 of a file on disk, read a MiB at a time. */
export async function adler32File(path: string): Promise<string> {
  let a = 1
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) a = adler32Fast(chunk as Buffer, a)
  return adler32Hex(a)
}

/**
 * True when desdata/<rel> already holds the file: for copies the same size and the same
 * Adler-32 (when the archive gave one); for symlinks a link to the same mounted path.
 */
export async function isPlaced(
  desdata: string,
  rel: string,
  size: number,
  adler32: string | null,
  mode: PlaceMode,
  mounted?: string,
): Promise<boolean> {
  const path = join(desdata, rel)
  if (mode === 'symlink') return (await lstat(path).catch(() => undefined))?.isSymbolicLink() === true && (await readlink(path)) === mounted
  const st = await stat(path).catch(() => undefined)
  if (!st || !st.isFile() || st.size !== size) return false
  return adler32 === null || (await adler32File(path)) === adler32
}

/** Checks a placed temporary file before it gets its final name. */
async function check(tmp: string, req: PlaceRequest): Promise<void> {
  const st = await stat(tmp)
  if (st.size !== req.size) throw new Error(`${req.rel}: wrote ${st.size} bytes, expected ${req.size}`)
  if (req.adler32) {
    const got = await adler32File(tmp)
    if (got !== req.adler32) throw new Error(`${req.rel}: adler32 ${got} does not match the archive's ${req.adler32}`)
  }
}

/**
 * Copies a cache file to `tmp` (which must not exist): a reflink when the file system can, else a
 * copy. The cache file is opened without following any link (openCacheFile); the copy is made from
 * that open file (/proc/self/fd), so what was checked is what gets copied.
 */
async function copyFromCache(cacheFile: string, tmp: string): Promise<CopyKind> {
  const { fh } = await openCacheFile(cacheFile, false)
  try {
    const src = `/proc/self/fd/${fh.fd}`
    try {
      await copyFile(src, tmp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE)
      return 'reflink'
    } catch (err) {
      // No reflinks here (ext4, tmpfs, another file system than the cache's): a plain copy.
      if (!['EOPNOTSUPP', 'ENOTSUP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
      await rm(tmp, { force: true })
      await copyFile(src, tmp, constants.COPYFILE_EXCL)
      return 'copy'
    }
  } finally {
    await fh.close()
  }
}

/** Places one file at desdata/<rel>, replacing what is there; resolves with how a copy was made (undefined for a symlink). */
export async function place(desdata: string, req: PlaceRequest): Promise<CopyKind | undefined> {
  const final = join(desdata, req.rel)
  await mkdir(dirname(final), { recursive: true })
  const tmp = tempNameFor(final)
  let how: CopyKind | undefined
  try {
    if (req.mode === 'symlink') {
      if (!req.mounted) throw new Error('symlink mode needs a running mount')
      await symlink(req.mounted, tmp)
    } else {
      how = await copyFromCache(req.cacheFile, tmp)
      await check(tmp, req)
      await chmod(tmp, 0o644)
    }
    await rename(tmp, final)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  return how
}
