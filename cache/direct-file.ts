// Blocks fetched for later (only a sync wants them, no reader) are written around the page cache,
// through a second descriptor of the data file opened O_DIRECT. Through the page cache, a profiled
// 1 GB sync spent 1.5 s of the pool threads' kernel time making and filling folios on this 2-core box
// (`dd bs=1M` of 1 GB to a file: 2.0-3.1 s, against 0.15 s with oflag=direct), time taken from the
// network and the checks, and it pushed the pages readers use out of memory. Blocks a reader wants
// still go through the page cache: the plane reads them back at once (writing those direct too made
// a cold `cat` no faster, 322-400 against 329-430 MB/s). O_DIRECT wants aligned memory, offsets and
// lengths; the addon's writeDirect copies the blocks into aligned memory of its own
// (fs/native/direct-write.c), and the unaligned tail of a file (its last partial 4 KiB) is written as
// usual.
// Buffered reads of the same file (a reader of its present blocks, with the kernel's read-ahead
// running into the range being written) stay right: the kernel drops the range's pages before and
// after each direct write, waiting for any read in flight on them, and fails that only for pages
// mapped into memory, which a file still being written never is (passthrough, and so mmap through
// the mount, comes only once a file is complete). A block is marked present after its write returned.
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { log } from '../daemon/log.js'

/** Writes `parts` at `pos` through a descriptor opened O_DIRECT (the addon's writeDirect). */
export type WriteDirect = (fd: number, pos: number, parts: Buffer[]) => Promise<void>

/** Offsets and lengths written O_DIRECT are multiples of this (512- and 4096-byte sectors alike). */
export const DIRECT_ALIGN = 4096

/** Whether a store writes around the page cache: off without the addon, or once a file system refused. */
export class DirectWrites {
  constructor(
    private writeDirect: WriteDirect | undefined,
    /** Told the bytes of every direct write done. */
    readonly written: (bytes: number) => void = () => undefined,
  ) {}

  get on(): boolean {
    return this.writeDirect !== undefined
  }

  /** `fh`'s file opened again O_DIRECT; undefined when direct writes are off or the file system refuses them. */
  async open(fh: FileHandle): Promise<DirectFile | undefined> {
    const writeDirect = this.writeDirect
    if (!writeDirect) return undefined
    let direct: FileHandle
    try {
      // Through /proc/self/fd: the very file `fh` has open, whatever its path has become meanwhile.
      direct = await open(`/proc/self/fd/${fh.fd}`, constants.O_WRONLY | constants.O_DIRECT)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EINVAL') this.refuse(err as NodeJS.ErrnoException)
      return undefined // this time (out of descriptors, say): written through the page cache
    }
    // `fh` may have been closed meanwhile and its number taken by another file: then not this one.
    const [a, b] = await Promise.all([fh.stat(), direct.stat()]).catch(() => [undefined, undefined])
    if (!a || !b || a.ino !== b.ino || a.dev !== b.dev) {
      await direct.close().catch(() => undefined)
      return undefined
    }
    return new DirectFile(direct, writeDirect)
  }

  /** Direct writes are turned off for good (the file system refuses them), with a log line. */
  refuse(err: NodeJS.ErrnoException): void {
    if (!this.writeDirect) return
    this.writeDirect = undefined
    log.info('the cache disk refuses writes around the page cache (O_DIRECT); syncs write through it', { error: err.message })
  }
}

/** A data file's O_DIRECT descriptor: closed only once no write on it is in flight. */
export class DirectFile {
  private inFlight = new Set<Promise<void>>()
  private closing: Promise<void> | undefined

  constructor(
    private fh: FileHandle,
    private writeDirect: WriteDirect,
  ) {}

  write(pos: number, parts: Buffer[]): Promise<void> {
    if (this.closing) return Promise.reject(Object.assign(new Error('the cache file was closed'), { code: 'EBADF' }))
    const p = this.writeDirect(this.fh.fd, pos, parts)
    this.inFlight.add(p)
    const done = () => void this.inFlight.delete(p)
    p.then(done, done)
    return p
  }

  /** Closes the descriptor after the writes in flight (its number must not go to another file under them). */
  close(): Promise<void> {
    this.closing ??= Promise.allSettled([...this.inFlight]).then(() => this.fh.close())
    return this.closing
  }
}

/**
 * Writes `parts` at `pos` for later: the aligned head through `direct`, the tail (and all of it once
 * the file system refused direct writes, even through a descriptor opened before) through `buffered`.
 */
export async function writeForLater(
  direct: DirectFile,
  writes: DirectWrites,
  pos: number,
  parts: Buffer[],
  buffered: (pos: number, parts: Buffer[]) => Promise<void>,
): Promise<void> {
  const [head, headLen, tail] = splitAligned(pos, parts)
  if (!writes.on || headLen === 0) return buffered(pos, parts)
  await Promise.all([
    direct.write(pos, head).then(
      () => writes.written(headLen),
      (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EINVAL') throw err
        writes.refuse(err) // an alignment this file system does not take
        return buffered(pos, head)
      },
    ),
    tail.length ? buffered(pos + headLen, tail) : undefined,
  ])
}

/** `parts` cut at the last multiple of DIRECT_ALIGN: [head, its length, tail]; all tail when `pos` is unaligned. */
export function splitAligned(pos: number, parts: Buffer[]): [Buffer[], number, Buffer[]] {
  const total = parts.reduce((n, p) => n + p.length, 0)
  const headLen = pos % DIRECT_ALIGN ? 0 : total - (total % DIRECT_ALIGN)
  if (headLen === total) return [parts, total, []]
  const head: Buffer[] = []
  const tail: Buffer[] = []
  let at = 0
  for (const p of parts) {
    if (at + p.length <= headLen) head.push(p)
    else if (at >= headLen) tail.push(p)
    else {
      head.push(p.subarray(0, headLen - at))
      tail.push(p.subarray(headLen - at))
    }
    at += p.length
  }
  return [head, headLen, tail]
}
