// The cache's writes through the page cache (one batch for the whole store, so the bound on writes
// under way holds for all files together), gathered into one write per run of consecutive blocks of
// a file. A fetch delivers a sequential file in 64 KiB blocks; Node's fs costs tens of µs of the
// event loop per call whatever its size, so one call per block took a quarter of the loop during a
// cold `cat` (CPU profile of the daemon). Blocks queued in the same turn of the event loop (a burst of body
// chunks from the network) are written together; each caller still learns the fate of its own
// block. With the addon, a run is written by a pool thread in 64 KiB pieces (fs/native/
// direct-write.c says why: large writes make large page-cache folios, which cost five times more
// kernel time here); without it, by one writev.
import type { FileHandle } from 'node:fs/promises'
import type { WriteDirect } from './direct-file.js'

/** At most this many buffers per writev (Linux's IOV_MAX is 1024). */
const MAX_PARTS = 1024

/**
 * Writes under way at once. Each takes one of libuv's four pool threads, which also read the cache
 * for readers the plane sent to JavaScript: with every thread writing a burst of blocks, such a
 * read waited 5 to 27 ms (traced during a cold `cat`). Two threads write as fast as two cores can.
 */
const MAX_WRITING = 2

interface Queued {
  fh: FileHandle
  pos: number
  parts: Buffer[]
  length: number
  done: (err?: Error) => void
}

export class WriteBatch {
  private queued: Queued[] = []
  private scheduled = false
  /** Per descriptor: writes asked for and not ended yet, and who waits for there to be none. */
  private busy = new Map<FileHandle, { n: number; idle: (() => void)[] }>()
  /** Writes under way, and the groups waiting for one of them to end. */
  private writing = 0
  private waiting: (() => void)[] = []

  constructor(private writePieces?: WriteDirect) {}

  /** Writes `parts` at `pos` of `fh`, with other writes queued in this turn where they are adjacent. */
  write(fh: FileHandle, pos: number, parts: Buffer[]): Promise<void> {
    const length = parts.reduce((n, p) => n + p.length, 0)
    let b = this.busy.get(fh)
    if (!b) this.busy.set(fh, (b = { n: 0, idle: [] }))
    b.n++
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        if (--b.n === 0) {
          this.busy.delete(fh)
          for (const wake of b.idle) wake()
        }
        if (err) reject(err)
        else resolve()
      }
      this.queued.push({ fh, pos, parts, length, done })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => void this.flush())
      }
    })
  }

  /**
   * Resolves once no write to `fh` is queued or under way: the addon writes by descriptor number, so
   * `fh` may be closed (and its number taken by another file) only then.
   */
  settled(fh: FileHandle): Promise<void> {
    const b = this.busy.get(fh)
    return b ? new Promise((resolve) => b.idle.push(resolve)) : Promise.resolve()
  }

  /** Resolves when this write may start (MAX_WRITING). */
  private turn(): Promise<void> {
    if (this.writing < MAX_WRITING) {
      this.writing++
      return Promise.resolve()
    }
    return new Promise((start) => this.waiting.push(start))
  }

  /** A write ended: its turn passes to the next waiting, first come first served. */
  private endTurn(): void {
    const next = this.waiting.shift()
    if (next) next()
    else this.writing--
  }

  private async flush(): Promise<void> {
    const batch = this.queued.sort((a, b) => a.pos - b.pos)
    this.queued = []
    this.scheduled = false
    const groups: Queued[][] = []
    let parts = 0 // buffers in the last group
    for (const q of batch) {
      const g = groups[groups.length - 1]
      const last = g?.[g.length - 1]
      if (g && last!.fh === q.fh && last!.pos + last!.length === q.pos && parts + q.parts.length <= MAX_PARTS) {
        g.push(q)
        parts += q.parts.length
      } else {
        groups.push([q])
        parts = q.parts.length
      }
    }
    await Promise.all(
      groups.map(async (g) => {
        await this.turn()
        try {
          const parts = g.flatMap((q) => q.parts)
          await (this.writePieces ? this.writePieces(g[0]!.fh.fd, g[0]!.pos, parts) : writeAll(g[0]!.fh, parts, g[0]!.pos))
          for (const q of g) q.done()
        } catch (err) {
          for (const q of g) q.done(err as Error)
        } finally {
          this.endTurn()
        }
      }),
    )
  }
}

/** One writev of `parts` at `pos`; a short write continues with what is left. */
async function writeAll(fh: FileHandle, parts: Buffer[], pos: number): Promise<void> {
  let rest = parts
  while (rest.length) {
    const { bytesWritten } = await fh.writev(rest, pos)
    if (bytesWritten === 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO' })
    pos += bytesWritten
    let skip = bytesWritten
    while (rest.length && skip >= rest[0]!.length) {
      skip -= rest[0]!.length
      rest = rest.slice(1)
    }
    if (skip > 0) rest = [rest[0]!.subarray(skip), ...rest.slice(1)]
  }
}
