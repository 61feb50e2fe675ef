// Writes of one cache file's blocks, gathered into one writev per run of consecutive blocks. A
// fetch delivers a sequential file in 64 KiB blocks; Node's fs costs tens of µs of the event loop
// per call whatever its size, so one call per block took a quarter of the loop during a cold `cat`
// (CPU profile of the daemon). Blocks queued in the same turn of the event loop (a burst of body
// chunks from the network) are written together; each caller still learns the fate of its own
// block.
import type { FileHandle } from 'node:fs/promises'

/** At most this many buffers per writev (Linux's IOV_MAX is 1024). */
const MAX_PARTS = 1024

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

  /** Writes `parts` at `pos` of `fh`, with other writes queued in this turn where they are adjacent. */
  write(fh: FileHandle, pos: number, parts: Buffer[]): Promise<void> {
    const length = parts.reduce((n, p) => n + p.length, 0)
    return new Promise<void>((resolve, reject) => {
      this.queued.push({ fh, pos, parts, length, done: (err) => (err ? reject(err) : resolve()) })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => void this.flush())
      }
    })
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
        try {
          await writeAll(
            g[0]!.fh,
            g.flatMap((q) => q.parts),
            g[0]!.pos,
          )
          for (const q of g) q.done()
        } catch (err) {
          for (const q of g) q.done(err as Error)
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
