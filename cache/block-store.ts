// The on-disk cache: one sparse file per archive file (cached-file.ts), filled block by block, and a SQLite record
// (WAL) of which blocks are present with each block's Adler-32. Rules that keep it honest:
// - a block is recorded only after its bytes were written, so a crash leaves at worst bytes nobody
//   trusts, never a record of bytes that are not there;
// - after every daemon start a block is checked against its recorded checksum the first time it is
//   read, and a block that fails is dropped (and then fetched again), never served;
// - a file whose blocks are all present is checked against the archive's Adler-32 (combined from the
//   block checksums, so without reading it again); a mismatch drops the whole file.
// The size bound: space is reserved before a block is written; when the bound (or the free-space
// floor of the cache disk) would be crossed, whole files are evicted, least recently used first, down
// to a low-water mark (a file with FITS headers keeps them, in the header tier: header-tier.ts). Files
// in use and pinned files are never evicted; when nothing can go, the block is served from memory and
// not stored. Whole files are the unit because Node cannot punch holes.
// Cache file names are hashes of the archive path, so no row of the metadata DB can name a file
// outside the cache dir; and nothing in the cache dir is reached through a link (openCacheFile): a
// link planted at a data file or a data/xx directory is removed, never written through or cleaned
// through. A data file must have no other name: one that gained a hardlink (`desfs get --mode
// hardlink` of older versions made them) could be edited through it, so the cache lets go of it
// (drops its blocks, unlinks its own name; the other name keeps the bytes) and fetches it again.
// The record itself is block-record.ts, the bound's figures space.ts, the check after a crash
// crash-check.ts; this module decides: what is loaded, held, recorded, evicted and pinned.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { CachedFile, cacheKey, type FileStore } from './cached-file.js'
import { EvictListeners, type BlockCache } from './block-cache.js'
import { BlockRecord } from './block-record.js'
import { countEntries, entriesUnder, newFileIndex, type CacheEntry } from './cache-entry.js'
import { pickForEviction, type EvictionAnswer } from './eviction.js'
import { removeCacheFile } from './open-cache-file.js'
import { LoadedFiles } from './loaded-files.js'
import { Pins, type PinRequest } from './pins.js'
import { SpaceBound } from './space.js'
import { WriteErrorLog } from './write-errors.js'
import { checkAgainstRecord } from './crash-check.js'
import { HeaderTier, defaultTierLimit } from './header-tier.js'
import { DEFAULT_BLOCK_SIZE, type StoreOptions, type StoreStats } from './store-options.js'
import { DirectWrites } from './direct-file.js'
import { WriteBatch } from './write-batch.js'
import { cacheMetrics, storeCounters, type StoreCounters } from './metrics.js'
import { log } from '../daemon/log.js'
import { ensureOwnDirSync } from '../daemon/state-dir.js'

// The cached file and the safe open of its data file live beside the store; others take them from here.
export { CachedFile, cacheKey, type PresenceMaps } from './cached-file.js'
export { openCacheFile } from './open-cache-file.js'
export type { PinRequest } from './pins.js'
export type { StoreOptions, StoreStats } from './store-options.js'

export class BlockStore implements FileStore, BlockCache {
  readonly dir: string
  readonly blockSize: number
  readonly linkCheckMs: number
  /** Data files being removed, by key: a new data file for the key is opened only after. */
  readonly unlinking = new Map<string, Promise<void>>()
  readonly directWrites: DirectWrites
  readonly writes: WriteBatch
  readonly stats: StoreStats
  private count: StoreCounters
  private record: BlockRecord
  private space: SpaceBound
  /** Every file with a record, least recently used first. */
  private index = newFileIndex()
  private loaded = new LoadedFiles()
  private pins: Pins
  private cleanupTimer: NodeJS.Timeout | undefined
  private closed = false
  private writeErrors = new WriteErrorLog()
  /** Told the key of every evicted file (the fetcher forgets its blocks in memory). */
  private evictListeners = new EvictListeners()
  /** Header blocks kept when their files are evicted; the daemon sets `tier.keep`. */
  readonly tier: HeaderTier

  constructor(dir: string, opts: StoreOptions) {
    this.dir = dir
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    ensureOwnDirSync(join(dir, 'data'))
    this.record = new BlockRecord(dir, opts.blockSize ?? DEFAULT_BLOCK_SIZE, {
      entry: (key) => this.index.peek(key),
      writeError: (err, what) => this.noteWriteError(undefined, err, what),
      // Not on record: not in the cache either (the bytes stay on disk until the file is evicted).
      lost: (blocks) => {
        for (const b of blocks) {
          const f = this.loaded.peek(b.key)
          if (f?.present.has(b.idx)) this.dropBlocks(f, [b.idx], false)
        }
      },
    })
    this.blockSize = this.record.blockSize
    this.count = storeCounters(this.blockSize)
    this.stats = this.count.values
    this.space = new SpaceBound(dir, opts)
    this.pins = new Pins(
      Math.min(opts.pinLimit ?? Math.floor(opts.limit / 2), opts.limit),
      this.index,
      this.record,
      (key) => void this.evictKey(key),
      () => this.clock(),
    )
    this.linkCheckMs = opts.linkCheckMs ?? 1000
    this.directWrites = new DirectWrites(opts.writeDirect, (n) => this.count.add('directBytes', n))
    this.writes = new WriteBatch(opts.writePieces)
    // The LRU order as it was: oldest access first, so the most recent end up most recent.
    for (const r of this.record.files()) {
      this.index.set(r.key, r)
      this.space.used += r.bytes
      if (r.pinned) this.pins.size += r.size
      this.lastAtime = Math.max(this.lastAtime, r.atime)
    }
    const { index, record, space, loaded, unlinking, count } = this
    const parts = { blockSize: this.blockSize, index, record, space, loaded, unlinking, count, dataPath: (k: string) => this.dataPath(k) }
    this.tier = new HeaderTier({ ...parts, evictKey: (k) => this.evictKey(k) }, opts.headerTierLimit ?? defaultTierLimit(opts.limit))
    cacheMetrics.bind(this)
    // Data files are checked against the record in the background, never at start-up.
    this.cleanupTimer = setTimeout(() => void this.cleanup(), opts.cleanupDelayMs ?? 5000)
    this.cleanupTimer.unref()
  }

  onEvict(listener: (key: string) => void): void {
    this.evictListeners.add(listener)
  }

  dataPath(key: string): string {
    return join(this.dir, 'data', key.slice(0, 2), key)
  }

  /** Bytes of cached data on record. */
  get bytes(): number {
    return this.space.used
  }

  get limit(): number {
    return this.space.limit
  }

  get lowWater(): number {
    return this.space.lowWater
  }

  /** The cached file for an archive path (shared between all its users), loading its record once. */
  file(relPath: string, size: number, adler32: string | null): CachedFile {
    const key = cacheKey(relPath)
    let f = this.loaded.get(key)
    if (f && f.size !== size && f.users === 0) {
      // The archive said another size than when we cached it: nothing cached can be trusted.
      log.warn('archive file changed size; its cached copy is dropped', { path: relPath, was: f.size, now: size })
      void this.evictKey(key)
      this.loaded.drop(key)
      f = undefined
    }
    if (!f) {
      f = new CachedFile(this, relPath, size, adler32)
      const entry = this.index.peek(key)
      if (entry && entry.size !== size) this.evictKey(key)
      else {
        for (const row of this.record.blocks(key)) {
          if (row.idx < f.blocks && row.len === f.blockLength(row.idx)) f.present.set(row.idx, { adler: row.adler, len: row.len })
        }
        f.wholeVerified = this.record.verified(key) && f.complete
      }
      this.loaded.add(f)
    }
    if (adler32 && !f.adler32) f.adler32 = adler32
    return f
  }

  /** Marks a file in use (an open handle, a fetch): it cannot be evicted until released. */
  hold(f: CachedFile): void {
    this.loaded.hold(f)
  }

  release(f: CachedFile): void {
    this.loaded.release(f, this.closed)
  }

  /** Access times strictly increase, so two uses in the same millisecond keep their order across a restart. */
  private lastAtime = 0
  private clock(): number {
    this.lastAtime = Math.max(Date.now(), this.lastAtime + 1)
    return this.lastAtime
  }

  /** Marks a file as used now (for the LRU order); persisted with the next flush. */
  touch(f: CachedFile): void {
    const e = this.index.get(f.key)
    if (!e) return
    if (e.atime === this.lastAtime) return // already the most recent
    e.atime = this.clock()
    this.record.touch(f.key)
  }

  /** Bytes cached of an archive path. */
  cachedBytes(relPath: string): number {
    return this.index.peek(cacheKey(relPath))?.bytes ?? 0
  }

  // --- space ---------------------------------------------------------------------------------

  /**
   * Reserves room for a block, evicting least recently used files down to the low-water mark when
   * needed. False when no room can be made (everything left is pinned or in use).
   */
  async reserve(f: CachedFile, len: number): Promise<boolean> {
    if (this.closed) return false
    if (this.space.room(len) < 0) {
      // What is being unlinked already will free its share; evict only for the rest, then wait for
      // every unlink in progress (also ones another writer started), so the disk never holds more.
      const short = -this.space.room(len) - this.space.freeing
      if (short > 0) this.tier.evictLru(Math.max(this.limit - this.lowWater, short), f.key)
      if (this.unlinking.size) await Promise.all([...this.unlinking.values()])
      if (this.space.room(len) < 0) {
        this.count.add('notStored')
        this.space.logNoRoom(len, f.relPath)
        return false
      }
    }
    this.space.reserved += len
    return true
  }

  unreserve(len: number): void {
    this.space.reserved -= len
  }

  /** Removes a file from the cache: record first (a crash then leaves an orphan, cleaned later), then data. */
  private evictKey(key: string): Promise<void> {
    const e = this.index.peek(key)
    const f = this.loaded.peek(key)
    this.record.forget(key)
    if (e) {
      this.index.delete(key)
      this.space.used -= e.bytes
      if (e.pinned) this.pins.size -= e.size
      this.count.add('filesEvicted')
      this.count.add('bytesEvicted', e.bytes)
    }
    this.evictListeners.tell(key)
    const bytes = e?.bytes ?? 0
    this.space.freeing += bytes
    const prev = this.unlinking.get(key) ?? Promise.resolve()
    const p = prev
      .then(() => f?.forget())
      .then(() => removeCacheFile(this.dataPath(key)))
      .then(() => {
        this.space.diskFree += bytes
      })
      .catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') log.warn('cannot remove a cache file', { file: this.dataPath(key), error: err.message })
      })
      .finally(() => {
        this.space.freeing -= bytes
        if (this.unlinking.get(key) === p) this.unlinking.delete(key)
      })
    this.unlinking.set(key, p)
    return p
  }

  // --- records ------------------------------------------------------------------------------

  recordBlock(f: CachedFile, idx: number, adler: number, len: number): void {
    this.space.reserved -= len
    this.space.used += len
    this.space.diskFree -= len
    this.count.add('blocksWritten')
    let e = this.index.get(f.key)
    if (!e) {
      e = { key: f.key, path: f.relPath, size: f.size, bytes: 0, pinned: false, atime: this.clock() }
      this.index.set(f.key, e)
    }
    e.bytes += len
    this.tier.grew(e)
    this.record.addBlock(f.key, { idx, adler, len })
  }

  /** Writes pending block records and access times now. */
  flush(): void {
    this.record.flush()
  }

  recordVerified(f: CachedFile): void {
    this.record.setVerified(f.key)
  }

  dropBlocks(f: CachedFile, idxs: number[], persist = true): void {
    if (persist) this.flush()
    const e = this.index.peek(f.key)
    const dropped: number[] = []
    for (const idx of idxs) {
      const rec = f.present.get(idx)
      if (!rec) continue
      f.present.delete(idx)
      f.unverify(idx)
      this.space.used -= rec.len
      if (e) e.bytes -= rec.len
      this.count.add('blocksDropped')
      dropped.push(idx)
    }
    const wasVerified = f.wholeVerified
    f.wholeVerified = false
    if (!persist || (dropped.length === 0 && !wasVerified)) return
    this.record.dropBlocks(f.key, dropped, wasVerified)
  }

  noteWriteError(f: CachedFile | undefined, err: NodeJS.ErrnoException, what = 'the cache'): void {
    this.count.add('writeErrors', 1, err.code)
    this.writeErrors.log(f?.relPath, err, what)
  }

  // --- the cache API (control routes, sync) -----------------------------------------------------

  /** Figures for `desfs cache stats`, status and metrics. */
  summary(): Record<string, number | string> {
    const { files, pinnedFiles, pinnedBytes } = countEntries(this.index)
    return {
      dir: this.dir,
      blockSize: this.blockSize,
      limit: this.limit,
      lowWater: this.lowWater,
      bytes: this.space.used,
      files,
      pinnedFiles,
      pinnedBytes,
      pinnedSize: this.pins.size,
      pinLimit: this.pins.limit,
      minFree: this.space.minFree,
      diskFree: Number.isFinite(this.space.diskFree) ? this.space.diskFree : -1,
      inUse: this.loaded.inUseCount,
      headerTierBytes: this.tier.bytes,
      headerTierLimit: this.tier.limit,
      ...this.stats,
    }
  }

  /** Entries whose path is `prefix` or under it ('' for all), sorted by path. */
  entries(prefix = ''): CacheEntry[] {
    return entriesUnder(this.index, prefix)
  }

  inUse(relPath: string): boolean {
    return this.loaded.inUse(cacheKey(relPath))
  }

  /** Pins files (pins.ts); refused as a whole beyond the pin cap. */
  pin(files: PinRequest[]): { pinned: number; already: number } {
    return this.pins.pin(files)
  }

  /** Unpins files (by exact path) and everything pinned under directory paths. */
  unpin(paths: string[]): number {
    return this.pins.unpin(paths)
  }

  /**
   * Evicts the cached files at or under `paths` now. Files in use are skipped; pinned ones too
   * unless `includePinned`. With `dryRun` nothing changes and the answer says what would.
   */
  async evict(paths: string[], opts: { dryRun?: boolean; includePinned?: boolean } = {}): Promise<EvictionAnswer> {
    const { keys, answer } = pickForEviction(
      paths.map((p) => this.entries(p)),
      opts.includePinned ?? false,
      (k) => this.loaded.inUse(k),
    )
    if (!opts.dryRun) await Promise.all(keys.map((k) => this.evictKey(k)))
    return answer
  }

  /** Checks data files against the record (crash-check.ts), now. */
  cleanup(): Promise<{ orphans: number; evicted: number }> {
    return checkAgainstRecord({
      dir: this.dir,
      blockSize: this.blockSize,
      isClosed: () => this.closed,
      busy: (key) => this.unlinking.has(key) || this.loaded.inUse(key),
      entry: (key) => this.index.peek(key),
      entryList: () => [...this.index.values()],
      dataPath: (key) => this.dataPath(key),
      evictKey: (key) => this.evictKey(key),
      letGo: async (path, size, key) => {
        const f = this.file(path, size, null)
        this.dropBlocks(f, [...f.present.keys()])
        await f.closeFd()
        await removeCacheFile(this.dataPath(key)).catch(() => undefined)
      },
    })
  }

  async close(): Promise<void> {
    this.closed = true
    this.space.stop()
    clearTimeout(this.cleanupTimer)
    this.record.stop()
    await Promise.all([...this.unlinking.values()])
    await this.loaded.closeAll()
    this.record.close()
  }
}
