// The cache's size bound as numbers: bytes on record, bytes reserved for blocks being written, bytes
// of evicted files still being unlinked, and the free space of the cache disk (looked at every 2 s).
// The store (block-store.ts) decides what to evict; this says how much room there is.
import { statfs } from 'node:fs/promises'
import { log } from '../daemon/log.js'
import { formatSize } from '../daemon/units.js'

export class SpaceBound {
  /** Size bound for cached data, bytes. */
  readonly limit: number
  /** Eviction frees space down to this many bytes. */
  readonly lowWater: number
  /** Free space to leave on the cache disk, bytes. */
  readonly minFree: number
  /** Bytes of cached data on record. */
  used = 0
  /** Bytes reserved for blocks being written. */
  reserved = 0
  /** Bytes of evicted files whose data is still being unlinked (off the record, still on disk). */
  freeing = 0
  diskFree = Infinity
  private dir: string
  private timer: NodeJS.Timeout | undefined
  private lastNoRoomLog = 0

  constructor(dir: string, opts: { limit: number; lowWater?: number; minFree?: number }) {
    this.dir = dir
    this.limit = opts.limit
    this.lowWater = Math.floor(opts.limit * (opts.lowWater ?? 0.9))
    this.minFree = opts.minFree ?? 0
    void this.refreshDiskFree()
    this.timer = setInterval(() => void this.refreshDiskFree(), 2000)
    this.timer.unref()
  }

  /** Room the bound and the disk floor leave for one more write of `len` bytes (negative: short). */
  room(len: number): number {
    // Bytes of evicted files still being unlinked are off the record but still on disk: counted.
    return Math.min(this.limit - this.used - this.freeing - this.reserved - len, this.diskFree - this.minFree - this.reserved - len)
  }

  /** Says (at most every 10 s) why a block of `len` bytes for `path` is not stored. */
  logNoRoom(len: number, path: string): void {
    const now = Date.now()
    if (now - this.lastNoRoomLog <= 10_000) return
    this.lastNoRoomLog = now
    const diskShort = this.diskFree - this.minFree - this.reserved - len < 0
    const fields = {
      used: formatSize(this.used),
      limit: formatSize(this.limit),
      diskFree: formatSize(this.diskFree),
      keptFree: formatSize(this.minFree),
      path,
    }
    if (diskShort)
      log.warn(
        'the cache disk is nearly full and nothing more can be evicted; serving from memory without storing (free space on the disk or lower --cache-size)',
        fields,
      )
    else log.warn('cache full of pinned or open files; serving from memory without storing', fields)
  }

  private async refreshDiskFree(): Promise<void> {
    try {
      const s = await statfs(this.dir)
      this.diskFree = s.bavail * s.bsize
    } catch {
      // keep the last value
    }
  }

  stop(): void {
    clearInterval(this.timer)
  }
}
