// The native FUSE plane (fs/native/*.c, built by node-gyp into fs/build): what it exports and the
// numbers it speaks in. Worker threads in the addon answer the kernel's hot requests themselves and
// hand the rest to one JavaScript function (fs/ops.ts) as jobs; JavaScript answers each job by its
// request number with one of the reply calls below.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

/** Jobs the plane hands to JavaScript (enum js_op in fs/native/plane.h). */
export const JOB = {
  LOOKUP: 1,
  READDIR: 2,
  OPEN: 3,
  READ: 4,
  GETXATTR: 5,
  STATFS: 6,
  READLINK: 7,
  OPENED: 8,
  RELEASED: 9,
  BACKSTOP: 10,
  /** A read the plane served itself, told so read-ahead can follow it (no answer). */
  READ_SEEN: 11,
} as const

/** The jobs' names, for counters and log lines. */
export const JOB_NAMES: Record<number, string> = {
  [JOB.LOOKUP]: 'lookup',
  [JOB.READDIR]: 'readdir',
  [JOB.OPEN]: 'open',
  [JOB.READ]: 'read',
  [JOB.GETXATTR]: 'getxattr',
  [JOB.STATFS]: 'statfs',
  [JOB.READLINK]: 'readlink',
  [JOB.OPENED]: 'opened',
  [JOB.RELEASED]: 'released',
  [JOB.READ_SEEN]: 'read_seen',
}

/** Names of the kernel's opcodes that reach JavaScript (linux/fuse.h), for the backstop's log line. */
export const FUSE_OPCODES: Record<number, string> = {
  1: 'lookup',
  5: 'readlink',
  14: 'open',
  15: 'read',
  17: 'statfs',
  22: 'getxattr',
  28: 'readdir',
  44: 'readdirplus',
}

/** Entry kinds (enum kind): UNKNOWN is a file whose size the archive has not told yet. */
export const KIND = { UNKNOWN: 0, FILE: 1, DIR: 2, LINK: 3 } as const

/** Entry flags: the archive's Adler-32 is known (so user.desfs.adler32 is listed). */
export const FLAG_ADLER = 1

export type Plane = { readonly __plane: unique symbol }

export type Dispatch = (
  op: number,
  req: number,
  path: string | null,
  fh: number,
  offset: number,
  size: number,
  name: string | null,
  fileId: number,
) => void

export interface PlaneOptions {
  allowOther: boolean
  entryTimeout: number
  attrTimeout: number
  mountTimeMs: number
  /** The native deadline for any request handed to JavaScript: EIO after it, whatever JavaScript does. */
  backstopMs: number
  threads: number
  passthrough: boolean
  uid: number
  gid: number
  /** Reads the plane serves itself are told to JavaScript once per this many bytes of a file... */
  readSeenStep: number
  /** ...while a block within this many bytes after the read is missing (plane.h, seen_step). */
  readSeenAhead: number
}

export interface PlaneStats {
  nodes: number
  openHandles: number
  pending: number
  listedEntries: number
  protocolMinor: number
  workers: number
  maxRead: number
  maxReadahead: number
  devMajor: number
  devMinor: number
  passthrough: boolean
  passthroughNote: string
  rootMount: boolean
  nativeLookups: number
  nativeGetattrs: number
  nativeReaddirs: number
  nativeOpens: number
  nativeReads: number
  nativeReadBytes: number
  passthroughOpens: number
  toJavaScript: number
  backstopAnswers: number
  replyErrors: number
  forgets: number
}

export interface NativeAddon {
  mount(mountpoint: string, opts: PlaneOptions, dispatch: Dispatch): Plane
  unmount(p: Plane): void
  replyErr(p: Plane, req: number, errno: number): boolean
  replyEntry(p: Plane, req: number, kind: number, size: number, mtimeMs: number, flags: number): boolean
  replyListing(
    p: Plane,
    req: number,
    names: string[],
    kinds: Uint8Array,
    sizes: Float64Array,
    mtimes: Float64Array,
    flags: Uint8Array,
  ): boolean
  /** Returns the new handle's number, 0 when the request was answered already (by the backstop). */
  replyOpen(p: Plane, req: number, fileId: number): number
  replyData(p: Plane, req: number, data: Buffer, length: number): boolean
  replyStatfs(p: Plane, req: number, values: number[]): boolean
  /** A presence map for a cache file: byte i = 1 once block i is on disk and verified. */
  newFile(p: Plane, dataPath: string, size: number, blockSize: number): [number, Uint8Array]
  retireFile(p: Plane, id: number): void
  forgetTree(p: Plane): void
  invalidate(p: Plane, rootNames: string[]): Promise<{ dropped: number; failed: string }>
  stats(p: Plane): PlaneStats
  peerCredentials(fd: number): { pid: number; uid: number; gid: number }
  /** Writes `parts` (4 KiB multiple in all) at `pos` (a 4 KiB multiple) of a descriptor opened O_DIRECT. */
  writeDirect(fd: number, pos: number, parts: Buffer[]): Promise<void>
  writePieces(fd: number, pos: number, parts: Buffer[]): Promise<void>
}

// DESFS_NATIVE_ADDON names another build of the same sources (the tests load one built with
// AddressSanitizer this way).
const ADDON = process.env.DESFS_NATIVE_ADDON || fileURLToPath(new URL('../../fs/build/Release/desfs_fuse.node', import.meta.url))

let loaded: NativeAddon | undefined
let loadError: Error | undefined

/** The addon, loaded once; throws a one-line error with the fix when it was not built. */
export function native(): NativeAddon {
  if (loaded) return loaded
  if (!loadError) {
    try {
      loaded = createRequire(import.meta.url)(ADDON) as NativeAddon
      return loaded
    } catch (err) {
      loadError = new Error(
        `the native FUSE addon is not built or does not load (${(err as Error).message.split('\n')[0]}): run npm ci (it needs g++ and make)`,
      )
    }
  }
  throw loadError
}

/**
 * The addon's writes for the cache, from pool threads: around the page cache (cache/direct-file.ts)
 * and through it in 64 KiB pieces (cache/write-batch.ts); none where the addon does not load.
 */
export function cacheWriters(): { writeDirect?: NativeAddon['writeDirect']; writePieces?: NativeAddon['writePieces'] } {
  try {
    const addon = native()
    return {
      writeDirect: (fd, pos, parts) => addon.writeDirect(fd, pos, parts),
      writePieces: (fd, pos, parts) => addon.writePieces(fd, pos, parts),
    }
  } catch {
    return {}
  }
}
