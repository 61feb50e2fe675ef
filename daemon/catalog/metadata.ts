// The des-archive-access metadata DB: opened read-only, never written. This module knows where the
// file tree lives in it (Y6A2_FILE_ARCHIVE_INFO: PATH/FILENAME+COMPRESSION) and turns every way the
// file can be wrong (missing, not SQLite, corrupt, no such table) into one line naming the fix.
import Database from 'better-sqlite3'
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs'
import { UserError, EXIT } from '../errors.js'
import { blankLiterals, firstKeyword } from '../sql/sql-text.js'

export type SqliteDb = Database.Database
type Statement = Database.Statement

const FIX_DB = 'download it with `desfs db download` (or des-archive-access-download-metadata) or point DES_ARCHIVE_ACCESS_DB / --db at it'

const FIX_REDOWNLOAD = FIX_DB.replace('download it', 're-download it').replace('db download', 'db download --force')

/**
 * What is wrong with a file that should be a SQLite database, judged from its 100-byte header: not
 * SQLite at all, or shorter than the page count its header records (a download cut short). SQLite
 * itself would only notice a truncation when a query reached the missing pages, possibly mid-build.
 */
export function sqliteFileProblem(path: string, size: number): string | undefined {
  const head = Buffer.alloc(100)
  const fd = openSync(path, 'r')
  let n: number
  try {
    n = readSync(fd, head, 0, 100, 0)
  } finally {
    closeSync(fd)
  }
  if (n < 100 || head.toString('latin1', 0, 16) !== 'SQLite format 3\0') return 'the file does not start with the SQLite header'
  const raw = head.readUInt16BE(16)
  const pageSize = raw === 1 ? 65536 : raw
  const pages = head.readUInt32BE(28)
  // The header's page count is valid only when its change counter matches "version-valid-for";
  // with a WAL file beside it, pages may live in the WAL instead.
  const valid = head.readUInt32BE(24) === head.readUInt32BE(92) && pages > 0
  if (valid && !existsSync(`${path}-wal`) && size < pages * pageSize) return `truncated: ${size} bytes, its header says ${pages * pageSize}`
  if (size % pageSize !== 0 && !existsSync(`${path}-wal`)) return `truncated: ${size} bytes is not a whole number of ${pageSize}-byte pages`
  return undefined
}

/** Opens the metadata DB read-only and checks that it really is a SQLite database. */
export function openMetadataDb(path: string): SqliteDb {
  let st
  try {
    st = statSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new UserError(`metadata DB not found at ${path}: ${FIX_DB}`)
    throw new UserError(`cannot read metadata DB ${path} (${code}): check its permissions`)
  }
  if (!st.isFile()) throw new UserError(`metadata DB ${path} is not a file: ${FIX_DB}`)
  const bad = sqliteFileProblem(path, st.size)
  if (bad) throw new UserError(`metadata DB ${path} is not a readable SQLite database (${bad}): ${FIX_REDOWNLOAD}`)
  let db: SqliteDb
  try {
    db = new Database(path, { readonly: true, fileMustExist: true })
    db.pragma('query_only = ON')
    // Touch the schema now: a non-SQLite or truncated file fails here rather than mid-build.
    db.prepare('SELECT count(*) FROM sqlite_master').get()
  } catch (err) {
    throw new UserError(`metadata DB ${path} is not a readable SQLite database (${(err as Error).message}): ${FIX_REDOWNLOAD}`)
  }
  return db
}

export interface TreeSource {
  /** SQL returning rows of (path, filename, compression), in that order. */
  sql: string
  /** What the SQL reads, for messages: 'Y6A2_FILE_ARCHIVE_INFO' or 'custom tree query'. */
  description: string
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * Finds the table that describes the file tree: a table named *FILE_ARCHIVE_INFO (case-insensitive,
 * Y6A2_ preferred) with PATH and FILENAME columns (COMPRESSION optional), or the user's tree query.
 */
export function findTreeSource(db: SqliteDb, dbPath: string, treeQuery?: string): TreeSource {
  if (treeQuery) {
    const refused = (why: string) =>
      new UserError(
        `--tree-query is refused: it ${why}; desfs only reads the metadata DB, give one SELECT returning (path, filename, compression)`,
        EXIT.USAGE,
      )
    if (/\bload_extension\b/i.test(blankLiterals(treeQuery))) throw refused('loads an extension (load_extension)')
    let stmt: Statement
    try {
      stmt = db.prepare(treeQuery)
    } catch (err) {
      throw new UserError(`--tree-query does not run on ${dbPath}: ${(err as Error).message}`, EXIT.USAGE)
    }
    // The connection is read-only, so a write would only fail mid-build, looking like a damaged DB.
    const kw = firstKeyword(treeQuery)
    if (!stmt.readonly) throw refused(`writes to the DB (${kw || 'a write'})`)
    if (kw === 'ATTACH' || kw === 'DETACH' || kw === 'PRAGMA') throw refused(`is a ${kw} statement`)
    if (!stmt.reader) throw refused('returns no rows')
    const cols = stmt.columns().length
    if (cols < 3)
      throw new UserError(`--tree-query must return three columns (path, filename, compression); it returns ${cols}`, EXIT.USAGE)
    return { sql: treeQuery, description: 'custom tree query' }
  }
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table','view')").all() as { name: string }[]).map(
    (r) => r.name,
  )
  const candidates = tables
    .filter((t) => /FILE_ARCHIVE_INFO$/i.test(t))
    .sort((a, b) => Number(/^Y6A2_/i.test(b)) - Number(/^Y6A2_/i.test(a)) || a.localeCompare(b))
  for (const table of candidates) {
    const cols = (db.prepare(`PRAGMA table_info(${quoteIdent(table)})`).all() as { name: string }[]).map((c) => c.name)
    const find = (want: string) => cols.find((c) => c.toUpperCase() === want)
    const path = find('PATH')
    const filename = find('FILENAME')
    if (!path || !filename) continue
    const compression = find('COMPRESSION')
    return {
      sql: `SELECT ${quoteIdent(path)}, ${quoteIdent(filename)}, ${compression ? quoteIdent(compression) : 'NULL'} FROM ${quoteIdent(table)}`,
      description: table,
    }
  }
  throw new UserError(
    `metadata DB ${dbPath} has no usable file table (looked for a table named like Y6A2_FILE_ARCHIVE_INFO with PATH and FILENAME columns; found ${tables.length ? tables.slice(0, 8).join(', ') : 'no tables'}): use the DES metadata DB or pass --tree-query 'SELECT path, filename, compression FROM ...'`,
  )
}

export type DbIdentity = { dev: number; ino: number; size: number; mtimeMs: number }

/**
 * The DB file's identity, as JSON of a DbIdentity: device, inode, size and mtime (to the ms) change
 * when des-archive-access replaces the file (a new one renamed over it) or it is rewritten in place.
 * '' when the file cannot be read (gone, or being replaced). The one definition that every caller
 * compares: the tree index's name and its reload, the SQL engine's query processes, POST /reload.
 */
export function dbFileIdentity(path: string): string {
  let st
  try {
    st = statSync(path)
  } catch {
    return ''
  }
  const id: DbIdentity = { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: Math.floor(st.mtimeMs) }
  return JSON.stringify(id)
}
