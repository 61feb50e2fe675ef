// What the archive told us about files: size, adler32, modification time, and which directories have
// been listed. The metadata DB has none of this; archive files are immutable, so once learned a fact
// is kept for good (it survives restarts and tree rebuilds, which is why it lives apart from the tree).
import Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { refuseLinks, sqliteFiles } from '../daemon/state-dir.js'

export interface FileFacts {
  /** Bytes, or MISSING when the archive listing did not have the file. */
  size: number
  adler32: string | null
  /** Milliseconds since the epoch, or null. */
  mtime: number | null
}

/** Size recorded for a file the metadata DB lists but the archive does not have. */
export const MISSING = -1

export class Facts {
  private db: Database.Database
  private getFile: Database.Statement
  private putFile: Database.Statement
  private setAdler: Database.Statement
  private inDir: Database.Statement
  private getDir: Database.Statement
  private putDir: Database.Statement
  // Bounded: a readdir looks up every file of the directory, and a find visits millions. The kernel
  // caches attributes itself, so this only needs to cover the files in play right now.
  private cache = new LRUCache<string, FileFacts>({ max: 20_000 })

  constructor(file: string) {
    refuseLinks(sqliteFiles(file), 'facts record')
    this.db = new Database(file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('cache_size = -8000') // KiB; better-sqlite3's default is 16 MB a connection
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS file_facts(path TEXT PRIMARY KEY, size INTEGER NOT NULL, adler32 TEXT, mtime INTEGER) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS dir_listed(path TEXT PRIMARY KEY, listed_at INTEGER NOT NULL) WITHOUT ROWID;
    `)
    this.getFile = this.db.prepare('SELECT size, adler32, mtime FROM file_facts WHERE path = ?')
    this.putFile = this.db.prepare(
      'INSERT INTO file_facts(path, size, adler32, mtime) VALUES (?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, adler32 = coalesce(excluded.adler32, file_facts.adler32), mtime = coalesce(excluded.mtime, file_facts.mtime)',
    )
    this.setAdler = this.db.prepare('UPDATE file_facts SET adler32 = ? WHERE path = ?')
    this.inDir = this.db.prepare('SELECT path, size, adler32, mtime FROM file_facts WHERE path > ? AND path < ?').raw(true)
    this.getDir = this.db.prepare('SELECT listed_at FROM dir_listed WHERE path = ?').pluck()
    this.putDir = this.db.prepare('INSERT OR REPLACE INTO dir_listed(path, listed_at) VALUES (?, ?)')
  }

  file(path: string): FileFacts | undefined {
    const hit = this.cache.get(path)
    if (hit) return hit
    const row = this.getFile.get(path) as FileFacts | undefined
    if (row) this.cache.set(path, { size: row.size, adler32: row.adler32, mtime: row.mtime })
    return row
  }

  /**
   * Facts of the files directly in a directory, by name, with one range scan instead of a lookup per
   * file. Meant for leaf directories (where DES keeps its files): the scan also walks any subtree.
   */
  filesIn(dir: string): Map<string, FileFacts> {
    const out = new Map<string, FileFacts>()
    const prefix = `${dir}/`
    // '0' follows '/' in byte order: [dir/, dir0) is everything below dir.
    for (const [path, size, adler32, mtime] of this.inDir.all(prefix, `${dir}0`) as [string, number, string | null, number | null][]) {
      const name = path.slice(prefix.length)
      if (!name.includes('/')) out.set(name, { size, adler32, mtime })
    }
    return out
  }

  dirListed(path: string): boolean {
    return this.getDir.get(path) !== undefined
  }

  /** Records a directory listing: the facts of every file in it, and missing ones, in one transaction. */
  recordListing(dirPath: string, files: Map<string, FileFacts>): void {
    this.db.transaction(() => {
      for (const [path, f] of files) {
        this.putFile.run(path, f.size, f.adler32, f.mtime)
        this.cache.set(path, f)
      }
      this.putDir.run(dirPath, Date.now())
    })()
  }

  recordFile(path: string, f: FileFacts): void {
    this.putFile.run(path, f.size, f.adler32, f.mtime)
    this.cache.set(path, f)
  }

  recordAdler32(path: string, adler32: string): void {
    this.setAdler.run(adler32, path)
    const f = this.cache.get(path)
    if (f) this.cache.set(path, { ...f, adler32 })
  }

  close(): void {
    this.db.close()
  }
}
