// The virtual tree as the kernel sees it: names from desfs's tree index (built from the metadata DB),
// sizes and checksums from the archive. The first visit to a directory learns all its files' sizes
// with one PROPFIND Depth:1 (concurrent first visits share it); HEAD per file is the fallback when a
// listing is unsupported or looks wrong. After that the directory never touches the network again.
// A listing or HEAD that fails for a passing reason is tried again by the sources (their retry), but
// never past the lookup's deadline: the kernel gets its answer (EIO) then, and the tries stop.
import { LRUCache } from 'lru-cache'
import { MISSING, type Facts, type FileFacts } from './facts.js'
import type { TreeIndex } from './tree-index.js'
import { SourceError, type Source } from '../cache/sources/source.js'
import { log } from '../daemon/log.js'

/** What the tree asks of the archive: listings and single-file facts. */
type FactSource = Pick<Source, 'list' | 'stat'>

/** An answer for the kernel (ENOENT, ENOTDIR...), not a fault: thrown often, so it carries no stack. */
export class FsError extends Error {
  readonly errno: number
  constructor(errno: number, message: string) {
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message)
    Error.stackTraceLimit = limit
    this.errno = errno
  }
}

/** Linux errno values (negated when handed to FUSE). */
export const ERRNO = {
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
  ENOSYS: 38,
} as const

const ENOENT_ERROR = new FsError(ERRNO.ENOENT, 'no such file')

export type Node = { kind: 'dir'; rel: string; id: number } | { kind: 'file'; rel: string; facts: FileFacts }

/** A directory entry as readdir reports it; facts are absent when the archive could not be asked. */
export interface Listed {
  name: string
  dir: boolean
  facts?: FileFacts
}

/**
 * `work` answered within `ms`, or a 'timeout' error: the signal it is given aborts then, so that the
 * sources' tries stop waiting (the kernel has had its answer).
 */
export function withDeadline<T>(work: (signal: AbortSignal) => Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  const ac = new AbortController()
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new SourceError('timeout', `${what}: no answer within ${Math.round(ms / 1000)}s`))
      ac.abort()
    }, ms)
  })
  return Promise.race([work(ac.signal), timeout]).finally(() => clearTimeout(timer))
}

export interface TreeOptions {
  /** Deadline for learning a directory or a file's facts. */
  deadlineMs: number
  /** HEAD requests in parallel when a listing is not available. */
  headConcurrency?: number
}

/** Directories whose listing is kept in memory, so the getattr per entry that follows a readdir
 * (`ls -l`, `find -size`) is a Map hit. A few suffice: the kernel asks right after the readdir. */
const RECENT_LISTINGS = 4
/** Directories remembered as not listable without waiting (listNow). */
const UNLISTED_DIRS = 10_000

/** HEADs in flight for one readdir of a directory the archive would not list. */
const HEAD_CONCURRENCY = 8

/** Time kept back from the readdir's deadline for answering the kernel once HEADs are given up. */
const LIST_MARGIN_MS = 500

export class Tree {
  private index: TreeIndex
  private facts: Facts
  private source: FactSource
  private opts: TreeOptions
  private learning = new Map<string, Promise<void>>()
  private heads = new Map<string, Promise<FileFacts | null>>()
  /** Directories whose listing was empty or unsupported: their files are learned one HEAD at a time. */
  private headOnly = new Set<string>()
  /** Listed directories asked again since the index changed (a new DB can add files to them). */
  private relisted = new Set<string>()
  /** Recently listed directories: name -> directory id (null for a file) and the file's facts. */
  private recent = new LRUCache<string, Map<string, { dir: number | null; facts?: FileFacts }>>({ max: RECENT_LISTINGS })
  /** Directories listNow gave nothing for (too big, or a file's facts unknown): not tried again per lookup. */
  private unlisted = new LRUCache<string, true>({ max: UNLISTED_DIRS })
  readonly stats = { propfinds: 0, heads: 0 }

  constructor(index: TreeIndex, facts: Facts, source: FactSource, opts: TreeOptions) {
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
    this.recent.clear()
    this.relisted.clear()
    this.unlisted.clear()
    return old
  }

  /**
   * Resolves a FUSE path ('/a/b') without waiting: a directory, a file whose facts are known, or
   * undefined when the archive must be asked first. Throws FsError(ENOENT) for a path the tree lacks.
   */
  resolveNow(fusePath: string): Node | undefined {
    const rel = fusePath.slice(1)
    const entry = this.index.lookup(rel)
    if (!entry) throw ENOENT_ERROR
    if (entry.dir !== null) return { kind: 'dir', rel, id: entry.dir }
    const facts = this.facts.file(rel)
    if (!facts) return undefined
    if (facts.size === MISSING) throw ENOENT_ERROR
    return { kind: 'file', rel, facts }
  }

  /** resolveNow for getattr: answered from the last listings first (sizes and times never change). */
  statNow(fusePath: string): Node | undefined {
    const slash = fusePath.lastIndexOf('/')
    const listing = fusePath.length > 1 ? this.recent.get(fusePath.slice(1, Math.max(slash, 1))) : undefined
    if (listing) {
      const e = listing.get(fusePath.slice(slash + 1))
      if (!e) throw ENOENT_ERROR
      if (e.dir !== null) return { kind: 'dir', rel: fusePath.slice(1), id: e.dir }
      if (e.facts) return { kind: 'file', rel: fusePath.slice(1), facts: e.facts }
    }
    return this.resolveNow(fusePath)
  }

  /**
   * The children of the directory at a FUSE path when every file's facts are known now and there
   * are at most `max`, without waiting; otherwise undefined (and not tried again for that directory
   * until the index changes or it is listed). A lookup hands them to the FUSE plane, which then looks
   * up the directory's other names itself, as after a readdir.
   */
  listNow(fusePath: string, max: number): Listed[] | undefined {
    const rel = fusePath.slice(1)
    if (this.unlisted.has(rel)) return undefined
    const index = this.index
    const id = index.dirId(rel)
    if (id === undefined) return undefined
    const { out, unknown } = this.entries(index, rel, id, max)
    if (!unknown) return out
    this.unlisted.set(rel, true)
    return undefined
  }

  /** Resolves a FUSE path to a directory or a file with known facts, asking the archive if needed; throws FsError. */
  async resolve(fusePath: string): Promise<Node> {
    const now = this.resolveNow(fusePath)
    if (now) return now
    const rel = fusePath.slice(1)
    const facts = await this.fileFacts(rel)
    if (facts.size === MISSING) throw ENOENT_ERROR
    return { kind: 'file', rel, facts }
  }

  /** Facts for a file the index has, learning its directory first if needed. */
  async fileFacts(rel: string): Promise<FileFacts> {
    let f = this.facts.file(rel)
    if (f) return f
    const slash = rel.lastIndexOf('/')
    const dir = slash < 0 ? '' : rel.slice(0, slash)
    if (!this.headOnly.has(dir)) {
      await this.learnDir(dir, this.mayRelist(dir))
      f = this.facts.file(rel)
      if (f) return f
    }
    f = (await this.head(rel)) ?? { size: MISSING, adler32: null, mtime: null }
    return f
  }

  /**
   * A directory listed before may have gained files with a new metadata DB: it is listed once more
   * (one PROPFIND for all of them, rather than a HEAD each), once per index.
   */
  private mayRelist(dir: string): boolean {
    if (this.relisted.has(dir) || !this.facts.dirListed(dir)) return false
    this.relisted.add(dir)
    return true
  }

  /**
   * Children of the directory at a FUSE path, without files the archive does not have. The whole
   * listing comes from one index, the one current when it was asked for, even if a new one is swapped
   * in while the archive is being asked.
   */
  async list(fusePath: string): Promise<Listed[]> {
    const index = this.index
    const rel = fusePath.slice(1)
    const e = index.lookup(rel)
    if (!e) throw ENOENT_ERROR
    if (e.dir === null) throw new FsError(ERRNO.ENOTDIR, 'not a directory')
    const t0 = Date.now()
    await this.learnQuietly(rel, false)
    let { out, unknown } = this.entries(index, rel, e.dir)
    if (unknown && this.mayRelist(rel)) {
      await this.learnQuietly(rel, true)
      ;({ out, unknown } = this.entries(index, rel, e.dir))
    }
    if (unknown && (await this.headUnknown(rel, out, t0 + this.opts.deadlineMs - LIST_MARGIN_MS)))
      ({ out } = this.entries(index, rel, e.dir))
    return out
  }

  /**
   * Files still without facts after the listing (a directory the archive would not list, or a
   * listing that failed): asked one HEAD each, a few at a time, before the names go to the kernel.
   * A name the readdir returned must stat: `ls -l` would otherwise print `?????????` for a DB row
   * whose file the archive lacks. Stops waiting at `until` (the readdir's own deadline, less a
   * margin); names still unknown then are listed as they are, and getattr asks again. True when
   * anything was learned.
   */
  private async headUnknown(rel: string, listed: Listed[], until: number): Promise<boolean> {
    const prefix = rel ? `${rel}/` : ''
    const todo = listed.filter((l) => !l.dir && !l.facts).map((l) => prefix + l.name)
    const left = until - Date.now()
    if (todo.length === 0 || left <= 0) return false
    let learned = 0
    const worker = async () => {
      for (let f = todo.shift(); f !== undefined; f = todo.shift()) {
        try {
          await this.head(f)
          learned++
        } catch {
          // A HEAD that failed or timed out: the name stays, getattr will try again.
        }
      }
    }
    const workers = Array.from({ length: Math.min(todo.length, this.opts.headConcurrency ?? HEAD_CONCURRENCY) }, worker)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(workers), new Promise((r) => (timer = setTimeout(r, left)))])
    clearTimeout(timer)
    todo.length = 0 // workers still running stop after their current HEAD
    return learned > 0
  }

  private async learnQuietly(rel: string, force: boolean): Promise<void> {
    try {
      await this.learnDir(rel, force)
    } catch (err) {
      // Names are still right without sizes; getattr will try again per file.
      log.warn('could not list directory in the archive; listing names only', { dir: rel || '/', error: (err as Error).message })
    }
  }

  /**
   * The directory's entries with the facts known now; remembered for the getattr storm that follows.
   * More than `max` of them: none, and `unknown`.
   */
  private entries(index: TreeIndex, rel: string, id: number, max = Infinity): { out: Listed[]; unknown: boolean } {
    const out: Listed[] = []
    const byName = new Map<string, { dir: number | null; facts?: FileFacts }>()
    const prefix = rel ? `${rel}/` : ''
    let unknown = false
    const list = index.list(id)
    if (list.length > max) return { out, unknown: true }
    // A directory of files only (DES's leaves) gets its facts in one range scan.
    const known = rel !== '' && list.every((e) => e.dir === null) ? this.facts.filesIn(rel) : undefined
    for (const e of list) {
      if (e.dir !== null) {
        out.push({ name: e.name, dir: true })
        byName.set(e.name, { dir: e.dir })
        continue
      }
      const f = known ? known.get(e.name) : this.facts.file(prefix + e.name)
      if (f?.size === MISSING) continue
      if (f) {
        out.push({ name: e.name, dir: false, facts: f })
        byName.set(e.name, { dir: null, facts: f })
      } else {
        unknown = true
        out.push({ name: e.name, dir: false })
        byName.set(e.name, { dir: null })
      }
    }
    if (index === this.index) this.recent.set(rel, byName)
    return { out, unknown }
  }

  /** Learns the facts of every file in a directory with one listing (single-flight). */
  learnDir(rel: string, force = false): Promise<void> {
    if (!force && (this.headOnly.has(rel) || this.facts.dirListed(rel))) return Promise.resolve()
    let p = this.learning.get(rel)
    if (!p) {
      p = withDeadline((signal) => this.doLearnDir(rel, signal), this.opts.deadlineMs, `listing ${rel || '/'}`).finally(() =>
        this.learning.delete(rel),
      )
      this.learning.set(rel, p)
    }
    return p
  }

  private async doLearnDir(rel: string, signal: AbortSignal): Promise<void> {
    const id = this.index.dirId(rel)
    if (id === undefined) return
    const files = this.index
      .list(id)
      .filter((e) => e.dir === null)
      .map((e) => (rel ? `${rel}/${e.name}` : e.name))
    if (files.length === 0) return
    this.stats.propfinds++
    const listing = await this.source.list(rel, signal)
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
    this.unlisted.delete(rel)
  }

  /** HEAD one file (single-flight); null when the archive does not have it. */
  private head(rel: string): Promise<FileFacts | null> {
    let p = this.heads.get(rel)
    if (!p) {
      this.stats.heads++
      p = withDeadline((signal) => this.source.stat(rel, signal), this.opts.deadlineMs, `HEAD ${rel}`)
        .then((f) => {
          this.facts.recordFile(rel, f ?? { size: MISSING, adler32: null, mtime: null })
          return f
        })
        .finally(() => this.heads.delete(rel))
      this.heads.set(rel, p)
    }
    return p
  }
}
