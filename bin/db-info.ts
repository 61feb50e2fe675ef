// What a metadata DB file holds, and whether a freshly downloaded one may replace the current DB: it
// must open as SQLite (SQLite itself reports a file shorter than its header says as malformed) and
// have the file table the tree is built from. A full integrity check would read all 8 GB; the zstd
// frame checksum and the Content-Length already cover the transfer.
import { statSync } from 'node:fs'
import { findTreeSource, openMetadataDb } from '../daemon/catalog/metadata.js'
import { UserError } from '../daemon/errors.js'

export interface DbInfo {
  path: string
  bytes: number
  modified: string
  /** The table the tree comes from (Y6A2_FILE_ARCHIVE_INFO). */
  fileTable: string
  tables: { name: string; rows?: number }[]
}

/** Opens the file read-only and checks it; throws UserError naming what is wrong. */
export function checkMetadataDb(path: string, what = 'metadata DB'): DbInfo {
  let db
  try {
    db = openMetadataDb(path)
  } catch (err) {
    throw new UserError((err as Error).message.replace(/:\s*(download|re-download) it.*$/, '').replace(/^metadata DB/, what))
  }
  try {
    const st = statSync(path)
    const source = findTreeSource(db, path)
    const tables = (
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as {
        name: string
      }[]
    ).map((r) => ({ name: r.name }))
    return { path, bytes: st.size, modified: st.mtime.toISOString(), fileTable: source.description, tables }
  } finally {
    db.close()
  }
}

/** Adds row counts (a full count per table: seconds on the 8 GB DB). */
export function countRows(info: DbInfo): DbInfo {
  const db = openMetadataDb(info.path)
  try {
    for (const t of info.tables)
      t.rows = Number(
        db
          .prepare(`SELECT count(*) FROM "${t.name.replace(/"/g, '""')}"`)
          .pluck()
          .get(),
      )
  } finally {
    db.close()
  }
  return info
}
