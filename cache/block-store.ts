// The on-disk cache: one sparse file per archive file, filled block by block, and a SQLite record
// (WAL) of which blocks are present with each block's Adler-32. Rules that keep it honest:
// - a block is recorded only after its bytes were written, so a crash leaves at worst bytes nobody
//   trusts, never a record of bytes that are not there;
// - after every daemon start a block is checked against its recorded checksum the first time it is
//   read, and a block that fails is dropped (and then fetched again), never served;
// - a file whose blocks are all present is checked against the archive's Adler-32 (combined from the
//   block checksums, so without reading it again); a mismatch drops the whole file.
// Cache file names are hashes of the archive path, so no row of the metadata DB can name a file
// outside the cache dir.
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { constants, mkdirSync } from 'node:fs'
import { mkdir, open, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { adler32Async, adler32Combine, adler32Hex } from './adler32.js'
import { log } from '../daemon/log.js'
import { UserError } from '../daemon/errors.js'

export const BLOCK_SIZE = 1 << 20

export function cacheKey(relPath: string): string {
  return createHash('sha256').update(relPath).digest('hex').slice(0, 32)
}

interface BlockRecord {
  adler: number
  len: number
}

export interface StoreStats {
  blocksWritten: number
  blocksDropped: number
  writeErrors: number
}

/** A cached archive file: its presence map, its sparse data file, and the verification state. */
export class CachedFile {
  readonly key: string
  readonly relPath: string
  readonly size: number
  readonly blocks: number
  /** Block index -> record, for blocks whose bytes are on disk. */
  readonly present = new Map<number, BlockRecord>()
  /** Blocks checked against their checksum since this daemon started. */
  readonly verified = new Set<number>()
  /** Whole file checked against the archive's Adler-32 (persisted). */
  wholeVerified = false
  /** Archive Adler-32 (hex) when known. */
  adler32: string | null
  refs = 0
  private fd: Promise<FileHandle> | undefined
  private store: BlockStore

  constructor(store: BlockStore, relPath: string, size: number, adler32: string | null) {
    this.store = store
    this.key = cacheKey(relPath)
    this.relPath = relPath
    this.size = size
    this.blocks = Math.ceil(size / BLOCK_SIZE)
    this.adler32 = adler32
  }

  get dataPath(): string {
    return this.store.dataPath(this.key)
  }

  blockLength(idx: number): number {
    return Math.min(BLOCK_SIZE, this.size - idx * BLOCK_SIZE)
  }

  has(idx: number): boolean {
    return this.present.has(idx)
  }

  get complete(): boolean {
    return this.present.size === this.blocks
  }

  get presentBytes(): number {
    let n = 0
    for (const r of this.present.values()) n += r.len
    return n
  }

  private handle(): Promise<FileHandle> {
    if (!this.fd) {
      const p = this.dataPath
      this.fd = mkdir(join(p, '..'), { recursive: true, mode: 0o700 }).then(() => open(p, constants.O_RDWR | constants.O_CREAT, 0o600))
      this.fd.catch(() => { this.fd = undefined })
    }
    return this.fd
  }

  /**
   * Reads [pos, pos+len) from present blocks into `into`. The first read of a block since start reads
   * and checks the whole block; a block that fails its check is dropped and false is returned.
   */
  async readInto(into: Buffer, pos: number, len: number): Promise<boolean> {
    const first = Math.floor(pos / BLOCK_SIZE)
    const last = Math.floor((pos + len - 1) / BLOCK_SIZE)
    for (let idx = first; idx <= last; idx++) {
      if (!this.present.has(idx)) return false
      if (!this.verified.has(idx) && !(await this.verifyBlock(idx))) return false
    }
    const fh = await this.handle()
    const { bytesRead } = await fh.read(into, 0, len, pos)
    return bytesRead === len
  }

  /** Reads one whole block and checks it; drops it on mismatch. */
  async verifyBlock(idx: number): Promise<boolean> {
    const rec = this.present.get(idx)
    if (!rec) return false
    const buf = Buffer.allocUnsafe(rec.len)
    const fh = await this.handle()
    const { bytesRead } = await fh.read(buf, 0, rec.len, idx * BLOCK_SIZE)
    const ok = bytesRead === rec.len && (await adler32Async(buf)) === rec.adler
    if (ok) this.verified.add(idx)
    else {
      log.warn('cache block failed its checksum; dropped and will be refetched', { path: this.relPath, block: idx })
      this.store.dropBlocks(this, [idx])
    }
    return ok
  }

  /**
   * Stores a block fetched from a source. Returns false when it could not be stored (disk full, I/O
   * error): the caller still has the bytes and serves them from memory.
   */
  async writeBlock(idx: number, data: Buffer, adler: number): Promise<boolean> {
    if (this.present.has(idx)) return true
    if (data.length !== this.blockLength(idx)) throw new Error(`block ${idx} of ${this.relPath} has ${data.length} bytes, expected ${this.blockLength(idx)}`)
    try {
      const fh = await this.handle()
      let off = 0
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off, idx * BLOCK_SIZE + off)
        off += bytesWritten
      }
    } catch (err) {
      this.store.noteWriteError(this, err as NodeJS.ErrnoException)
      return false
    }
    if (this.present.has(idx)) return true
    this.present.set(idx, { adler, len: data.length })
    this.verified.add(idx)
    this.store.recordBlock(this, idx, adler, data.length)
    if (this.complete && !this.wholeVerified) this.checkWhole()
    return true
  }

  /** Adler-32 of the whole file, combined from the block checksums. */
  combinedAdler32(): number {
    let a = 1
    for (let i = 0; i < this.blocks; i++) {
      const r = this.present.get(i)!
      a = i === 0 ? r.adler : adler32Combine(a, r.adler, r.len)
    }
    return a
  }

  /** Checks a complete file against the archive's checksum; drops it all on mismatch. */
  checkWhole(): boolean {
    if (!this.complete) return false
    if (this.wholeVerified) return true
    if (!this.adler32) return false
    const got = adler32Hex(this.size === 0 ? 1 : this.combinedAdler32())
    if (got === this.adler32) {
      this.wholeVerified = true
      this.store.recordVerified(this)
      return true
    }
    log.error('cached file does not match the archive checksum; dropped', { path: this.relPath, expected: this.adler32, got })
    this.store.dropBlocks(this, [...this.present.keys()])
    return false
  }

  async closeFd(): Promise<void> {
    const fd = this.fd
    this.fd = undefined
    if (fd) await fd.then((h) => h.close()).catch(() => undefined)
  }
}

export class BlockStore {
  readonly dir: string
  private db: Database.Database
  private files = new Map<string, CachedFile>()
  private pending: { key: string; idx: number; adler: number; len: number }[] = []
  private flushTimer: NodeJS.Timeout | undefined
  private stmt: {
    loadFile: Database.Statement
    loadBlocks: Database.Statement
    upsertFile: Database.Statement
    insertBlock: Database.Statement
    deleteBlock: Database.Statement
    setVerified: Database.Statement
    touch: Database.Statement
  }
  private usedBytes: number
  readonly stats: StoreStats = { blocksWritten: 0, blocksDropped: 0, writeErrors: 0 }
  private lastWriteErrorLog = 0

  constructor(dir: string) {
    this.dir = dir
    mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 })
    this.db = new Database(join(dir, 'cache.sqlite'))
    try {
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('synchronous = NORMAL')
      // One daemon per cache dir: a second one fails here instead of corrupting the record.
      this.db.pragma('locking_mode = EXCLUSIVE')
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS files(key TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
          atime INTEGER NOT NULL, pinned INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS blocks(key TEXT NOT NULL, idx INTEGER NOT NULL, adler INTEGER NOT NULL,
          len INTEGER NOT NULL, PRIMARY KEY(key, idx)) WITHOUT ROWID;
      `)
    } catch (err) {
      this.db.close()
      if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new UserError(`cache dir ${dir} is in use by another desfs daemon: stop it (desfs umount) or use another --cache-dir`)
      throw new UserError(`cache record ${join(dir, 'cache.sqlite')} is unusable (${(err as Error).message}): move it aside or choose another --cache-dir`)
    }
    this.stmt = {
      loadFile: this.db.prepare('SELECT verified FROM files WHERE key = ?').pluck(),
      loadBlocks: this.db.prepare('SELECT idx, adler, len FROM blocks WHERE key = ?'),
      upsertFile: this.db.prepare('INSERT INTO files(key, path, size, atime) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET atime = excluded.atime'),
      insertBlock: this.db.prepare('INSERT OR REPLACE INTO blocks(key, idx, adler, len) VALUES (?, ?, ?, ?)'),
      deleteBlock: this.db.prepare('DELETE FROM blocks WHERE key = ? AND idx = ?'),
      setVerified: this.db.prepare('UPDATE files SET verified = ? WHERE key = ?'),
      touch: this.db.prepare('UPDATE files SET atime = ? WHERE key = ?'),
    }
    this.usedBytes = (this.db.prepare('SELECT coalesce(sum(len), 0) FROM blocks').pluck().get() as number) ?? 0
  }

  dataPath(key: string): string {
    return join(this.dir, 'data', key.slice(0, 2), key)
  }

  get bytes(): number {
    return this.usedBytes
  }

  /** The cached file for an archive path (shared between all handles), loading its record once. */
  file(relPath: string, size: number, adler32: string | null): CachedFile {
    const key = cacheKey(relPath)
    let f = this.files.get(key)
    if (f && f.size !== size) {
      // The archive said another size than when we cached it: nothing cached can be trusted.
      this.dropBlocks(f, [...f.present.keys()])
      this.files.delete(key)
      f = undefined
    }
    if (!f) {
      f = new CachedFile(this, relPath, size, adler32)
      for (const row of this.stmt.loadBlocks.all(key) as { idx: number; adler: number; len: number }[]) {
        if (row.idx < f.blocks && row.len === f.blockLength(row.idx)) f.present.set(row.idx, { adler: row.adler, len: row.len })
      }
      f.wholeVerified = this.stmt.loadFile.get(key) === 1 && f.complete
      this.files.set(key, f)
    }
    if (adler32 && !f.adler32) f.adler32 = adler32
    return f
  }

  /** Marks a file as used now (for LRU order). */
  touch(f: CachedFile): void {
    this.stmt.touch.run(Date.now(), f.key)
  }

  recordBlock(f: CachedFile, idx: number, adler: number, len: number): void {
    this.usedBytes += len
    this.stats.blocksWritten++
    this.pending.push({ key: f.key, idx, adler, len })
    if (this.pending.length === 1) this.stmt.upsertFile.run(f.key, f.relPath, f.size, Date.now())
    if (this.pending.length >= 64) this.flush()
    else if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), 50)
  }

  /** Writes pending block records in one transaction. */
  flush(): void {
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    const seen = new Set<string>()
    this.db.transaction(() => {
      for (const b of batch) {
        if (!seen.has(b.key)) {
          seen.add(b.key)
          const f = this.files.get(b.key)
          if (f) this.stmt.upsertFile.run(f.key, f.relPath, f.size, Date.now())
        }
        this.stmt.insertBlock.run(b.key, b.idx, b.adler, b.len)
      }
    })()
  }

  recordVerified(f: CachedFile): void {
    this.flush()
    this.stmt.setVerified.run(1, f.key)
  }

  dropBlocks(f: CachedFile, idxs: number[]): void {
    this.flush()
    this.db.transaction(() => {
      for (const idx of idxs) {
        const rec = f.present.get(idx)
        if (!rec) continue
        f.present.delete(idx)
        f.verified.delete(idx)
        this.usedBytes -= rec.len
        this.stats.blocksDropped++
        this.stmt.deleteBlock.run(f.key, idx)
      }
      if (f.wholeVerified) {
        f.wholeVerified = false
        this.stmt.setVerified.run(0, f.key)
      }
    })()
  }

  noteWriteError(f: CachedFile, err: NodeJS.ErrnoException): void {
    this.stats.writeErrors++
    const now = Date.now()
    if (now - this.lastWriteErrorLog > 10_000) {
      this.lastWriteErrorLog = now
      const hint = err.code === 'ENOSPC' ? 'the cache disk is full: free space or lower --cache-size; reads are served from memory meanwhile' : 'check the cache dir'
      log.error('cannot write to the cache', { path: f.relPath, code: err.code, fix: hint })
    }
  }

  async close(): Promise<void> {
    this.flush()
    await Promise.all([...this.files.values()].map((f) => f.closeFd()))
    this.db.close()
  }
}
