// The operations JavaScript answers for the native plane (fs/native/): what the plane's worker
// threads could not answer alone. Lookups, listings and opens of files not yet known, reads of blocks
// not yet cached, user.desfs.* attributes and statfs; and everything under the hidden control
// directory .desfs (query-defined directories of links, fs/query-dirs.ts), including readlink. Each runs as a promise with its own deadline,
// so the kernel always gets an answer: the result, ENOENT/EROFS, or EIO with a log line saying why
// (and the plane's backstop answers EIO should the event loop itself be stuck). Replies name their
// request by number; a reply to a request already answered is dropped by the plane, so a late
// answer can never write into a buffer the kernel has let go.
import { statfs as statfsAsync } from 'node:fs/promises'
import { FsError, ERRNO, type Node, type Tree, type Listed } from './tree.js'
import type { FileFacts } from './facts.js'
import { FLAG_ADLER, FUSE_OPCODES, JOB, JOB_NAMES, KIND, type Dispatch, type NativeAddon, type Plane } from './native.js'
import type { CachedFile, PresenceMaps } from '../cache/block-store.js'
import type { CacheFileHandle, FileHandles } from '../cache/file-handle.js'
import { SourceError } from '../cache/sources/source.js'
import { log } from '../daemon/log.js'
import { isControlPath, type QueryDirs, type QueryNode } from './query-dirs.js'
import { queryListing, treeListing, type ListingArrays } from './listing-arrays.js'

export interface OpsContext {
  tree: Tree
  /** Opens cached files for reading (the cache keeps them in use while open). */
  files: FileHandles
  /** The cache's directory: statfs reports its disk. */
  cacheDir: string
  /** Deadline for any one operation, ms. */
  deadlineMs: number
  /** Archive URL of a file, for the user.desfs.url attribute. */
  locate: (rel: string) => string
  /** Time the mount started: directories' timestamps, and files' when the archive gave none. */
  mountTime: number
  /** Called when the last handle of a file closes (a file removed from the tree can now be forgotten). */
  released?: (rel: string) => void
  /** The hidden control directory .desfs (query-defined directories); absent, it does not exist. */
  queryDirs?: QueryDirs
  /** The user.desfs.hdus attribute: a FITS file's HDU index as JSON (daemon/jobs/headers-index.ts). */
  hdus?: (rel: string, facts: FileFacts) => Promise<Buffer>
  /** Opened with its first block at hand: the HDU walk may start (headers-index.ts, walkOnOpen). */
  walkHdus?: (rel: string, file: CachedFile) => void
}

export const XATTRS = ['user.desfs.url', 'user.desfs.adler32', 'user.desfs.cached'] as const
/**
 * A lookup hands its directory's listing to the plane when the directory has at most this many
 * entries. Building one costs about 4 µs per entry, once (the first stat in a directory of 10,000
 * took 47 ms rather than 10, so at most ~65 ms here); every later lookup there is then answered by
 * the plane in ~15 µs instead of ~200 µs through JavaScript, so it pays off after a few hundred.
 */
const LOOKUP_LISTING_MAX = 16_384

/** Counters for status and metrics: operations that reached JavaScript, and their failures. */
export interface OpsStats {
  ops: Record<string, number>
  errors: Record<string, number>
  bytesServed: number
  /**
   * Bytes the kernel's READ requests asked for, of those that reach JavaScript: reads the plane
   * serves itself (every block cached and verified) fetch nothing and are not counted. What is
   * fetched is judged against this (the kernel's read-ahead makes a 2880-byte read a 128 KiB one).
   */
  bytesRequested: number
}

export interface Ops {
  dispatch: Dispatch
  /** Connects the replies to the plane (right after mounting, before any job is delivered). */
  bind(addon: NativeAddon, plane: Plane): void
  stats: OpsStats
  openFiles: () => Set<string>
}

export function createOps(ctx: OpsContext): Ops {
  const handles = new Map<number, CacheFileHandle>()
  const stats: OpsStats = { ops: {}, errors: {}, bytesServed: 0, bytesRequested: 0 }
  let addon: NativeAddon | undefined
  let plane: Plane | undefined
  /** The plane's presence maps, for the block store's files. */
  const maps: PresenceMaps = {
    newFile: (path, size, blockSize) => addon!.newFile(plane!, path, size, blockSize),
    retireFile: (id) => addon?.retireFile(plane!, id),
  }

  /** Maps a failure to an errno, logging the ones a person needs to hear about. */
  const errnoOf = (op: string, path: string, err: unknown): number => {
    if (err instanceof FsError) return err.errno
    stats.errors[op] = (stats.errors[op] ?? 0) + 1
    if (err instanceof SourceError) log.error(`${op} failed: EIO`, { path, reason: err.message })
    else log.error(`${op} failed with an internal error: EIO`, { path, error: (err as Error)?.stack ?? String(err) })
    return ERRNO.EIO
  }

  const count = (op: string) => (stats.ops[op] = (stats.ops[op] ?? 0) + 1)
  const fail = (req: number, errno: number) => addon!.replyErr(plane!, req, errno)

  /**
   * Runs an operation under a deadline: `reply` gets the result, or the request gets EIO once the
   * deadline passes first (a result that comes later goes to `late`, to release what it holds).
   */
  function run<T>(
    op: string,
    req: number,
    path: string,
    work: (open: () => boolean) => Promise<T>,
    reply: (value: T) => void,
    late?: (value: T) => void,
  ): void {
    count(op)
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      stats.errors[op] = (stats.errors[op] ?? 0) + 1
      log.error(`${op} timed out: EIO`, { path, after: `${ctx.deadlineMs / 1000}s` })
      fail(req, ERRNO.EIO)
    }, ctx.deadlineMs)
    work(() => !done).then(
      (value) => {
        if (done) return late?.(value)
        done = true
        clearTimeout(timer)
        try {
          reply(value)
        } catch (err) {
          fail(req, errnoOf(op, path, err))
        }
      },
      (err) => {
        if (done) return
        done = true
        clearTimeout(timer)
        fail(req, errnoOf(op, path, err))
      },
    )
  }

  const replyNode = (req: number, n: Node) => {
    if (n.kind === 'dir') addon!.replyEntry(plane!, req, KIND.DIR, 0, ctx.mountTime, 0)
    else addon!.replyEntry(plane!, req, KIND.FILE, n.facts.size, n.facts.mtime ?? ctx.mountTime, n.facts.adler32 ? FLAG_ADLER : 0)
  }

  const replyQueryNode = (req: number, n: QueryNode) => {
    if (n.kind === 'dir') addon!.replyEntry(plane!, req, KIND.DIR, 0, ctx.mountTime, 0)
    else addon!.replyEntry(plane!, req, KIND.LINK, Buffer.byteLength(n.target), ctx.mountTime, 0)
  }

  const replyListing = (req: number, a: ListingArrays) => {
    addon!.replyListing(plane!, req, a.names, a.kinds, a.sizes, a.mtimes, a.flags)
  }

  function lookup(req: number, path: string): void {
    const qd = ctx.queryDirs
    if (qd && isControlPath(path))
      return run(
        'lookup',
        req,
        path,
        () => qd.resolve(path),
        (n) => replyQueryNode(req, n),
      )
    // Most are answered from the index and known facts at once, without a promise or a timer; with
    // the directory's listing when it is known too, so its other names never come here.
    try {
      const now = ctx.tree.statNow(path)
      if (now) {
        count('lookup')
        return replyLookup(req, path, now)
      }
    } catch (err) {
      count('lookup')
      return void fail(req, errnoOf('lookup', path, err))
    }
    run(
      'lookup',
      req,
      path,
      () => ctx.tree.resolve(path),
      (n) => replyLookup(req, path, n),
    )
  }

  /** A lookup's entry, with its directory's listing when that is known now (the plane keeps it). */
  const replyLookup = (req: number, path: string, n: Node) => {
    const slash = path.lastIndexOf('/')
    const listing = ctx.tree.listNow(path.slice(0, Math.max(1, slash)), LOOKUP_LISTING_MAX)
    const name = path.slice(slash + 1)
    if (listing?.some((e) => e.name === name)) replyListing(req, treeListing(listing, ctx.mountTime))
    else replyNode(req, n)
  }

  function readdir(req: number, path: string): void {
    const qd = ctx.queryDirs
    if (qd && isControlPath(path))
      return run(
        'readdir',
        req,
        path,
        () => qd.list(path),
        (entries) => replyListing(req, queryListing(entries, ctx.mountTime)),
      )
    run(
      'readdir',
      req,
      path,
      () => ctx.tree.list(path),
      (entries: Listed[]) => replyListing(req, treeListing(entries, ctx.mountTime)),
    )
  }

  /** A link's target: links exist only under the control directory. */
  function readlink(req: number, path: string): void {
    const qd = ctx.queryDirs
    if (!qd || !isControlPath(path)) {
      count('readlink')
      return void fail(req, ERRNO.EINVAL)
    }
    run(
      'readlink',
      req,
      path,
      () => qd.readlink(path),
      (target) => {
        const b = Buffer.from(target)
        addon!.replyData(plane!, req, b, b.length)
      },
    )
  }

  /** A handle the kernel now has: the cache keeps the file in use until it is released. */
  const adopt = (fh: number, rel: string, file: CachedFile) => {
    handles.set(fh, ctx.files.open(rel, file))
    if (file.has(0)) ctx.walkHdus?.(rel, file) // else with the first read at 0 (read() below)
  }

  function open(req: number, path: string): void {
    run(
      'open',
      req,
      path,
      async () => {
        const node = await ctx.tree.resolve(path)
        if (node.kind !== 'file') throw new FsError(ERRNO.EISDIR, 'is a directory')
        const file = ctx.files.file(node.rel, node.facts.size, node.facts.adler32)
        return { rel: node.rel, file }
      },
      ({ rel, file }) => {
        const fh = addon!.replyOpen(plane!, req, file.sharedMap(maps))
        if (fh) adopt(fh, rel, file)
        // A complete file not yet checked since this start: check it now, so the next open can be
        // answered natively (and in passthrough) without waiting for a reader to go through it.
        if (file.complete && !file.allVerified) void file.verifyAll()
      },
    )
  }

  /** An open the plane answered itself (a complete, verified file): count the file as in use. */
  function opened(fh: number, path: string): void {
    count('opened')
    try {
      const node = ctx.tree.resolveNow(path)
      if (node?.kind === 'file') adopt(fh, node.rel, ctx.files.file(node.rel, node.facts.size, node.facts.adler32))
    } catch {
      // Gone from the tree since (a reload): the handle lives on in the plane until released.
    }
  }

  function read(req: number, fh: number, offset: number, size: number): void {
    const h = handles.get(fh)
    if (!h) return void fail(req, ERRNO.EBADF)
    stats.bytesRequested += size
    const buf = Buffer.allocUnsafe(size)
    run(
      'read',
      req,
      '/' + h.rel,
      (open) => h.read(offset, size, buf, open),
      (n) => {
        stats.bytesServed += n
        addon!.replyData(plane!, req, buf, n)
      },
    )
    if (offset === 0) ctx.walkHdus?.(h.rel, h.file) // after the read asked for block 0: the walk joins that fetch
  }

  function released(fh: number): void {
    const h = handles.get(fh)
    if (!h) return
    handles.delete(fh)
    if (h.close()) ctx.released?.(h.rel)
  }

  function getxattr(req: number, path: string, name: string): void {
    run(
      'getxattr',
      req,
      path,
      async () => {
        const node = await ctx.tree.resolve(path)
        if (node.kind !== 'file') throw new FsError(ERRNO.ENODATA, 'no such attribute')
        switch (name) {
          case 'user.desfs.url':
            return Buffer.from(ctx.locate(node.rel))
          case 'user.desfs.adler32':
            if (!node.facts.adler32) throw new FsError(ERRNO.ENODATA, 'checksum not known yet')
            return Buffer.from(node.facts.adler32)
          case 'user.desfs.cached':
            return Buffer.from(`${await ctx.files.cachedBytes(node.rel)}/${node.facts.size}`)
          case 'user.desfs.hdus':
            if (!ctx.hdus) throw new FsError(ERRNO.ENODATA, 'no such attribute')
            return await ctx.hdus(node.rel, node.facts)
          default:
            throw new FsError(ERRNO.ENODATA, 'no such attribute')
        }
      },
      (v) => addon!.replyData(plane!, req, v, v.length),
    )
  }

  function statfs(req: number): void {
    run(
      'statfs',
      req,
      '/',
      async () => {
        const r = ctx.tree.current.result
        const disk = await statfsAsync(ctx.cacheDir)
        const bsize = 4096
        // Capacity: the cache disk's; files: the tree's.
        const bavail = Math.floor((disk.bavail * disk.bsize) / bsize)
        return [Math.floor((disk.blocks * disk.bsize) / bsize), bavail, bavail, (r.files ?? 0) + (r.dirs ?? 0), 0, bsize, 255, bsize]
      },
      (v) => addon!.replyStatfs(plane!, req, v),
    )
  }

  const dispatch: Dispatch = (op, req, path, fh, offset, size, name) => {
    // Called by the plane through a thread-safe function: nothing may throw out of here.
    try {
      switch (op) {
        case JOB.LOOKUP:
          return lookup(req, path!)
        case JOB.READDIR:
          return readdir(req, path!)
        case JOB.OPEN:
          return open(req, path!)
        case JOB.OPENED:
          return opened(fh, path!)
        case JOB.READ:
          return read(req, fh, offset, size)
        case JOB.READ_SEEN:
          count('read_seen')
          return handles.get(fh)?.readSeen(offset, size)
        case JOB.RELEASED:
          return released(fh)
        case JOB.GETXATTR:
          return getxattr(req, path!, name!)
        case JOB.STATFS:
          return statfs(req)
        case JOB.READLINK:
          return readlink(req, path!)
        case JOB.BACKSTOP: {
          const what = FUSE_OPCODES[size] ?? `FUSE opcode ${size}`
          log.error('a request got no answer from the event loop in time; the plane answered EIO', { request: what })
          return
        }
        default:
          if (req) fail(req, ERRNO.ENOSYS)
      }
    } catch (err) {
      // Logged (errnoOf) even for a job nobody waits for (read_seen, opened, released).
      const errno = errnoOf(JOB_NAMES[op] ?? 'op', path ?? '', err)
      if (req) fail(req, errno)
    }
  }

  const openFiles = () => new Set([...handles.values()].map((h) => h.file.key))
  return {
    dispatch,
    bind(a, p) {
      addon = a
      plane = p
    },
    stats,
    openFiles,
  }
}
