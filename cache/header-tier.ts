// The header tier: FITS header bytes stay cached in preference to data, so a header survey stays
// local while big reads churn the cache. When LRU eviction picks a file whose header ranges are known
// (the daemon injects them: the recorded HDU index, fs/facts.ts), the file is not deleted: its blocks
// covering those ranges are copied into a new data file renamed over the old one (Node cannot punch
// holes), its other blocks leave the record, and it joins the tier. The tier has a small bound of its
// own; over it, its least recently used files are deleted whole. A tier file read again from its data
// blocks (a block written to it) leaves the tier: it is an ordinary cached file again.
// Crash safety: the record is changed first, so a crash between leaves it naming only blocks the old
// data file holds at the same offsets (its extra bytes are unrecorded data, which the check after a
// start evicts), or a half-written `<key>.tier` file, an orphan the same check removes.
import { constants } from 'node:fs'
import { open, rename } from 'node:fs/promises'
import type { BlockRecord, BlockRow } from './block-record.js'
import type { CacheEntry, FileIndex } from './cache-entry.js'
import { lruVictims } from './eviction.js'
import type { LoadedFiles } from './loaded-files.js'
import { openCacheFile, removeCacheFile } from './open-cache-file.js'
import type { SpaceBound } from './space.js'
import type { StoreCounters } from './metrics.js'
import { log } from '../daemon/log.js'

/** Byte ranges ([offset, length]) of a file to keep when it is evicted: its headers; undefined for none. */
export type KeepOnEvict = (relPath: string) => [number, number][] | undefined

/** The tier's bound when none is given: 2% of the cache's, at most 256 MiB. */
export function defaultTierLimit(cacheLimit: number): number {
  return Math.min(Math.floor(cacheLimit * 0.02), 256 << 20)
}

/** What the tier needs of its store (block-store.ts). */
export interface TierStore {
  readonly blockSize: number
  readonly index: FileIndex
  readonly record: BlockRecord
  readonly space: SpaceBound
  readonly loaded: LoadedFiles
  /** The store's figures (bytesEvicted counts what a demotion frees). */
  readonly count: StoreCounters
  /** Data files being removed or rewritten, by key: a new open of the key waits for them. */
  readonly unlinking: Map<string, Promise<void>>
  dataPath(key: string): string
  evictKey(key: string): Promise<void>
}

/** Of `rows` (a file's blocks on record), those holding any byte of `ranges`. */
export function blocksCovering(rows: BlockRow[], ranges: [number, number][], blockSize: number): BlockRow[] {
  return rows.filter((r) => ranges.some(([off, len]) => len > 0 && off < (r.idx + 1) * blockSize && off + len > r.idx * blockSize))
}

/** The suffix of a data file's rewrite in progress (`<key>.tier`); the cache's check leaves it alone while its key is busy. */
export const TIER_SUFFIX = '.tier'

/** Copies the blocks `keep` of a data file into a new one renamed over it (same offsets, sparse elsewhere). */
async function rewriteKeeping(path: string, keep: BlockRow[], blockSize: number): Promise<void> {
  const tmp = `${path}${TIER_SUFFIX}`
  await removeCacheFile(tmp).catch(() => undefined) // left by a crash
  const { fh: src } = await openCacheFile(path, false)
  try {
    const dst = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      const buf = Buffer.allocUnsafe(blockSize)
      for (const r of keep) {
        const { bytesRead } = await src.read(buf, 0, r.len, r.idx * blockSize)
        if (bytesRead !== r.len) throw new Error(`block ${r.idx} is short on disk`)
        await dst.write(buf, 0, r.len, r.idx * blockSize)
      }
    } finally {
      await dst.close()
    }
  } finally {
    await src.close()
  }
  await rename(tmp, path)
}

/** Of a file's blocks on record (`rows`), those an eviction keeps (none: it goes whole). */
interface Kept {
  keep: BlockRow[]
  rows: BlockRow[]
}

export class HeaderTier {
  /** The tier's bound, bytes. */
  readonly limit: number
  /** Where a file's headers are; unset, eviction deletes whole files. */
  keep: KeepOnEvict | undefined
  private store: TierStore
  /** Keys of the tier's files (an entry evicted since, or grown out of the tier, is dropped when met). */
  private members = new Set<string>()

  constructor(store: TierStore, limit: number) {
    this.store = store
    this.limit = limit
    for (const e of store.index.values()) if (e.tier) this.members.add(e.key)
  }

  /** The tier's entries (pruning keys that left it). */
  private entries(): CacheEntry[] {
    const out: CacheEntry[] = []
    for (const key of this.members) {
      const e = this.store.index.peek(key)
      if (e?.tier) out.push(e)
      else this.members.delete(key)
    }
    return out
  }

  /** Bytes of cached data in the tier. */
  get bytes(): number {
    return this.entries().reduce((n, e) => n + e.bytes, 0)
  }

  /** The blocks an eviction of `e` keeps (none: it goes whole). */
  private kept(e: CacheEntry): Kept {
    const ranges = e.tier || e.pinned || this.limit <= 0 ? undefined : this.keep?.(e.path)
    if (!ranges?.length) return { keep: [], rows: [] }
    const rows = this.store.record.blocks(e.key)
    return { keep: blocksCovering(rows, ranges, this.store.blockSize), rows }
  }

  /** Evicts least recently used files (not `except`) to free `want` bytes: headers kept, as evict() says. */
  evictLru(want: number, except: string): void {
    // What each candidate keeps is looked up once (its index and its block rows), for choosing and evicting.
    const kept = new Map<string, Kept>()
    const frees = (e: CacheEntry) => {
      const k = this.kept(e)
      kept.set(e.key, k)
      return e.bytes - k.keep.reduce((n, r) => n + r.len, 0)
    }
    for (const key of lruVictims(this.store.index, want, except, (k) => this.store.loaded.inUse(k), { frees }))
      void this.evict(key, kept.get(key))
  }

  /** LRU eviction of a file: its header blocks kept in the tier, or the whole file deleted. */
  evict(key: string, known?: Kept): Promise<void> {
    const { index, record, space, loaded, unlinking } = this.store
    const e = index.peek(key)
    const { keep, rows } = e ? (known ?? this.kept(e)) : { keep: [], rows: [] }
    if (!e || keep.length === 0) return this.store.evictKey(key)
    const kept = new Set(keep.map((r) => r.idx))
    const dropped = rows.filter((r) => !kept.has(r.idx))
    const freed = dropped.reduce((n, r) => n + r.len, 0)
    // The record first: from here on it names only blocks both the old and the new data file hold.
    const droppedIdx = dropped.map((r) => r.idx)
    if (!record.demote(key, droppedIdx)) return this.store.evictKey(key)
    e.bytes -= freed
    e.tier = true
    this.members.add(key)
    space.used -= freed
    this.store.count.add('bytesEvicted', freed)
    // The loaded object (not in use: eviction never picks those) is let go of now; the next use
    // loads the record anew (a new presence map; the data file opened once it is rewritten).
    const f = loaded.peek(key)
    f?.retireShared()
    loaded.drop(key)
    const forgotten = f?.closeFd()
    space.freeing += freed
    const prev = unlinking.get(key) ?? Promise.resolve()
    const p = prev
      .then(() => forgotten)
      .then(() => (dropped.length ? rewriteKeeping(this.store.dataPath(key), keep, this.store.blockSize) : undefined))
      .then(() => {
        space.diskFree += freed
      })
      .catch((err: Error) => {
        log.warn('cannot keep the headers of an evicted cache file; it is evicted whole', { path: e.path, error: err.message })
        void this.store.evictKey(key) // not awaited: it runs after this rewrite, which must end first
      })
      .finally(() => {
        space.freeing -= freed
        if (unlinking.get(key) === p) unlinking.delete(key)
      })
    unlinking.set(key, p)
    this.trim()
    return p
  }

  /** Deletes the tier's least recently used files while it is over its bound. */
  private trim(): void {
    const members = this.entries()
    let over = members.reduce((n, e) => n + e.bytes, 0) - this.limit
    if (over <= 0) return
    members.sort((a, b) => a.atime - b.atime)
    for (const e of members) {
      if (over <= 0) break
      if (this.store.loaded.inUse(e.key)) continue
      over -= e.bytes
      void this.store.evictKey(e.key)
    }
  }

  /** A data block was written to a tier file: it is an ordinary cached file again. */
  grew(e: CacheEntry): void {
    if (!e.tier) return
    e.tier = false
    this.members.delete(e.key)
    this.store.record.setTier(e.key, false)
  }
}
