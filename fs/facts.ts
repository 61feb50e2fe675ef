// What the archive told us about files: size, adler32, modification time, and which directories have
// been listed. The metadata DB has none of this; archive files are immutable, so once learned a fact
// is kept for good (it survives restarts and tree rebuilds, which is why it lives apart from the tree).
// Facts are kept per source identity (archive URL, bucket, mirror dir: SourceSet.identity): what a
// wrongly configured source answered (a URL with a query string makes every file look 0 bytes) stays
// with that source and is never served once the setting is fixed.
import Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { refuseLinks, sqliteFiles } from '../daemon/state-dir.js'
import type { FileFacts } from '../cache/sources/source.js'
export type { FileFacts }

/** Size recorded for a file the metadata DB lists but the archive does not have. */
export const MISSING = -1

/** Schema version; version 1 (before facts were kept per source) is discarded: its origin is unknown. */
const SCHEMA_VERSION = 2
/** Identity of facts written by tools that do not know the source (test and benchmark seeding). */
const UNBOUND = ''

export class Facts {
  private db: Database.Database
  private getFile: Database.Statement
  private putFile: Database.Statement
  private inDir: Database.Statement
  private getDir: Database.Statement
  private putDir: Database.Statement
  private getHdus: Database.Statement
  private putHdus: Database.Statement
  // Bounded: a readdir looks up every file of the directory, and a find visits millions. The kernel
  // caches attributes itself, so this only needs to cover the files in play right now.
  private cache = new LRUCache<string, FileFacts>({ max: 20_000 })

  /** Facts from earlier versions thrown away on open (their source is unknown), for a log line. */
  readonly discarded: number = 0
  private source: number

  /**
   * Opens the facts of one source identity. Without an identity (seeding tools) the facts are unbound;
   * the first identity that opens the file adopts them.
   */
  constructor(file: string, identity: string = UNBOUND) {
    refuseLinks(sqliteFiles(file), 'facts record')
    this.db = new Database(file)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('cache_size = -8000') // KiB; better-sqlite3's default is 16 MB a connection
    if ((this.db.pragma('user_version', { simple: true }) as number) < SCHEMA_VERSION) {
      const old = this.db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'file_facts'").get()
      if (old) this.discarded = this.db.prepare('SELECT count(*) FROM file_facts').pluck().get() as number
      this.db.exec('DROP TABLE IF EXISTS file_facts; DROP TABLE IF EXISTS dir_listed;')
    }
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS fact_sources(id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE);
      CREATE TABLE IF NOT EXISTS file_facts(source INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, adler32 TEXT, mtime INTEGER, PRIMARY KEY(source, path)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS dir_listed(source INTEGER NOT NULL, path TEXT NOT NULL, listed_at INTEGER NOT NULL, PRIMARY KEY(source, path)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS file_hdus(source INTEGER NOT NULL, path TEXT NOT NULL, hdus TEXT NOT NULL, PRIMARY KEY(source, path)) WITHOUT ROWID;
      PRAGMA user_version = ${SCHEMA_VERSION};
    `)
    this.db.prepare('INSERT OR IGNORE INTO fact_sources(id, identity) VALUES (0, ?)').run(UNBOUND)
    this.db.prepare('INSERT OR IGNORE INTO fact_sources(identity) VALUES (?)').run(identity)
    this.source = this.db.prepare('SELECT id FROM fact_sources WHERE identity = ?').pluck().get(identity) as number
    if (this.source !== 0) this.adoptUnbound()
    // Every statement is bound to this source: `source = ${this.source}` is an integer of our own.
    const src = this.source
    this.getFile = this.db.prepare(`SELECT size, adler32, mtime FROM file_facts WHERE source = ${src} AND path = ?`)
    this.putFile = this.db.prepare(
      `INSERT INTO file_facts(source, path, size, adler32, mtime) VALUES (${src}, ?, ?, ?, ?) ON CONFLICT(source, path) DO UPDATE SET size = excluded.size, adler32 = coalesce(excluded.adler32, file_facts.adler32), mtime = coalesce(excluded.mtime, file_facts.mtime)`,
    )
    this.inDir = this.db
      .prepare(`SELECT path, size, adler32, mtime FROM file_facts WHERE source = ${src} AND path > ? AND path < ?`)
      .raw(true)
    this.getDir = this.db.prepare(`SELECT listed_at FROM dir_listed WHERE source = ${src} AND path = ?`).pluck()
    this.putDir = this.db.prepare(`INSERT OR REPLACE INTO dir_listed(source, path, listed_at) VALUES (${src}, ?, ?)`)
    this.getHdus = this.db.prepare(`SELECT hdus FROM file_hdus WHERE source = ${src} AND path = ?`).pluck()
    this.putHdus = this.db.prepare(`INSERT OR REPLACE INTO file_hdus(source, path, hdus) VALUES (${src}, ?, ?)`)
  }

  /** Moves facts seeded without a source to this one (what this source already knows wins). */
  private adoptUnbound(): void {
    const any =
      this.db.prepare('SELECT 1 FROM file_facts WHERE source = 0 LIMIT 1').get() ??
      this.db.prepare('SELECT 1 FROM dir_listed WHERE source = 0 LIMIT 1').get()
    if (!any) return
    this.db.transaction(() => {
      for (const table of ['file_facts', 'dir_listed', 'file_hdus']) {
        this.db.prepare(`UPDATE OR IGNORE ${table} SET source = ? WHERE source = 0`).run(this.source)
        this.db.prepare(`DELETE FROM ${table} WHERE source = 0`).run()
      }
    })()
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

  /** A file's HDU index as recorded (JSON, '[]' for a file that is not FITS), or undefined if not walked yet. */
  hdus(path: string): string | undefined {
    return this.getHdus.get(path) as string | undefined
  }

  /** Records a file's HDU index (fs/fits-hdus.ts): archive files never change, so it is kept for good. */
  recordHdus(path: string, json: string): void {
    this.putHdus.run(path, json)
  }

  close(): void {
    this.db.close()
  }
}
