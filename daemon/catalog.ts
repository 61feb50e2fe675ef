// The catalog: the metadata DB (read-only) and desfs's tree index built from it. The index is keyed
// to the DB file's identity (device, inode, size, mtime) and the tree query, so a restart reuses it
// at once and a replaced DB gets a fresh one.
import { createHash } from 'node:crypto'
import { readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { dbIdentity, findTreeSource, openMetadataDb, type TreeSource } from './metadata.js'
import { log } from './log.js'
import { UserError } from './errors.js'
import { INDEX_FORMAT, type BuildProgress } from '../fs/tree-build.js'
import { buildInWorker } from '../fs/tree-build-worker.js'
import { TreeIndex } from '../fs/tree-index.js'

export interface CatalogOptions {
  dbPath: string
  stateDir: string
  treeQuery?: string | undefined
  onProgress?: (p: BuildProgress) => void
}

export interface Catalog {
  source: TreeSource
  index: TreeIndex
  /** True when the index was built now rather than reused. */
  built: boolean
}

function indexIdentity(dbPath: string, sql: string): string {
  const id = dbIdentity(dbPath)
  return createHash('sha256').update(JSON.stringify({ dbPath, ...id, sql, format: INDEX_FORMAT })).digest('hex').slice(0, 16)
}

/** Opens the metadata DB, finds its file table, and opens or builds the matching tree index. */
export async function openCatalog(opts: CatalogOptions): Promise<Catalog> {
  const db = openMetadataDb(opts.dbPath)
  let source: TreeSource
  try {
    source = findTreeSource(db, opts.dbPath, opts.treeQuery)
  } finally {
    db.close()
  }
  const identity = indexIdentity(opts.dbPath, source.sql)
  const file = join(opts.stateDir, `tree-${identity}.sqlite`)
  try {
    const index = new TreeIndex(file)
    log.info('tree index reused', { index: file, files: index.result.files, dirs: index.result.dirs })
    return { source, index, built: false }
  } catch (err) {
    if ((err as { code?: string }).code !== 'SQLITE_CANTOPEN') log.warn('tree index unusable; rebuilding', { index: file, error: (err as Error).message })
  }
  log.info('building tree index', { db: opts.dbPath, table: source.description })
  let lastLog = 0
  let result
  try {
    result = await buildInWorker({
      dbPath: opts.dbPath,
      sql: source.sql,
      outPath: file,
      identity,
      onProgress: (p) => {
        opts.onProgress?.(p)
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now()
          log.info('building tree index', { rows: p.rows, total: p.total })
        }
      },
    })
  } catch (err) {
    throw new UserError(`cannot build the tree from ${opts.dbPath} (${(err as Error).message}): the DB may be corrupt or truncated; re-download it with \`desfs db download --force\``)
  }
  log.info('tree index built', { files: result.files, dirs: result.dirs, rows: result.rows, seconds: result.seconds })
  if (result.skippedSummary) log.warn(`metadata rows refused: ${result.skippedSummary}`)
  // Older indexes (for replaced DBs) are of no further use.
  for (const name of readdirSync(opts.stateDir)) {
    if (/^tree-[0-9a-f]{16}\.sqlite$/.test(name) && name !== `tree-${identity}.sqlite`) rmSync(join(opts.stateDir, name), { force: true })
  }
  return { source, index: new TreeIndex(file), built: true }
}
