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
// to a low-water mark. Files in use (open handles, fetches in flight) and pinned files are never
// evicted; when nothing can go, the block is served from memory and not stored. Whole files are the
// unit because Node cannot punch holes.
// Cache file names are hashes of the archive path, so no row of the metadata DB can name a file
// outside the cache dir; and nothing in the cache dir is reached through a link (openCacheFile): a
// link planted at a data file or a data/xx directory is removed, never written through or cleaned
// through. A data file must have no other name: one that gained a hardlink (`desfs get --mode
// hardlink` of older versions made them) could be edited through it, so the cache lets go of it
// (drops its blocks, unlinks its own name; the other name keeps the bytes) and fetches it again.
import Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { mkdirSync } from 'node:fs'
import { lstat, readdir, rm, statfs, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { CachedFile, cacheKey, type FileStore } from './cached-file.js'
import { cacheMetrics } from './metrics.js'
import { log } from '../daemon/log.js'
import { UserError } from '../daemon/errors.js'
import { formatSize } from '../daemon/units.js'
import { ensureOwnDirSync, refuseLinks, sqliteFiles } from '../daemon/state-dir.js'

// The cached file and the safe open of its data file live beside the store; others take them from here.
export { CachedFile, cacheKey, type PresenceMaps } from './cached-file.js'
export { openCacheFile } from './open-cache-file.js'

const DEFAULT_BLOCK_SIZE = 1 << 20

/** What the store knows about every cached (or pinned) file, in least-recently-used order. */
export interface CacheEntry {
  key: string
  path: string
  size: number
  /** Bytes of the file present in the cache. */
  bytes: number
  pinned: boolean
  /** Last access, ms since the epoch. */
  atime: number
}

export interface StoreOptions {
  /** Size bound for cached data, bytes. */
  limit: number
  /** Eviction frees space down to this fraction of the limit. */
  lowWater?: number
  /** Cap on the total size of pinned files, bytes. */
  pinLimit?: number
  /** Free space to leave on the cache disk, bytes. */
  minFree?: number
  /** Block size for a new cache dir (an existing one keeps its own). */
  blockSize?: number
  /** Delay before the background check of data files against the record, ms. */
  cleanupDelayMs?: number
  /** How often a file being read is checked for another name (a hard link), ms. */
  linkCheckMs?: number
}

export interface StoreStats {
  blocksWritten: number
  blocksDropped: number
  writeErrors: number
  filesEvicted: number
  bytesEvicted: number
  /** Blocks served from memory because they could not be stored (bound, disk full). */
  notStored: number
}

export interface PinRequest {
  rel: string
  size: number
}

export class BlockStore implements FileStore {
  readonly dir: string
  readonly blockSize: number
  readonly limit: number
  readonly lowWater: number
  readonly pinLimit: number
  readonly minFree: number
  readonly linkCheckMs: number
  /** Data files being removed, by key: a new data file for the key is opened only after. */
  readonly unlinking = new Map<string, Promise<void>>()
  readonly stats: StoreStats = { blocksWritten: 0, blocksDropped: 0, writeErrors: 0, filesEvicted: 0, bytesEvicted: 0, notStored: 0 }
  private db: Database.Database
  /** Every file with a record, least recently used first. */
  private index = new LRUCache<string, CacheEntry>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: () => 1 })
  /** Loaded files in use (users > 0), and recently used ones kept loaded for their verified state. */
  private live = new Map<string, CachedFile>()
  // A file leaving the idle set for good is unloaded: a later use loads its record into a new object
  // (and a new presence map); one leaving it for the live set keeps its map.
  private idle = new LRUCache<string, CachedFile>({
    max: 2048,
    dispose: (f, _key, reason) => {
      if (reason === 'evict') f.retireShared()
      void f.closeFd()
    },
  })
  private pending: { key: string; idx: number; adler: number; len: number }[] = []
  /**
   * Evicted files whose record could not be deleted (disk full): their old block rows must never be
   * believed again. Deleted with the next write that succeeds; ignored when a file is loaded.
   */
  private unrecordedEvictions = new Set<string>()
  private touched = new Set<string>()
  private flushTimer: NodeJS.Timeout | undefined
  private stmt: Record<'loadFile' | 'loadBlocks' | 'upsertFile' | 'insertBlock' | 'deleteBlock' | 'deleteBlocks' | 'deleteFile' | 'setVerified' | 'touch' | 'setPinned', Database.Statement>
  private used = 0
  private reserved = 0
  /** Bytes of evicted files whose data is still being unlinked. */
  private freeing = 0
  private pinnedSize = 0
  private diskFree = Infinity
  private diskTimer: NodeJS.Timeout | undefined
  private cleanupTimer: NodeJS.Timeout | undefined
  private closed = false
  private lastWriteErrorLog = 0
  private lastNoRoomLog = 0
  /** Called with the key of every evicted file (the fetcher forgets its blocks in memory). */
  onEvict: (key: string) => void = () => undefined

  constructor(dir: string, opts: StoreOptions) {
    this.dir = dir
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    ensureOwnDirSync(join(dir, 'data'))
    refuseLinks(sqliteFiles(join(dir, 'cache.sqlite')), 'cache record')
    this.db = new Database(join(dir, 'cache.sqlite'))
    let blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE
    try {
      // One daemon per cache dir: a second one fails here instead of corrupting the record. Set
      // before WAL mode, so the WAL index lives in memory rather than in a -shm file (which cannot be
      // created on a full disk, and would then keep the daemon from starting).
      this.db.pragma('locking_mode = EXCLUSIVE')
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('synchronous = NORMAL')
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS files(key TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
          atime INTEGER NOT NULL, pinned INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS blocks(key TEXT NOT NULL, idx INTEGER NOT NULL, adler INTEGER NOT NULL,
          len INTEGER NOT NULL, PRIMARY KEY(key, idx)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
      `)
      // The block size is a property of the cache dir: an existing cache keeps the one it was made with.
      const recorded = this.db.prepare("SELECT v FROM meta WHERE k = 'block_size'").pluck().get() as string | undefined
      if (recorded) blockSize = Number(recorded)
      else this.db.prepare("INSERT INTO meta(k, v) VALUES ('block_size', ?)").run(String(blockSize))
      // Block rows whose file row is gone (never written in one transaction, but be sure).
      this.db.exec('DELETE FROM blocks WHERE key NOT IN (SELECT key FROM files)')
    } catch (err) {
      this.db.close()
      if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new UserError(`cache dir ${dir} is in use by another desfs daemon: stop it (desfs umount) or use another --cache-dir`)
      throw new UserError(`cache record ${join(dir, 'cache.sqlite')} is unusable (${(err as Error).message}): move it aside or choose another --cache-dir`)
    }
    this.blockSize = blockSize
    this.limit = opts.limit
    this.lowWater = Math.floor(opts.limit * (opts.lowWater ?? 0.9))
    this.pinLimit = Math.min(opts.pinLimit ?? Math.floor(opts.limit / 2), opts.limit)
    this.minFree = opts.minFree ?? 0
    this.linkCheckMs = opts.linkCheckMs ?? 1000
    this.stmt = {
      loadFile: this.db.prepare('SELECT verified FROM files WHERE key = ?').pluck(),
      loadBlocks: this.db.prepare('SELECT idx, adler, len FROM blocks WHERE key = ?'),
      upsertFile: this.db.prepare('INSERT INTO files(key, path, size, atime) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET atime = excluded.atime'),
      insertBlock: this.db.prepare('INSERT OR REPLACE INTO blocks(key, idx, adler, len) VALUES (?, ?, ?, ?)'),
      deleteBlock: this.db.prepare('DELETE FROM blocks WHERE key = ? AND idx = ?'),
      deleteBlocks: this.db.prepare('DELETE FROM blocks WHERE key = ?'),
      deleteFile: this.db.prepare('DELETE FROM files WHERE key = ?'),
      setVerified: this.db.prepare('UPDATE files SET verified = ? WHERE key = ?'),
      touch: this.db.prepare('UPDATE files SET atime = ? WHERE key = ?'),
      setPinned: this.db.prepare('INSERT INTO files(key, path, size, atime, pinned) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET pinned = excluded.pinned'),
    }
    // The LRU order as it was: oldest access first, so the most recent end up most recent.
    const rows = this.db.prepare(`SELECT f.key, f.path, f.size, f.atime, f.pinned, coalesce(sum(b.len), 0) AS bytes
      FROM files f LEFT JOIN blocks b ON b.key = f.key GROUP BY f.key ORDER BY f.atime`).all() as { key: string; path: string; size: number; atime: number; pinned: number; bytes: number }[]
    for (const r of rows) {
      this.index.set(r.key, { key: r.key, path: r.path, size: r.size, bytes: r.bytes, pinned: r.pinned === 1, atime: r.atime })
      this.used += r.bytes
      if (r.pinned) this.pinnedSize += r.size
      this.lastAtime = Math.max(this.lastAtime, r.atime)
    }
    cacheMetrics.bind(this)
    void this.refreshDiskFree()
    this.diskTimer = setInterval(() => void this.refreshDiskFree(), 2000)
    this.diskTimer.unref()
    // Data files are checked against the record in the background, never at start-up.
    this.cleanupTimer = setTimeout(() => void this.cleanup(), opts.cleanupDelayMs ?? 5000)
    this.cleanupTimer.unref()
  }

  dataPath(key: string): string {
    return join(this.dir, 'data', key.slice(0, 2), key)
  }

  /** Bytes of cached data on record. */
  get bytes(): number {
    return this.used
  }

  /** The cached file for an archive path (shared between all its users), loading its record once. */
  file(relPath: string, size: number, adler32: string | null): CachedFile {
    const key = cacheKey(relPath)
    let f = this.live.get(key) ?? this.idle.get(key)
    if (f && f.size !== size && f.users === 0) {
      // The archive said another size than when we cached it: nothing cached can be trusted.
      log.warn('archive file changed size; its cached copy is dropped', { path: relPath, was: f.size, now: size })
      void this.evictKey(key)
      this.idle.delete(key)
      f = undefined
    }
    if (!f) {
      f = new CachedFile(this, relPath, size, adler32)
      const entry = this.index.peek(key)
      if (entry && entry.size !== size) this.evictKey(key)
      else {
        // Blocks recorded by an earlier object for this key may still be waiting for the flush.
        if (this.pending.some((p) => p.key === key)) this.flush()
        const rows = this.unrecordedEvictions.has(key) ? [] : (this.stmt.loadBlocks.all(key) as { idx: number; adler: number; len: number }[])
        for (const row of rows) {
          if (row.idx < f.blocks && row.len === f.blockLength(row.idx)) f.present.set(row.idx, { adler: row.adler, len: row.len })
        }
        f.wholeVerified = this.stmt.loadFile.get(key) === 1 && f.complete
      }
      this.idle.set(key, f)
    }
    if (adler32 && !f.adler32) f.adler32 = adler32
    return f
  }

  /** Marks a file in use (an open handle, a fetch): it cannot be evicted until released. */
  hold(f: CachedFile): void {
    if (f.users++ === 0) {
      this.idle.delete(f.key)
      this.live.set(f.key, f)
    }
  }

  release(f: CachedFile): void {
    if (--f.users > 0) return
    f.users = 0
    if (this.live.get(f.key) === f) {
      this.live.delete(f.key)
      if (!this.closed) this.idle.set(f.key, f)
      else void f.closeFd()
    }
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
    this.touched.add(f.key)
    this.scheduleFlush()
  }

  /** Bytes cached of an archive path. */
  cachedBytes(relPath: string): number {
    return this.index.peek(cacheKey(relPath))?.bytes ?? 0
  }

  // --- space ---------------------------------------------------------------------------------

  /** Room the bound and the disk floor leave for one more write of `len` bytes (negative: short). */
  private room(len: number): number {
    // Bytes of evicted files still being unlinked are off the record but still on disk: counted.
    return Math.min(this.limit - this.used - this.freeing - this.reserved - len, this.diskFree - this.minFree - this.reserved - len)
  }

  /**
   * Reserves room for a block, evicting least recently used files down to the low-water mark when
   * needed. False when no room can be made (everything left is pinned or in use).
   */
  async reserve(f: CachedFile, len: number): Promise<boolean> {
    if (this.closed) return false
    if (this.room(len) < 0) {
      // What is being unlinked already will free its share; evict only for the rest, then wait for
      // every unlink in progress (also ones another writer started), so the disk never holds more.
      const short = -this.room(len) - this.freeing
      if (short > 0) this.evictLru(Math.max(this.limit - this.lowWater, short), f.key)
      if (this.unlinking.size) await Promise.all([...this.unlinking.values()])
      if (this.room(len) < 0) {
        this.stats.notStored++
        cacheMetrics.notStored.inc()
        const now = Date.now()
        if (now - this.lastNoRoomLog > 10_000) {
          this.lastNoRoomLog = now
          const diskShort = this.diskFree - this.minFree - this.reserved - len < 0
          const fields = { used: formatSize(this.used), limit: formatSize(this.limit), diskFree: formatSize(this.diskFree), keptFree: formatSize(this.minFree), path: f.relPath }
          if (diskShort) log.warn('the cache disk is nearly full and nothing more can be evicted; serving from memory without storing (free space on the disk or lower --cache-size)', fields)
          else log.warn('cache full of pinned or open files; serving from memory without storing', fields)
        }
        return false
      }
    }
    this.reserved += len
    return true
  }

  unreserve(len: number): void {
    this.reserved -= len
  }

  /** Evicts least recently used files until `want` bytes are freed; returns the pending unlinks. */
  private evictLru(want: number, except: string): void {
    let freed = 0
    for (const key of [...this.index.rkeys()]) {
      if (freed >= want) break
      const e = this.index.peek(key)!
      if (e.pinned || e.bytes === 0 || key === except || this.live.has(key)) continue
      freed += e.bytes
      void this.evictKey(key)
    }
  }

  /** Removes a file from the cache: record first (a crash then leaves an orphan, cleaned later), then data. */
  private evictKey(key: string): Promise<void> {
    const e = this.index.peek(key)
    const f = this.live.get(key) ?? this.idle.peek(key)
    this.pending = this.pending.filter((p) => p.key !== key)
    this.touched.delete(key)
    const recorded = this.dbWrite('evict', () => {
      this.db.transaction(() => {
        this.stmt.deleteBlocks.run(key)
        this.stmt.deleteFile.run(key)
      })()
    })
    if (!recorded) this.unrecordedEvictions.add(key)
    else this.unrecordedEvictions.delete(key)
    if (e) {
      this.index.delete(key)
      this.used -= e.bytes
      if (e.pinned) this.pinnedSize -= e.size
      this.stats.filesEvicted++
      this.stats.bytesEvicted += e.bytes
      cacheMetrics.evictedFiles.inc()
      cacheMetrics.evictedBlocks.inc(undefined, Math.ceil(e.bytes / this.blockSize))
    }
    this.onEvict(key)
    const bytes = e?.bytes ?? 0
    this.freeing += bytes
    const prev = this.unlinking.get(key) ?? Promise.resolve()
    const p = prev
      .then(() => f?.forget())
      .then(() => this.unlinkData(key))
      .then(() => { this.diskFree += bytes })
      .catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') log.warn('cannot remove a cache file', { file: this.dataPath(key), error: err.message }) })
      .finally(() => {
        this.freeing -= bytes
        if (this.unlinking.get(key) === p) this.unlinking.delete(key)
      })
    this.unlinking.set(key, p)
    return p
  }

  /** Removes a data file, unless its directory is not a real one of ours (then nothing outside is touched). */
  private async unlinkData(key: string): Promise<void> {
    const path = this.dataPath(key)
    const d = await lstat(dirname(path)).catch(() => undefined)
    if (d && (d.isSymbolicLink() || !d.isDirectory())) {
      log.warn('a cache data directory is not a directory of its own; nothing removed through it', { dir: dirname(path) })
      await rm(dirname(path), { force: true })
      return
    }
    await unlink(path)
  }

  private async refreshDiskFree(): Promise<void> {
    try {
      const s = await statfs(this.dir)
      this.diskFree = s.bavail * s.bsize
    } catch {
      // keep the last value
    }
  }

  // --- records ------------------------------------------------------------------------------

  recordBlock(f: CachedFile, idx: number, adler: number, len: number): void {
    this.reserved -= len
    this.used += len
    this.diskFree -= len
    this.stats.blocksWritten++
    let e = this.index.get(f.key)
    if (!e) {
      e = { key: f.key, path: f.relPath, size: f.size, bytes: 0, pinned: false, atime: this.clock() }
      this.index.set(f.key, e)
    }
    e.bytes += len
    this.pending.push({ key: f.key, idx, adler, len })
    if (this.pending.length >= 64) this.flush()
    else this.scheduleFlush()
  }

  private scheduleFlush(): void {
    if (!this.flushTimer && !this.closed) this.flushTimer = setTimeout(() => this.flush(), 50)
  }

  /** Runs a write to the record; a failure (disk full) is logged and reported, never thrown. */
  private dbWrite(what: string, fn: () => void): boolean {
    try {
      fn()
      return true
    } catch (err) {
      this.noteWriteError(undefined, err as NodeJS.ErrnoException, `cache record (${what})`)
      return false
    }
  }

  /** Writes pending block records and access times in one transaction. */
  flush(): void {
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    if (this.pending.length === 0 && this.touched.size === 0 && this.unrecordedEvictions.size === 0) return
    const batch = this.pending
    const evicted = [...this.unrecordedEvictions]
    const touched = this.touched
    this.pending = []
    this.touched = new Set()
    const ok = this.dbWrite('blocks', () => {
      this.db.transaction(() => {
        // Old rows of files evicted while the disk was full go first, before new blocks are recorded.
        for (const key of evicted) {
          this.stmt.deleteBlocks.run(key)
          this.stmt.deleteFile.run(key)
        }
        const seen = new Set<string>()
        for (const b of batch) {
          if (!seen.has(b.key)) {
            seen.add(b.key)
            const e = this.index.peek(b.key)
            if (e) this.stmt.upsertFile.run(e.key, e.path, e.size, e.atime)
          }
          this.stmt.insertBlock.run(b.key, b.idx, b.adler, b.len)
        }
        for (const k of touched) {
          const e = this.index.peek(k)
          if (e) this.stmt.touch.run(e.atime, k)
        }
      })()
    })
    if (ok) for (const k of evicted) this.unrecordedEvictions.delete(k)
    else {
      // Not on record: not in the cache either (the bytes stay on disk until the file is evicted).
      for (const b of batch) {
        const f = this.live.get(b.key) ?? this.idle.peek(b.key)
        if (f?.present.has(b.idx)) this.dropBlocks(f, [b.idx], false)
      }
    }
  }

  recordVerified(f: CachedFile): void {
    this.flush()
    this.dbWrite('verified', () => this.stmt.setVerified.run(1, f.key))
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
      this.used -= rec.len
      if (e) e.bytes -= rec.len
      this.stats.blocksDropped++
      dropped.push(idx)
    }
    const wasVerified = f.wholeVerified
    f.wholeVerified = false
    if (!persist || (dropped.length === 0 && !wasVerified)) return
    this.dbWrite('drop', () => {
      this.db.transaction(() => {
        for (const idx of dropped) this.stmt.deleteBlock.run(f.key, idx)
        if (wasVerified) this.stmt.setVerified.run(0, f.key)
      })()
    })
  }

  noteWriteError(f: CachedFile | undefined, err: NodeJS.ErrnoException, what = 'the cache'): void {
    this.stats.writeErrors++
    cacheMetrics.writeErrors.inc({ code: err.code ?? 'unknown' })
    const now = Date.now()
    if (now - this.lastWriteErrorLog > 10_000) {
      this.lastWriteErrorLog = now
      const full = err.code === 'ENOSPC' || /SQLITE_FULL|disk is full/i.test(String(err.code) + err.message)
      const hint = full ? 'the cache disk is full: free space or lower --cache-size; reads are served from memory meanwhile' : 'check the cache dir'
      log.error(`cannot write to ${what}`, { ...(f ? { path: f.relPath } : {}), code: err.code, error: err.message, fix: hint })
    }
  }

  // --- the cache API (control routes, sync) -----------------------------------------------------

  /** Figures for `desfs cache stats`, status and metrics. */
  summary(): Record<string, number | string> {
    let files = 0
    let pinnedFiles = 0
    let pinnedBytes = 0
    for (const e of this.index.values()) {
      if (e.bytes > 0) files++
      if (e.pinned) {
        pinnedFiles++
        pinnedBytes += e.bytes
      }
    }
    return {
      dir: this.dir, blockSize: this.blockSize, limit: this.limit, lowWater: this.lowWater, bytes: this.used,
      files, pinnedFiles, pinnedBytes, pinnedSize: this.pinnedSize, pinLimit: this.pinLimit,
      minFree: this.minFree, diskFree: Number.isFinite(this.diskFree) ? this.diskFree : -1, inUse: this.live.size,
      ...this.stats,
    }
  }

  /** Entries whose path is `prefix` or under it ('' for all), sorted by path. */
  entries(prefix = ''): CacheEntry[] {
    const p = prefix.replace(/\/+$/, '')
    const out: CacheEntry[] = []
    for (const e of this.index.values()) if (!p || e.path === p || e.path.startsWith(p + '/')) out.push({ ...e })
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  }

  inUse(relPath: string): boolean {
    return this.live.has(cacheKey(relPath))
  }

  /**
   * Pins files: whatever is cached of them stays, exempt from eviction. Their full sizes count against
   * the pin cap (a pinned file is meant to be fetched whole); beyond it the request is refused as a
   * whole, before anything changes.
   */
  pin(files: PinRequest[]): { pinned: number; already: number } {
    const add = files.filter((f) => !this.index.peek(cacheKey(f.rel))?.pinned)
    const unique = new Map(add.map((f) => [f.rel, f]))
    const extra = [...unique.values()].reduce((a, f) => a + f.size, 0)
    if (this.pinnedSize + extra > this.pinLimit) {
      throw new UserError(`cannot pin ${unique.size} files (${formatSize(extra)}): pinned files would take ${formatSize(this.pinnedSize + extra)}, over the pin cap of ${formatSize(this.pinLimit)} (${formatSize(this.pinnedSize)} pinned now); unpin some or raise --pin-size`)
    }
    const now = this.clock()
    this.flush()
    this.db.transaction(() => {
      for (const f of unique.values()) {
        const key = cacheKey(f.rel)
        let e = this.index.peek(key)
        if (e && e.size !== f.size) {
          void this.evictKey(key)
          e = undefined
        }
        if (!e) {
          e = { key, path: f.rel, size: f.size, bytes: 0, pinned: false, atime: now }
          this.index.set(key, e)
        }
        e.pinned = true
        this.pinnedSize += e.size
        this.stmt.setPinned.run(key, e.path, e.size, e.atime, 1)
      }
    })()
    return { pinned: unique.size, already: files.length - add.length }
  }

  /** Unpins files (by exact path) and everything pinned under directory paths. */
  unpin(paths: string[]): number {
    let n = 0
    this.flush()
    this.db.transaction(() => {
      for (const p of paths) {
        for (const e of this.entries(p)) {
          const live = this.index.peek(e.key)!
          if (!live.pinned) continue
          live.pinned = false
          this.pinnedSize -= live.size
          this.stmt.setPinned.run(live.key, live.path, live.size, live.atime, 0)
          if (live.bytes === 0) {
            this.index.delete(live.key)
            this.stmt.deleteFile.run(live.key)
          }
          n++
        }
      }
    })()
    return n
  }

  /**
   * Evicts the cached files at or under `paths` now. Files in use are skipped; pinned ones too
   * unless `includePinned`. With `dryRun` nothing changes and the answer says what would.
   */
  async evict(paths: string[], opts: { dryRun?: boolean; includePinned?: boolean } = {}): Promise<{ files: number; bytes: number; skippedPinned: number; skippedInUse: number }> {
    const out = { files: 0, bytes: 0, skippedPinned: 0, skippedInUse: 0 }
    const seen = new Set<string>()
    const unlinks: Promise<void>[] = []
    for (const p of paths) {
      for (const e of this.entries(p)) {
        if (seen.has(e.key)) continue
        seen.add(e.key)
        if (e.pinned && !opts.includePinned) {
          out.skippedPinned++
          continue
        }
        if (this.live.has(e.key)) {
          out.skippedInUse++
          continue
        }
        if (e.bytes === 0 && !e.pinned) continue
        out.files++
        out.bytes += e.bytes
        if (!opts.dryRun) unlinks.push(this.evictKey(e.key))
      }
    }
    await Promise.all(unlinks)
    return out
  }

  /**
   * Checks data files against the record, in the background and a directory at a time: removes data
   * files with no record (left by a crash between the record's delete and the unlink), and evicts
   * files whose data file is missing or holds more than the record says (blocks written just before
   * a crash and never recorded take space the bound does not see).
   */
  async cleanup(): Promise<{ orphans: number; evicted: number }> {
    const res = { orphans: 0, evicted: 0 }
    const base = join(this.dir, 'data')
    let dirs: string[]
    try {
      dirs = await readdir(base)
    } catch {
      return res
    }
    const onDisk = new Set<string>()
    const scanStart = Date.now()
    for (const d of dirs) {
      if (this.closed) return res
      // Never list (and clean) through a link: one at data/xx would make every file it points at an orphan.
      const dst = await lstat(join(base, d)).catch(() => undefined)
      if (!dst) continue
      if (!dst.isDirectory()) {
        log.warn('removed an entry that is not a desfs directory from the cache dir (desfs never follows links there)', { path: join(base, d), was: dst.isSymbolicLink() ? 'a symbolic link' : 'not a directory' })
        await rm(join(base, d), { force: true }).catch(() => undefined)
        res.orphans++
        continue
      }
      let names: string[]
      try {
        names = await readdir(join(base, d))
      } catch {
        continue
      }
      for (const name of names) {
        if (this.closed) return res
        onDisk.add(name)
        if (this.unlinking.has(name) || this.live.has(name)) continue
        const e = this.index.peek(name)
        const path = join(base, d, name)
        const st = await lstat(path).catch(() => undefined)
        if (!st) continue
        if (!st.isFile()) {
          // A link or a device is no cache file: remove it (a link only, never its target); a
          // directory is left alone (it is not ours to delete), and logged.
          log.warn('an entry that is not a regular file is in the cache dir', { path, removed: !st.isDirectory() })
          if (!st.isDirectory()) await rm(path, { force: true }).catch(() => undefined)
          onDisk.delete(name)
          res.orphans++
          continue
        }
        if (!e) {
          res.orphans++
          await unlink(path).catch(() => undefined)
          continue
        }
        if (st.nlink > 1 && !this.live.has(name) && this.index.peek(name) === e) {
          // Its blocks are forgotten and our name removed (a pin stays); the other name keeps the bytes.
          log.warn('a cache file has another name (a hard link) through which it could be changed: the cache lets go of it', { path: e.path, links: st.nlink })
          const f = this.file(e.path, e.size, null)
          this.dropBlocks(f, [...f.present.keys()])
          await f.closeFd()
          await this.unlinkData(name).catch(() => undefined)
          res.evicted++
          continue
        }
        if (!e.pinned && st.blocks * 512 > e.bytes + 2 * this.blockSize && !this.live.has(name) && this.index.peek(name) === e) {
          log.info('cache file holds unrecorded data (left by a crash); evicted', { path: e.path })
          res.evicted++
          await this.evictKey(name)
        }
      }
    }
    for (const e of [...this.index.values()]) {
      // Files first written after the scan started may be missing from it: only older ones count.
      if (e.bytes > 0 && e.atime < scanStart && !onDisk.has(e.key) && !this.live.has(e.key) && !this.unlinking.has(e.key)) {
        // A file pinned before the scan may have been written since, in a data directory made after
        // the scan listed them: look again before calling it missing.
        if (await lstat(this.dataPath(e.key)).then(() => true, () => false)) continue
        if (this.index.peek(e.key) !== e || this.live.has(e.key)) continue
        log.warn('cache file missing; its record is dropped', { path: e.path })
        res.evicted++
        await this.evictKey(e.key)
      }
    }
    if (res.orphans || res.evicted) log.info('cache checked against its record', res)
    return res
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.diskTimer)
    clearTimeout(this.cleanupTimer)
    this.flush()
    await Promise.all([...this.unlinking.values()])
    await Promise.all([...this.live.values(), ...this.idle.values()].map((f) => f.closeFd()))
    this.idle.clear()
    this.db.close()
  }
}
