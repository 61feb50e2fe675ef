// The FUSE operations. Every operation runs as a promise with its own deadline (shorter than
// fuse-native's), so the kernel always gets an answer: the result, ENOENT/EROFS, or EIO with a log
// line saying why. A read copies into the kernel's buffer only while its request is still open:
// once the deadline has answered, fuse-native frees that buffer.
import type { Ops, Stat, StatFs } from 'fuse-native'
import { statfs as statfsAsync } from 'node:fs/promises'
import { FsError, ERRNO, type Node, type Tree } from './tree.js'
import type { BlockStore, CachedFile } from '../cache/block-store.js'
import { newReadPattern, type Fetcher, type ReadPattern } from '../cache/fetcher.js'
import { SourceError } from '../cache/sources/source.js'
import { log } from '../daemon/log.js'

export interface OpsContext {
  tree: Tree
  store: BlockStore
  fetcher: Fetcher
  /** Deadline for any one operation, ms. */
  deadlineMs: number
  /** Archive URL of a file, for the user.desfs.url attribute. */
  locate: (rel: string) => string
  /** Time the mount started: directories' timestamps, and files' when the archive gave none. */
  mountTime: number
  /** Called when the last handle of a file closes (a file removed from the tree can now be forgotten). */
  released?: (rel: string) => void
}

interface Handle {
  rel: string
  file: CachedFile
  pattern: ReadPattern
}

const O_ACCMODE = 3
const O_TRUNC = 0o1000

const DIR_ENTRY: Stat = { mode: 0o40555, uid: 0, gid: 0, size: 0, mtime: 0, atime: 0, ctime: 0 }
const FILE_ENTRY: Stat = { mode: 0o100444, uid: 0, gid: 0, size: 0, mtime: 0, atime: 0, ctime: 0 }

export const XATTRS = ['user.desfs.url', 'user.desfs.adler32', 'user.desfs.cached'] as const

/** Counters for status and metrics. */
export interface OpsStats {
  ops: Record<string, number>
  errors: Record<string, number>
  bytesServed: number
}

export function createOps(ctx: OpsContext): { ops: Ops; stats: OpsStats; openFiles: () => Set<string> } {
  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0
  const handles = new Map<number, Handle>()
  let nextFh = 1
  const stats: OpsStats = { ops: {}, errors: {}, bytesServed: 0 }

  const dirStat = (): Stat => ({ mode: 0o40555, uid, gid, size: 4096, nlink: 2, mtime: ctx.mountTime, atime: ctx.mountTime, ctime: ctx.mountTime, blksize: 4096, blocks: 8 })
  const fileStat = (size: number, mtime: number | null): Stat => {
    const t = mtime ?? ctx.mountTime
    return { mode: 0o100444, uid, gid, size, nlink: 1, mtime: t, atime: t, ctime: t, blksize: 131072, blocks: Math.ceil(size / 512) }
  }
  const nodeStat = (n: Node): Stat => (n.kind === 'dir' ? dirStat() : fileStat(n.facts.size, n.facts.mtime))

  /** Maps a failure to an errno, logging the ones a person needs to hear about. */
  const errnoOf = (op: string, path: string, err: unknown): number => {
    if (err instanceof FsError) return err.errno
    stats.errors[op] = (stats.errors[op] ?? 0) + 1
    if (err instanceof SourceError) log.error(`${op} failed: EIO`, { path, reason: err.message })
    else log.error(`${op} failed with an internal error: EIO`, { path, error: (err as Error)?.stack ?? String(err) })
    return ERRNO.EIO
  }

  const count = (op: string) => (stats.ops[op] = (stats.ops[op] ?? 0) + 1)

  /**
   * Runs an operation under a deadline: `reply` gets the result, or EIO once the deadline passes
   * first (a result that comes later goes to `late`, to release what it holds).
   */
  function run<T>(op: string, path: string, work: (open: () => boolean) => Promise<T>, reply: (err: number, value?: T) => void, late?: (value: T) => void): void {
    count(op)
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      stats.errors[op] = (stats.errors[op] ?? 0) + 1
      log.error(`${op} timed out: EIO`, { path, after: `${ctx.deadlineMs / 1000}s` })
      reply(-ERRNO.EIO)
    }, ctx.deadlineMs)
    // `open` tells the work whether its request still waits for an answer (a read copies into the
    // kernel's buffer only then).
    work(() => !done).then(
      (value) => {
        if (done) return late?.(value)
        done = true
        clearTimeout(timer)
        reply(0, value)
      },
      (err) => {
        if (done) return
        done = true
        clearTimeout(timer)
        reply(-errnoOf(op, path, err))
      },
    )
  }

  const readOnly = (cb: (err: number) => void) => cb(-ERRNO.EROFS)

  const ops: Ops = {
    init(cb) {
      cb(0)
    },

    statfs(_path, cb) {
      run(
        'statfs',
        '/',
        async (): Promise<StatFs> => {
          const r = ctx.tree.current.result
          const disk = await statfsAsync(ctx.store.dir)
          const bsize = 4096
          // Capacity: the cache disk's; used: what the cache holds; files: the tree's.
          return {
            bsize, frsize: bsize,
            blocks: Math.min(0xffffffff, Math.floor((disk.blocks * disk.bsize) / bsize)),
            bfree: Math.min(0xffffffff, Math.floor((disk.bavail * disk.bsize) / bsize)),
            bavail: Math.min(0xffffffff, Math.floor((disk.bavail * disk.bsize) / bsize)),
            files: Math.min(0xffffffff, (r.files ?? 0) + (r.dirs ?? 0)), ffree: 0, favail: 0,
            fsid: 0x64657366, flag: 1 /* ST_RDONLY */, namemax: 255,
          }
        },
        (err, v) => cb(err, v),
      )
    },

    getattr(path, cb) {
      // Most getattrs are answered at once from the index and known facts, without a promise or a
      // timer: at tens of thousands per second (ls -l, find, stat storms) that overhead counts.
      let node: Node | undefined
      try {
        node = ctx.tree.statNow(path)
      } catch (err) {
        count('getattr')
        return cb(-errnoOf('getattr', path, err))
      }
      if (!node) return run('getattr', path, async () => nodeStat(await ctx.tree.resolve(path)), (err, v) => cb(err, v))
      count('getattr')
      cb(0, nodeStat(node))
    },

    readdir(path, cb) {
      run(
        'readdir',
        path,
        async () => {
          const entries = await ctx.tree.list(path)
          // libfuse 2 uses an entry's stat only for its type (no readdirplus): one shared object each.
          const names = ['.', '..']
          const st: Stat[] = [DIR_ENTRY, DIR_ENTRY]
          for (const e of entries) {
            names.push(e.name)
            st.push(e.dir ? DIR_ENTRY : FILE_ENTRY)
          }
          return { names, st }
        },
        (err, v) => (v ? cb(0, v.names, v.st) : cb(err)),
      )
    },

    open(path, flags, cb) {
      if ((flags & O_ACCMODE) !== 0 || flags & O_TRUNC) return cb(-ERRNO.EROFS)
      run(
        'open',
        path,
        async () => {
          const node = await ctx.tree.resolve(path)
          if (node.kind !== 'file') throw new FsError(ERRNO.EISDIR, 'is a directory')
          const file = ctx.store.file(node.rel, node.facts.size, node.facts.adler32)
          ctx.store.hold(file)
          ctx.store.touch(file)
          const fh = nextFh++
          handles.set(fh, { rel: node.rel, file, pattern: newReadPattern() })
          return fh
        },
        (err, fh) => cb(err, fh),
        // Opened after the deadline answered EIO: the kernel never got this handle, so let it go.
        (fh) => {
          const h = handles.get(fh)
          handles.delete(fh)
          if (h) ctx.store.release(h.file)
        },
      )
    },

    read(path, fd, buf, len, pos, cb) {
      const h = handles.get(fd)
      if (!h) return cb(-ERRNO.EBADF)
      run(
        'read',
        path,
        (open) => ctx.fetcher.readInto(h.file, pos, len, buf, open, h.pattern),
        (err, n) => {
          if (err || n === undefined) return cb(err || -ERRNO.EIO)
          stats.bytesServed += n
          cb(n)
        },
      )
    },

    release(_path, fd, cb) {
      const h = handles.get(fd)
      if (h) {
        handles.delete(fd)
        ctx.store.release(h.file)
        if (!ctx.store.inUse(h.rel)) ctx.released?.(h.rel)
      }
      cb(0)
    },

    getxattr(path, name, _position, cb) {
      // ls -l asks every file for its ACL and SELinux label; "not supported" makes it stop asking
      // for the whole mount after the first file (ENODATA would not).
      if (!name.startsWith('user.')) return cb(-ERRNO.EOPNOTSUPP)
      run(
        'getxattr',
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
              return Buffer.from(`${ctx.store.cachedBytes(node.rel)}/${node.facts.size}`)
            default:
              throw new FsError(ERRNO.ENODATA, 'no such attribute')
          }
        },
        (err, v) => cb(err, v),
      )
    },

    listxattr(path, cb) {
      run(
        'listxattr',
        path,
        async () => {
          const node = await ctx.tree.resolve(path)
          if (node.kind !== 'file') return []
          return node.facts.adler32 ? [...XATTRS] : XATTRS.filter((x) => x !== 'user.desfs.adler32')
        },
        (err, v) => cb(err, v),
      )
    },

    // A read-only file system: everything that would change it is refused.
    write: (_p, _fd, _b, _l, _pos, cb) => cb(-ERRNO.EROFS),
    create: (_p, _m, cb) => readOnly(cb),
    truncate: (_p, _s, cb) => readOnly(cb),
    ftruncate: (_p, _fd, _s, cb) => readOnly(cb),
    unlink: (_p, cb) => readOnly(cb),
    rename: (_s, _d, cb) => readOnly(cb),
    link: (_s, _d, cb) => readOnly(cb),
    symlink: (_s, _d, cb) => readOnly(cb),
    mkdir: (_p, _m, cb) => readOnly(cb),
    rmdir: (_p, cb) => readOnly(cb),
    chmod: (_p, _m, cb) => readOnly(cb),
    chown: (_p, _u, _g, cb) => readOnly(cb),
    utimens: (_p, _a, _m, cb) => readOnly(cb),
    mknod: (_p, _m, _d, cb) => readOnly(cb),
    setxattr: (_p, _n, _v, _pos, _f, cb) => readOnly(cb),
    removexattr: (_p, _n, cb) => readOnly(cb),
  }

  const openFiles = () => new Set([...handles.values()].map((h) => h.file.key))
  return { ops, stats, openFiles }
}
