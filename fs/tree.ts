// The virtual tree as the kernel sees it: names from desfs's tree index (built from the metadata DB),
// sizes and checksums from the archive. The first visit to a directory learns all its files' sizes
// with one PROPFIND Depth:1 (concurrent first visits share it); HEAD per file is the fallback when a
// listing is unsupported or looks wrong. After that the directory never touches the network again.
import { MISSING, type Facts, type FileFacts } from './facts.js'
import type { TreeIndex } from './tree-index.js'
import type { Source } from '../cache/sources/source.js'
import { SourceError } from '../cache/sources/source.js'
import { log } from '../daemon/log.js'

export class FsError extends Error {
  readonly errno: number
  constructor(errno: number, message: string) {
    super(message)
    this.errno = errno
  }
}

/** Linux errno values (negated when handed to FUSE). */
export const ERRNO = { ENOENT: 2, EIO: 5, EBADF: 9, EACCES: 13, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EROFS: 30, ERANGE: 34, ENODATA: 61, ETIMEDOUT: 110 } as const

export type Node =
  | { kind: 'dir'; rel: string; id: number }
  | { kind: 'file'; rel: string; facts: FileFacts }

/** '/a/b/c' (as FUSE gives paths) -> ['a','b','c']. */
export function segments(fusePath: string): string[] {
  return fusePath.split('/').filter((s) => s !== '')
}

export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SourceError('timeout', `${what}: no answer within ${Math.round(ms / 1000)}s`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

export interface TreeOptions {
  /** Deadline for learning a directory or a file's facts. */
  deadlineMs: number
  /** HEAD requests in parallel when a listing is not available. */
  headConcurrency?: number
}

export class Tree {
  private index: TreeIndex
  private facts: Facts
  private source: Source
  private opts: TreeOptions
  private learning = new Map<string, Promise<void>>()
  private heads = new Map<string, Promise<FileFacts | null>>()
  /** Directories whose listing was empty or unsupported: their files are learned one HEAD at a time. */
  private headOnly = new Set<string>()
  readonly stats = { propfinds: 0, heads: 0 }

  constructor(index: TreeIndex, facts: Facts, source: Source, opts: TreeOptions) {
    this.index = index
    this.facts = facts
    this.source = source
    this.opts = opts
  }

  get current(): TreeIndex {
    return this.index
  }

  /** Swaps in a rebuilt index; lookups from now on use it. Returns the old one for closing. */
  swap(index: TreeIndex): TreeIndex {
    const old = this.index
    this.index = index
    return old
  }

  /** Resolves a FUSE path to a directory or a file with known facts; throws FsError. */
  async resolve(fusePath: string): Promise<Node> {
    const segs = segments(fusePath)
    const entry = this.index.lookup(segs)
    if (!entry) throw new FsError(ERRNO.ENOENT, 'no such file')
    const rel = segs.join('/')
    if (entry.dir !== null) return { kind: 'dir', rel, id: entry.dir }
    const facts = await this.fileFacts(rel)
    if (facts.size === MISSING) throw new FsError(ERRNO.ENOENT, 'not in the archive')
    return { kind: 'file', rel, facts }
  }

  /** Facts for a file the index has, learning its directory first if needed. */
  async fileFacts(rel: string): Promise<FileFacts> {
    let f = this.facts.file(rel)
    if (f) return f
    const slash = rel.lastIndexOf('/')
    const dir = slash < 0 ? '' : rel.slice(0, slash)
    if (!this.headOnly.has(dir)) {
      await this.learnDir(dir)
      f = this.facts.file(rel)
      if (f) return f
    }
    f = (await this.head(rel)) ?? { size: MISSING, adler32: null, mtime: null }
    return f
  }

  /** Children of a directory, without files the archive does not have. */
  async list(node: Extract<Node, { kind: 'dir' }>): Promise<{ name: string; dir: boolean; facts?: FileFacts }[]> {
    try {
      await this.learnDir(node.rel)
    } catch (err) {
      // Names are still right without sizes; getattr will try again per file.
      log.warn('could not list directory in the archive; listing names only', { dir: node.rel || '/', error: (err as Error).message })
    }
    const out: { name: string; dir: boolean; facts?: FileFacts }[] = []
    for (const e of this.index.list(node.id)) {
      if (e.dir !== null) {
        out.push({ name: e.name, dir: true })
        continue
      }
      const f = this.facts.file(node.rel ? `${node.rel}/${e.name}` : e.name)
      if (f?.size === MISSING) continue
      out.push(f ? { name: e.name, dir: false, facts: f } : { name: e.name, dir: false })
    }
    return out
  }

  /** Learns the facts of every file in a directory with one listing (single-flight). */
  learnDir(rel: string): Promise<void> {
    if (this.headOnly.has(rel) || this.facts.dirListed(rel)) return Promise.resolve()
    let p = this.learning.get(rel)
    if (!p) {
      p = withDeadline(this.doLearnDir(rel), this.opts.deadlineMs, `listing ${rel || '/'}`).finally(() => this.learning.delete(rel))
      this.learning.set(rel, p)
    }
    return p
  }

  private async doLearnDir(rel: string): Promise<void> {
    const id = this.index.dirId(rel === '' ? [] : rel.split('/'))
    if (id === undefined) return
    const files = this.index.list(id).filter((e) => e.dir === null).map((e) => (rel ? `${rel}/${e.name}` : e.name))
    if (files.length === 0) return
    this.stats.propfinds++
    const listing = await this.source.list(rel)
    if (listing === null || (listing.size === 0 && files.length > 0)) {
      // dCache answers an unlistable directory with an empty listing; do not believe it.
      this.headOnly.add(rel)
      log.info('directory listing unavailable or empty; learning sizes per file', { dir: rel || '/', files: files.length })
      return
    }
    const learned = new Map<string, FileFacts>()
    let missing = 0
    for (const f of files) {
      const facts = listing.get(f)
      if (facts && facts.size >= 0) learned.set(f, facts)
      else {
        learned.set(f, { size: MISSING, adler32: null, mtime: null })
        missing++
      }
    }
    if (missing) log.warn('metadata DB lists files the archive does not have; hidden', { dir: rel || '/', count: missing })
    this.facts.recordListing(rel, learned)
  }

  /** HEAD one file (single-flight); null when the archive does not have it. */
  private head(rel: string): Promise<FileFacts | null> {
    let p = this.heads.get(rel)
    if (!p) {
      this.stats.heads++
      p = withDeadline(this.source.stat(rel), this.opts.deadlineMs, `HEAD ${rel}`)
        .then((f) => {
          this.facts.recordFile(rel, f ?? { size: MISSING, adler32: null, mtime: null })
          return f
        })
        .finally(() => this.heads.delete(rel))
      this.heads.set(rel, p)
    }
    return p
  }

  /** Records a checksum learned later (e.g. from a GET's Digest header). */
  learnAdler32(rel: string, adler32: string): void {
    this.facts.recordAdler32(rel, adler32)
  }
}
