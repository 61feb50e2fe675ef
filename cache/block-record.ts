// The cache's SQLite record (WAL) of which files are cached and which of their blocks are present,
// with each block's Adler-32. The store (block-store.ts) decides what goes in; this module only keeps
// it: new block rows and access times are batched and written in one transaction (at most 50 ms
// later, or at 64 blocks), and a write that fails (disk full) is reported, never thrown.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { UserError } from '../daemon/errors.js'
import { refuseLinks, sqliteFiles } from '../daemon/state-dir.js'
import type { CacheEntry } from './cache-entry.js'

/**
 * Block rows are written this many at a time (or after 50 ms): a sync records about 30,000 rows per
 * GB, which at 64 rows a transaction was about 470 commits. A row not written yet is lost in a crash,
 * which is safe: the crash check then treats its block as absent.
 */
const FLUSH_ROWS = 512

/** A file's row with the bytes its block rows add up to. */
export type FileRow = CacheEntry

export interface BlockRow {
  idx: number
  adler: number
  len: number
}

/** What the record asks of its store. */
export interface RecordHooks {
  /** The file's current entry (its path, size, access time), to write with its blocks. */
  entry(key: string): { key: string; path: string; size: number; atime: number } | undefined
  /** A write to the record failed. */
  writeError(err: NodeJS.ErrnoException, what: string): void
  /** Blocks whose rows could not be written: not on record, so not in the cache either. */
  lost(blocks: { key: string; idx: number }[]): void
}

type Stmt =
  | 'loadFile'
  | 'loadBlocks'
  | 'upsertFile'
  | 'insertBlock'
  | 'deleteBlock'
  | 'deleteBlocks'
  | 'deleteFile'
  | 'setVerified'
  | 'touch'
  | 'setPinned'
  | 'setTier'

export class BlockRecord {
  /** The cache dir's block size (an existing record keeps the one it was made with). */
  readonly blockSize: number
  private db: Database.Database
  private stmt: Record<Stmt, Database.Statement>
  private hooks: RecordHooks
  private pending: (BlockRow & { key: string })[] = []
  private touched = new Set<string>()
  /**
   * Evicted files whose rows could not be deleted (disk full): their old block rows must never be
   * believed again. Deleted with the next write that succeeds; ignored when a file is loaded.
   */
  private unrecordedEvictions = new Set<string>()
  private flushTimer: NodeJS.Timeout | undefined
  private closed = false

  constructor(dir: string, blockSize: number, hooks: RecordHooks) {
    this.hooks = hooks
    const file = join(dir, 'cache.sqlite')
    refuseLinks(sqliteFiles(file), 'cache record')
    this.db = new Database(file)
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
      // Files of the header tier (header-tier.ts); a record from before it has none.
      const cols = this.db.prepare("SELECT name FROM pragma_table_info('files')").pluck().all() as string[]
      if (!cols.includes('tier')) this.db.exec('ALTER TABLE files ADD COLUMN tier INTEGER NOT NULL DEFAULT 0')
      // The block size is a property of the cache dir: an existing cache keeps the one it was made with.
      const recorded = this.db.prepare("SELECT v FROM meta WHERE k = 'block_size'").pluck().get() as string | undefined
      if (recorded) blockSize = Number(recorded)
      else this.db.prepare("INSERT INTO meta(k, v) VALUES ('block_size', ?)").run(String(blockSize))
      // Block rows whose file row is gone (never written in one transaction, but be sure).
      this.db.exec('DELETE FROM blocks WHERE key NOT IN (SELECT key FROM files)')
    } catch (err) {
      this.db.close()
      if ((err as { code?: string }).code === 'SQLITE_BUSY')
        throw new UserError(`cache dir ${dir} is in use by another desfs daemon: stop it (desfs umount) or use another --cache-dir`)
      throw new UserError(`cache record ${file} is unusable (${(err as Error).message}): move it aside or choose another --cache-dir`)
    }
    this.blockSize = blockSize
    this.stmt = {
      loadFile: this.db.prepare('SELECT verified FROM files WHERE key = ?').pluck(),
      loadBlocks: this.db.prepare('SELECT idx, adler, len FROM blocks WHERE key = ?'),
      upsertFile: this.db.prepare(
        'INSERT INTO files(key, path, size, atime) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET atime = excluded.atime',
      ),
      insertBlock: this.db.prepare('INSERT OR REPLACE INTO blocks(key, idx, adler, len) VALUES (?, ?, ?, ?)'),
      deleteBlock: this.db.prepare('DELETE FROM blocks WHERE key = ? AND idx = ?'),
      deleteBlocks: this.db.prepare('DELETE FROM blocks WHERE key = ?'),
      deleteFile: this.db.prepare('DELETE FROM files WHERE key = ?'),
      setVerified: this.db.prepare('UPDATE files SET verified = ? WHERE key = ?'),
      touch: this.db.prepare('UPDATE files SET atime = ? WHERE key = ?'),
      setTier: this.db.prepare('UPDATE files SET tier = ? WHERE key = ?'),
      setPinned: this.db.prepare(
        'INSERT INTO files(key, path, size, atime, pinned) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET pinned = excluded.pinned',
      ),
    }
  }

  /** Every file on record with its cached bytes, oldest access first. */
  files(): FileRow[] {
    const rows = this.db
      .prepare(
        `SELECT f.key, f.path, f.size, f.atime, f.pinned, f.tier, coalesce(sum(b.len), 0) AS bytes
      FROM files f LEFT JOIN blocks b ON b.key = f.key GROUP BY f.key ORDER BY f.atime`,
      )
      .all() as (Omit<FileRow, 'pinned' | 'tier'> & { pinned: number; tier: number })[]
    return rows.map((r) => ({ ...r, pinned: r.pinned === 1, tier: r.tier === 1 }))
  }

  /** A file's block rows (none for a file evicted while its rows could not be deleted). */
  blocks(key: string): BlockRow[] {
    // Blocks recorded by an earlier object for this key may still be waiting for the flush.
    if (this.pending.some((p) => p.key === key)) this.flush()
    return this.unrecordedEvictions.has(key) ? [] : (this.stmt.loadBlocks.all(key) as BlockRow[])
  }

  /** Whether the whole file was checked against the archive's checksum. */
  verified(key: string): boolean {
    return this.stmt.loadFile.get(key) === 1
  }

  addBlock(key: string, row: BlockRow): void {
    this.pending.push({ key, ...row })
    if (this.pending.length >= FLUSH_ROWS) this.flush()
    else this.scheduleFlush()
  }

  /** The file's access time changed (written with the next flush). */
  touch(key: string): void {
    this.touched.add(key)
    this.scheduleFlush()
  }

  /** Deletes a file's rows (eviction); a failure keeps its old rows from being believed. */
  forget(key: string): void {
    this.pending = this.pending.filter((p) => p.key !== key)
    this.touched.delete(key)
    const recorded = this.write('evict', () => {
      this.db.transaction(() => {
        this.stmt.deleteBlocks.run(key)
        this.stmt.deleteFile.run(key)
      })()
    })
    if (!recorded) this.unrecordedEvictions.add(key)
    else this.unrecordedEvictions.delete(key)
  }

  setVerified(key: string): void {
    this.flush()
    this.write('verified', () => this.stmt.setVerified.run(1, key))
  }

  /** Deletes block rows, and the whole-file check with them when there was one. */
  dropBlocks(key: string, idxs: number[], wasVerified: boolean): void {
    this.write('drop', () => {
      this.db.transaction(() => {
        for (const idx of idxs) this.stmt.deleteBlock.run(key, idx)
        if (wasVerified) this.stmt.setVerified.run(0, key)
      })()
    })
  }

  /** A file keeps only some blocks, in the header tier: the others' rows go, in one transaction. */
  demote(key: string, dropped: number[]): boolean {
    this.flush()
    return this.write('tier', () => {
      this.db.transaction(() => {
        for (const idx of dropped) this.stmt.deleteBlock.run(key, idx)
        this.stmt.setVerified.run(0, key)
        this.stmt.setTier.run(1, key)
      })()
    })
  }

  setTier(key: string, tier: boolean): void {
    this.write('tier', () => this.stmt.setTier.run(tier ? 1 : 0, key))
  }

  /** Runs `fn` in one transaction (a failure throws: pins are asked for, and refused as a whole). */
  transaction(fn: () => void): void {
    this.flush()
    this.db.transaction(fn)()
  }

  setPinned(e: { key: string; path: string; size: number; atime: number }, pinned: boolean): void {
    this.stmt.setPinned.run(e.key, e.path, e.size, e.atime, pinned ? 1 : 0)
  }

  deleteFile(key: string): void {
    this.stmt.deleteFile.run(key)
  }

  private scheduleFlush(): void {
    if (!this.flushTimer && !this.closed) this.flushTimer = setTimeout(() => this.flush(), 50)
  }

  /** Runs a write to the record; a failure (disk full) is reported, never thrown. */
  private write(what: string, fn: () => void): boolean {
    try {
      fn()
      return true
    } catch (err) {
      this.hooks.writeError(err as NodeJS.ErrnoException, `cache record (${what})`)
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
    const ok = this.write('blocks', () => {
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
            const e = this.hooks.entry(b.key)
            if (e) this.stmt.upsertFile.run(e.key, e.path, e.size, e.atime)
          }
          this.stmt.insertBlock.run(b.key, b.idx, b.adler, b.len)
        }
        for (const k of touched) {
          const e = this.hooks.entry(k)
          if (e) this.stmt.touch.run(e.atime, k)
        }
      })()
    })
    if (ok) for (const k of evicted) this.unrecordedEvictions.delete(k)
    else this.hooks.lost(batch)
  }

  /** Writes what is pending; nothing is scheduled any more (the store is closing). */
  stop(): void {
    this.closed = true
    this.flush()
  }

  close(): void {
    this.stop()
    this.db.close()
  }
}
