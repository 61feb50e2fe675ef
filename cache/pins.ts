// Pinned files: whatever is cached of them stays, exempt from eviction. Their full sizes count
// against the pin cap (a pinned file is meant to be fetched whole); beyond it a request is refused as
// a whole, before anything changes.
import { cacheKey } from './cached-file.js'
import { entriesUnder, type FileIndex } from './cache-entry.js'
import type { BlockRecord } from './block-record.js'
import { UserError } from '../daemon/errors.js'
import { formatSize } from '../daemon/units.js'

export interface PinRequest {
  rel: string
  size: number
}

export class Pins {
  /** Cap on the total size of pinned files, bytes. */
  readonly limit: number
  /** Full sizes of the pinned files, added up. */
  size = 0
  private index: FileIndex
  private record: BlockRecord
  private evictKey: (key: string) => void
  private now: () => number

  constructor(limit: number, index: FileIndex, record: BlockRecord, evictKey: (key: string) => void, now: () => number) {
    this.limit = limit
    this.index = index
    this.record = record
    this.evictKey = evictKey
    this.now = now
  }

  pin(files: PinRequest[]): { pinned: number; already: number } {
    const add = files.filter((f) => !this.index.peek(cacheKey(f.rel))?.pinned)
    const unique = new Map(add.map((f) => [f.rel, f]))
    const extra = [...unique.values()].reduce((a, f) => a + f.size, 0)
    if (this.size + extra > this.limit) {
      throw new UserError(
        `cannot pin ${unique.size} files (${formatSize(extra)}): pinned files would take ${formatSize(this.size + extra)}, over the pin cap of ${formatSize(this.limit)} (${formatSize(this.size)} pinned now); unpin some or raise --pin-size`,
      )
    }
    const now = this.now()
    this.record.transaction(() => {
      for (const f of unique.values()) {
        const key = cacheKey(f.rel)
        let e = this.index.peek(key)
        if (e && e.size !== f.size) {
          // Cached at another size: nothing of it can be trusted.
          this.evictKey(key)
          e = undefined
        }
        if (!e) {
          e = { key, path: f.rel, size: f.size, bytes: 0, pinned: false, atime: now }
          this.index.set(key, e)
        }
        e.pinned = true
        this.size += e.size
        this.record.setPinned(e, true)
      }
    })
    return { pinned: unique.size, already: files.length - add.length }
  }

  /** Unpins files (by exact path) and everything pinned under directory paths. */
  unpin(paths: string[]): number {
    let n = 0
    this.record.transaction(() => {
      for (const p of paths) {
        for (const e of entriesUnder(this.index, p)) {
          const live = this.index.peek(e.key)!
          if (!live.pinned) continue
          live.pinned = false
          this.size -= live.size
          this.record.setPinned(live, false)
          // Pinned and never cached: nothing left to remember.
          if (live.bytes === 0) {
            this.index.delete(live.key)
            this.record.deleteFile(live.key)
          }
          n++
        }
      }
    })
    return n
  }
}
