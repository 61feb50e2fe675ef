// A local directory holding (part of) the archive under the same relative paths: a site mirror, a
// DESDATA made by des-archive-access-download, a shared file system. Reads are plain positioned
// reads; a mirror may be partial, so it is not authoritative for listings.
import { open, readdir, stat } from 'node:fs/promises'
import { join, resolve, sep } from 'node:path'
import { SourceError, type ReadOptions, type Source } from './source.js'
import type { FileFacts } from './source.js'

const CHUNK = 1 << 20

export class MirrorSource implements Source {
  readonly name = 'mirror'
  readonly authoritative = false
  readonly root: string
  readonly identity: string

  constructor(root: string) {
    this.root = resolve(root)
    this.identity = `mirror ${this.root}`
  }

  /** The mirror path of an archive path; refuses anything that would leave the mirror. */
  private path(relPath: string): string {
    const segs = relPath.split('/').filter((s) => s !== '')
    if (segs.some((s) => s === '..' || s === '.' || s.includes('\0')))
      throw new SourceError('not_found', `${relPath}: not a valid archive path`)
    const p = join(this.root, ...segs)
    if (p !== this.root && !p.startsWith(this.root + sep)) throw new SourceError('not_found', `${relPath}: outside the mirror`)
    return p
  }

  locate(relPath: string): string {
    return this.path(relPath)
  }

  private fail(err: unknown, what: string): SourceError {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return new SourceError('not_found', `${what}: not in the mirror`)
    return new SourceError('local', `${what}: ${code ?? (err as Error).message} (check --mirror-dir)`)
  }

  async read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    const p = this.path(relPath)
    const what = `read ${p} bytes=${start}-${end - 1}`
    let fh
    try {
      fh = await open(p, 'r')
    } catch (err) {
      throw this.fail(err, what)
    }
    try {
      let pos = start
      while (pos < end) {
        if (opts.signal?.aborted) throw new SourceError('timeout', `${what}: aborted`)
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - pos))
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
        if (bytesRead === 0)
          throw new SourceError('protocol', `${what}: file ends at ${pos} (the mirror copy is shorter than the archive's)`)
        pos += bytesRead
        opts.onData(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))
      }
    } catch (err) {
      throw err instanceof SourceError ? err : this.fail(err, what)
    } finally {
      await fh.close()
    }
  }

  async list(relDir: string): Promise<Map<string, FileFacts> | null> {
    const dir = this.path(relDir)
    let names
    try {
      names = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      const e = this.fail(err, `list ${dir}`)
      if (e.kind === 'not_found') return new Map()
      throw e
    }
    const out = new Map<string, FileFacts>()
    for (const d of names) {
      if (!d.isFile()) continue
      const st = await stat(join(dir, d.name)).catch(() => undefined)
      if (st) out.set(relDir ? `${relDir}/${d.name}` : d.name, { size: st.size, adler32: null, mtime: st.mtimeMs })
    }
    return out
  }

  async stat(relPath: string): Promise<FileFacts | null> {
    try {
      const st = await stat(this.path(relPath))
      return st.isFile() ? { size: st.size, adler32: null, mtime: st.mtimeMs } : null
    } catch (err) {
      const e = err instanceof SourceError ? err : this.fail(err, `stat ${relPath}`)
      if (e.kind === 'not_found') return null
      throw e
    }
  }

  async close(): Promise<void> {}
}
