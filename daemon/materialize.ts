// Placing archive files into a real DESDATA directory, the way des-archive-access-download does
// (DESDATA/<archive path>), from desfs's cache: a copy, a hardlink to the cache file (no extra disk;
// the cache unlinks, never rewrites, a file it evicts), or a symlink into the mount. A file is written
// under a temporary name, checked (size and the archive's Adler-32, read back from disk) and only then
// renamed into place, so a partial or wrong file never sits under the final name. A file already there
// with the right size and checksum is left alone.
import { createReadStream, constants } from 'node:fs'
import { chmod, copyFile, link, mkdir, rename, rm, stat, symlink, lstat, readlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { adler32Fast, adler32Hex } from '../cache/adler32.js'

export type PlaceMode = 'copy' | 'hardlink' | 'symlink'

export interface PlaceRequest {
  /** Archive-relative path. */
  rel: string
  size: number
  /** The archive's Adler-32 (hex), when known. */
  adler32: string | null
  /** The complete cache data file (copy, hardlink). */
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
 * True when desdata/<rel> already holds the file: for copies and hardlinks the same size and the same
 * Adler-32 (when the archive gave one); for symlinks a link to the same mounted path.
 */
export async function isPlaced(desdata: string, rel: string, size: number, adler32: string | null, mode: PlaceMode, mounted?: string): Promise<boolean> {
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

/** Places one file at desdata/<rel>, replacing what is there; resolves with how (a hardlink across file systems becomes a copy). */
export async function place(desdata: string, req: PlaceRequest): Promise<PlaceMode> {
  const final = join(desdata, req.rel)
  await mkdir(dirname(final), { recursive: true })
  const tmp = join(dirname(final), `.${req.rel.split('/').pop()}.desfs-${process.pid}-${Date.now().toString(36)}`)
  let how: PlaceMode = req.mode
  try {
    if (req.mode === 'symlink') {
      if (!req.mounted) throw new Error('symlink mode needs a running mount')
      await symlink(req.mounted, tmp)
    } else {
      if (req.mode === 'hardlink') {
        try {
          await link(req.cacheFile, tmp)
        } catch (err) {
          // Another file system (or one without hardlinks): a copy is what is possible.
          if (!['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
          how = 'copy'
        }
      }
      if (how === 'copy') await copyFile(req.cacheFile, tmp, constants.COPYFILE_FICLONE)
      await check(tmp, req)
      // A hardlink shares the cache's inode: read-only, so an editor cannot change the cached copy.
      await chmod(tmp, how === 'hardlink' ? 0o444 : 0o644)
    }
    await rename(tmp, final)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  return how
}
