// Builds desfs's tree index from the metadata DB: one streaming pass over the tree rows, writing
// (parent, name, dir-id) into a fresh SQLite file. Only directory paths are held in memory while
// building (a few hundred thousand for the whole DES archive, and never more than a bounded cache);
// files go straight to disk. The result
// is written under a temporary name and renamed into place only when complete, so a crash or a bad
// DB never leaves a half-built index that looks finished.
import Database from 'better-sqlite3'
import { renameSync, rmSync } from 'node:fs'
import { checkName, checkPath, describeRow, pathTooLong, RefusalTally, type CheckedPath, type RefusalReason } from './tree-rules.js'

export const INDEX_FORMAT = 1

export interface BuildProgress {
  rows: number
  total: number
}

export interface BuildResult {
  files: number
  dirs: number
  rows: number
  skipped: ReturnType<RefusalTally['toJSON']>
  skippedSummary: string
  seconds: number
}

export interface BuildInput {
  dbPath: string
  sql: string
  outPath: string
  identity: string
  onProgress?: (p: BuildProgress) => void
}

export const INDEX_SCHEMA = `
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- One row per file or directory. dir is the directory's own id, or NULL for a file.
-- (parent, name) is the key, so lookup and readdir are index seeks.
CREATE TABLE node(parent INTEGER NOT NULL, name TEXT NOT NULL, dir INTEGER, PRIMARY KEY(parent, name)) WITHOUT ROWID;
`

export const ROOT_ID = 1

/** Entries in each of the build's in-memory caches (directory ids, checked PATH values). */
const CACHE_LIMIT = 1_000_000

export function buildTreeIndex(input: BuildInput): BuildResult {
  const t0 = Date.now()
  const tmp = `${input.outPath}.tmp-${process.pid}`
  rmSync(tmp, { force: true })
  const src = new Database(input.dbPath, { readonly: true, fileMustExist: true })
  const out = new Database(tmp)
  try {
    src.pragma('query_only = ON')
    out.pragma('journal_mode = OFF')
    out.pragma('synchronous = OFF')
    out.pragma('cache_size = -65536')
    out.exec(INDEX_SCHEMA)
    const insert = out.prepare('INSERT OR IGNORE INTO node(parent, name, dir) VALUES (?, ?, ?)')
    const existing = out.prepare('SELECT dir FROM node WHERE parent = ? AND name = ?').pluck()

    let total = 0
    try {
      const m = /^\s*SELECT\s+.+\s+FROM\s+("[^"]+"|\w+)\s*$/is.exec(input.sql)
      total = m ? (src.prepare(`SELECT count(*) FROM ${m[1]}`).pluck().get() as number) : 0
    } catch {
      total = 0
    }

    // Directory path ('a/b/c') -> id; -1 marks a path that clashes with a file and is refused. Only a
    // cache of what the index being written already knows, so it is emptied when it grows too big
    // (a DB with millions of distinct directories would otherwise fill the memory).
    const dirs = new Map<string, number>()
    let nextDir = ROOT_ID + 1
    let files = 0
    let rows = 0
    const tally = new RefusalTally()

    const dirId = (segs: string[]): number => {
      if (segs.length === 0) return ROOT_ID
      const key = segs.join('/')
      const known = dirs.get(key)
      if (known !== undefined) return known
      if (dirs.size >= CACHE_LIMIT) dirs.clear()
      const parent = dirId(segs.slice(0, -1))
      if (parent < 0) {
        dirs.set(key, -1)
        return -1
      }
      const name = segs[segs.length - 1]!
      let id = nextDir
      if (insert.run(parent, name, id).changes === 1) nextDir++
      else {
        const dir = existing.get(parent, name) as number | null
        id = dir === null ? -1 : dir
      }
      dirs.set(key, id)
      return id
    }

    // Each distinct PATH value is checked and resolved to its directory id once: DES directories
    // hold tens to thousands of files, and the rows of one directory are mostly near each other.
    // Directories are created only for a row that is accepted, so a refused row leaves no trace.
    type PathInfo = { path: CheckedPath; id?: number } | { refused: RefusalReason }
    const paths = new Map<string, PathInfo>()
    const pathInfo = (raw: unknown): PathInfo => {
      const key = raw == null ? '' : String(raw)
      let info = paths.get(key)
      if (!info) {
        if (paths.size >= CACHE_LIMIT) paths.clear()
        const path = checkPath(key)
        info = typeof path === 'string' ? { refused: path } : { path }
        paths.set(key, info)
      }
      return info
    }

    const BATCH = 50_000
    out.exec('BEGIN')
    const stmt = src.prepare(input.sql).raw(true)
    for (const row of stmt.iterate() as IterableIterator<unknown[]>) {
      rows++
      const [p, f, c] = row
      const name = checkName(f, c)
      const info = typeof name === 'string' ? pathInfo(p) : name
      let reason: RefusalReason | undefined
      if ('refused' in info) reason = info.refused
      else if (pathTooLong(info.path, name as string)) reason = 'path too long'
      else {
        info.id ??= dirId(info.path.dir)
        if (info.id < 0) reason = 'file/directory clash'
        else if (insert.run(info.id, name, null).changes === 1) files++
        else reason = existing.get(info.id, name) === null ? 'duplicate' : 'file/directory clash'
      }
      if (reason) tally.add(reason, describeRow(p, f, c))
      if (rows % BATCH === 0) {
        out.exec('COMMIT; BEGIN')
        input.onProgress?.({ rows, total })
      }
    }
    const dirCount = nextDir - ROOT_ID
    const result: BuildResult = {
      files,
      dirs: dirCount,
      rows,
      skipped: tally.toJSON(),
      skippedSummary: tally.total ? tally.summary() : '',
      seconds: (Date.now() - t0) / 1000,
    }
    const setMeta = out.prepare('INSERT INTO meta(key, value) VALUES (?, ?)')
    setMeta.run('format', String(INDEX_FORMAT))
    setMeta.run('identity', input.identity)
    setMeta.run('result', JSON.stringify(result))
    setMeta.run('built_at', new Date().toISOString())
    out.exec('COMMIT')
    input.onProgress?.({ rows, total: Math.max(total, rows) })
    out.close()
    src.close()
    renameSync(tmp, input.outPath)
    return result
  } catch (err) {
    try {
      out.close()
    } catch {
      /* already closed */
    }
    try {
      src.close()
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true })
    throw err
  }
}
