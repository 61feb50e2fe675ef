// The catalog: the metadata DB (read-only) and desfs's tree index built from it. The index is keyed
// to the DB file's identity (device, inode, size, mtime) and the tree query, so a restart reuses it
// at once and a replaced DB gets a fresh one. Checking the DB, finding its file table and building
// run in a child process (prepareTreeIndex), at start and when the DB is replaced while mounted, so
// the mount keeps answering meanwhile, and so the build's memory (its SQLite cache, the directory
// map, what the allocator keeps afterwards) is given back to the system when it ends: a worker
// thread would leave tens of MB in the daemon for good.
import { createHash } from 'node:crypto'
import { readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fork } from 'node:child_process'
import { dbFileIdentity, findTreeSource, openMetadataDb, type DbIdentity } from './metadata.js'
import { log } from '../log.js'
import { EXIT, UserError } from '../errors.js'
import { formatDuration } from '../units.js'
import { childEnv } from '../parent-watch.js'
import { buildTreeIndex, INDEX_FORMAT, type BuildProgress, type BuildResult } from '../../fs/tree-build.js'
import { TreeIndex } from '../../fs/tree-index.js'

export interface CatalogOptions {
  dbPath: string
  stateDir: string
  treeQuery?: string | undefined
  onProgress?: (p: BuildProgress) => void
  /** Stops a build in progress (the daemon is stopping, or `desfs mount` went away); its reason says why. */
  signal?: AbortSignal
  /** Longest a build may take, ms (index_timeout); 0 for none. */
  timeoutMs?: number
}

export interface Prepared {
  /** The index file, complete and matching the DB as it was when the build ended. */
  file: string
  /** The DB file's identity the index was built from (dbFileIdentity). */
  dbFile: string
  /** What the tree was read from: a table name or 'custom tree query'. */
  table: string
  /** True when the index was built now rather than reused. */
  built: boolean
  result: BuildResult
  /** Why an existing index for this DB was not reused, when it was there but unusable. */
  unusable?: string
}

export interface Catalog extends Prepared {
  index: TreeIndex
  /** Inode of the index file when opened: another one there means it was deleted or replaced. */
  indexIno: number
}

const INDEX_NAME = /^tree-[0-9a-f]{16}\.sqlite$/

/** SQLite error codes that mean the DB file itself is damaged or unreadable. */
const DB_DAMAGE = /^SQLITE_(CORRUPT|NOTADB|IOERR|CANTOPEN|FULL)/

/** The name a build writes to until it is complete (fs/tree-build.ts), for the process `pid`. */
const partialName = (pid: number) => new RegExp(`^tree-[0-9a-f]{16}\\.sqlite\\.tmp-${pid}$`)

/** Removes what the build process `pid` left half-written in the state dir. */
function removePartial(stateDir: string, pid: number | undefined): void {
  if (pid === undefined) return
  const re = partialName(pid)
  for (const name of readdirSync(stateDir)) if (re.test(name)) rmSync(join(stateDir, name), { force: true })
}

function indexIdentity(dbPath: string, id: DbIdentity, sql: string): string {
  return createHash('sha256')
    .update(JSON.stringify({ dbPath, ...id, sql, format: INDEX_FORMAT }))
    .digest('hex')
    .slice(0, 16)
}

/**
 * Checks the metadata DB, finds its file table, and reuses or builds the matching index. Synchronous
 * and slow (a build reads every row): runs in a child process. Throws UserError for a DB that cannot
 * give a tree. A DB replaced while it was being read is read again (a few times at most), so the
 * index returned always matches the file now at dbPath. With `reuseOnly`, returns undefined rather
 * than building: quick enough for the daemon's own thread at start.
 */
export function prepareTreeIndex(opts: WorkerInput, onProgress?: (p: BuildProgress) => void, reuseOnly = false): Prepared | undefined {
  const ATTEMPTS = 3
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const db = openMetadataDb(opts.dbPath)
    let source
    try {
      source = findTreeSource(db, opts.dbPath, opts.treeQuery)
    } finally {
      db.close()
    }
    // Taken before the build opens the file: a replacement after this point is seen at the end.
    const idNow = dbFileIdentity(opts.dbPath)
    if (!idNow) continue
    const id = JSON.parse(idNow) as DbIdentity
    const identity = indexIdentity(opts.dbPath, id, source.sql)
    const file = join(opts.stateDir, `tree-${identity}.sqlite`)
    const base: Omit<Prepared, 'built' | 'result'> = { file, dbFile: JSON.stringify(id), table: source.description }
    try {
      const index = new TreeIndex(file)
      const result = index.result
      index.close()
      return { ...base, built: false, result }
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_CANTOPEN') base.unusable = (err as Error).message
    }
    if (reuseOnly) return undefined
    let result: BuildResult
    try {
      result = buildTreeIndex({ dbPath: opts.dbPath, sql: source.sql, outPath: file, identity, onProgress })
    } catch (err) {
      if (dbFileIdentity(opts.dbPath) !== base.dbFile && attempt < ATTEMPTS) continue
      // A query of the user's own that fails while running is a problem with the query, not the DB.
      if (opts.treeQuery && !DB_DAMAGE.test((err as { code?: string }).code ?? ''))
        throw new UserError(`--tree-query failed while the tree was built from ${opts.dbPath}: ${(err as Error).message}`, EXIT.USAGE)
      throw new UserError(
        `cannot build the tree from ${opts.dbPath} (${(err as Error).message}): the DB may be corrupt or truncated; re-download it with \`desfs db download --force\``,
      )
    }
    if (dbFileIdentity(opts.dbPath) === base.dbFile) return { ...base, built: true, result }
    // Replaced during the build: this index describes a file that is gone.
    rmSync(file, { force: true })
  }
  throw new UserError(`metadata DB ${opts.dbPath} keeps changing while its tree is built; wait until it is written completely`)
}

type WorkerInput = Omit<CatalogOptions, 'onProgress' | 'signal' | 'timeoutMs'>

export type WorkerMsg =
  | { type: 'progress'; progress: BuildProgress }
  | { type: 'done'; prepared: Prepared }
  | { type: 'error'; message: string; exitCode: number | undefined }

/**
 * prepareInWorker's answer when the build was stopped: it ran past index_timeout, or `signal` was
 * aborted (the daemon is stopping, `desfs mount` went away).
 */
export class BuildStopped extends UserError {}

/**
 * prepareTreeIndex in a child process; rejects with a UserError when the DB cannot give a tree. A
 * build that runs past `timeoutMs`, or whose `signal` aborts, is stopped: the process is killed, its
 * half-written index removed, one line logged, and the promise rejects with BuildStopped.
 */
export function prepareInWorker(opts: CatalogOptions): Promise<Prepared> {
  const { onProgress, signal, timeoutMs, ...data } = opts
  return new Promise((resolve, reject) => {
    // stdout is the detached daemon's channel to `desfs mount`: the child must not write there.
    const child = fork(new URL('./catalog-worker.js', import.meta.url), [JSON.stringify(data satisfies WorkerInput)], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      serialization: 'json',
      env: childEnv(),
    })
    let settled = false
    let stopped: BuildStopped | undefined
    const stop = (why: BuildStopped) => {
      if (settled || stopped) return
      stopped = why
      child.kill('SIGKILL')
    }
    const abort = () => {
      const reason = signal?.reason instanceof Error ? signal.reason.message : String(signal?.reason ?? 'cancelled')
      stop(new BuildStopped(`the tree index build was cancelled (${reason})`, EXIT.INTERRUPTED))
    }
    const limit = formatDuration(timeoutMs ?? 0)
    const timer = timeoutMs
      ? setTimeout(
          () =>
            stop(
              new BuildStopped(
                data.treeQuery
                  ? `--tree-query was still running after index_timeout (${limit}) and was stopped: check that it ends (a recursive CTE needs a limit), or allow more with --index-timeout`
                  : `building the tree index took longer than index_timeout (${limit}) and was stopped: allow more with --index-timeout`,
                data.treeQuery ? EXIT.USAGE : EXIT.FAILURE,
              ),
            ),
          timeoutMs,
        )
      : undefined
    signal?.addEventListener('abort', abort)
    if (signal?.aborted) abort()
    const settle = (fn: () => void) => {
      signal?.removeEventListener('abort', abort)
      clearTimeout(timer)
      if (settled) return
      settled = true
      fn()
    }
    child.on('message', (msg: WorkerMsg) => {
      if (stopped) return
      if (msg.type === 'progress') onProgress?.(msg.progress)
      else if (msg.type === 'done') settle(() => resolve(msg.prepared))
      else settle(() => reject(msg.exitCode === undefined ? new Error(msg.message) : new UserError(msg.message, msg.exitCode)))
    })
    child.on('error', (err) => settle(() => reject(err)))
    // 'close' comes after the last message (unlike 'exit'), so a normal end has settled by then.
    child.on('close', (code, sig) => {
      if (stopped && !settled) {
        try {
          removePartial(data.stateDir, child.pid)
        } catch (err) {
          log.warn('could not remove a partial tree index', { error: (err as Error).message })
        }
        log.warn(`${stopped.message}; its partial index was removed`)
        return settle(() => reject(stopped))
      }
      settle(() => reject(new Error(`tree index process exited (${sig ?? `code ${code}`})`)))
    })
  })
}

/** The child's side: runs prepareTreeIndex and reports progress and the outcome, then exits. */
export function serveWorker(send: (m: WorkerMsg) => void, data: WorkerInput): void {
  try {
    const prepared = prepareTreeIndex(data, (progress) => send({ type: 'progress', progress }))!
    send({ type: 'done', prepared })
  } catch (err) {
    send({ type: 'error', message: (err as Error).message, exitCode: err instanceof UserError ? err.exitCode : undefined })
  }
}

/** Opens a prepared index, noting its inode. */
export function openPrepared(p: Prepared): Catalog {
  const index = new TreeIndex(p.file)
  return { ...p, index, indexIno: statSync(p.file).ino }
}

/** Removes index files other than `keep` (built for DBs that have since been replaced). */
export function removeOtherIndexes(stateDir: string, keep: string): void {
  for (const name of readdirSync(stateDir)) {
    if ((INDEX_NAME.test(name) || /^tree-[0-9a-f]{16}\.sqlite\.tmp-\d+$/.test(name)) && join(stateDir, name) !== keep)
      rmSync(join(stateDir, name), { force: true })
  }
}

/** Logs what a prepare did: reuse, or a build with its counts and refusals. */
export function logPrepared(p: Prepared, dbPath: string): void {
  if (p.unusable) log.warn('tree index unusable; rebuilt it', { index: p.file, error: p.unusable })
  if (!p.built) log.info('tree index reused', { index: p.file, files: p.result.files, dirs: p.result.dirs })
  else {
    log.info('tree index built', {
      db: dbPath,
      table: p.table,
      files: p.result.files,
      dirs: p.result.dirs,
      rows: p.result.rows,
      seconds: p.result.seconds,
    })
    if (p.result.skippedSummary) log.warn(`metadata rows refused: ${p.result.skippedSummary}`)
  }
}

/**
 * Opens the metadata DB, finds its file table, and opens or builds the matching tree index (at start).
 * An index that is there is found in this thread (a restart should answer within a second or two);
 * a build runs in a child process.
 */
export async function openCatalog(opts: CatalogOptions): Promise<Catalog> {
  let lastLog = 0
  const prepared =
    prepareTreeIndex(opts, undefined, true) ??
    (await prepareInWorker({
      ...opts,
      onProgress: (p) => {
        opts.onProgress?.(p)
        if (p.rows > 0 && Date.now() - lastLog > 5000) {
          lastLog = Date.now()
          log.info('building tree index', { rows: p.rows, total: p.total })
        }
      },
    }).catch((err: Error) => {
      throw err instanceof UserError ? err : new UserError(`cannot prepare the tree index: ${err.message}`, EXIT.FAILURE)
    }))
  logPrepared(prepared, opts.dbPath)
  const catalog = openPrepared(prepared)
  removeOtherIndexes(opts.stateDir, prepared.file)
  return catalog
}
