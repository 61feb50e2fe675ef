// Keeps the mounted tree in step with the metadata DB while mounted. des-archive-access replaces the
// DB wholesale (a new file renamed over the old one); desfs watches the DB's directory, waits until
// the events stop, builds the new index in a worker while the old one keeps answering, and swaps it
// in without unmounting. A replacement that cannot give a tree (truncated, corrupt, not SQLite, no
// file table) is reported in one log line and the old tree stays: a half-built or failed index is
// never swapped in. The index file deleted from under the daemon is noticed the same way: the open
// handle keeps answering (the file lives on until closed) while a new index is built, then swapped in.
import { watch, type FSWatcher } from 'chokidar'
import { stat } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { dbFileIdentity } from './metadata.js'
import { logPrepared, openPrepared, prepareInWorker, removeOtherIndexes, type Catalog } from './catalog.js'
import { log } from '../log.js'
import type { BuildProgress } from '../../fs/tree-build.js'

export interface ReloadOptions {
  dbPath: string
  stateDir: string
  treeQuery?: string | undefined
  /** Longest a build may take, ms (index_timeout). */
  timeoutMs?: number
  /** Quiet time after the last file event before checking (a copy in place produces many). */
  debounceMs?: number
  /** How long a replaced index stays open for operations that started with it. */
  retireMs: number
  /** Puts a new catalog in service; returns once lookups use it. */
  swapIn: (next: Catalog) => Promise<void>
}

export interface ReloadStatus {
  state: 'watching' | 'building' | 'failed'
  progress?: BuildProgress
  lastError?: string
  reloads: number
  lastReload?: string
}

const INDEX_FILE = /^tree-[0-9a-f]{16}\.sqlite$/

export class TreeReloader {
  private opts: ReloadOptions
  private catalog: Catalog
  private watcher: FSWatcher | undefined
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private again = false
  private closed = false
  private abort = new AbortController()
  private retired = new Set<Catalog>()
  readonly status: ReloadStatus = { state: 'watching', reloads: 0 }

  constructor(opts: ReloadOptions, catalog: Catalog) {
    this.opts = { ...opts, dbPath: resolve(opts.dbPath), stateDir: resolve(opts.stateDir) }
    this.catalog = catalog
  }

  get current(): Catalog {
    return this.catalog
  }

  /** Starts watching the DB's directory and the state dir; resolves once the watch is in place. */
  async start(): Promise<void> {
    const { dbPath, stateDir } = this.opts
    const dbDir = dirname(dbPath)
    const watcher = watch([dbDir, stateDir], {
      ignoreInitial: true,
      depth: 0,
      // Only the DB file and index files matter (not the DB's -wal/-journal, the log or the socket).
      ignored: (p) => p !== dbDir && p !== stateDir && p !== dbPath && !(dirname(p) === stateDir && INDEX_FILE.test(basename(p))),
    })
    watcher.on('all', (event, path) => {
      log.debug('tree source event', { event, path })
      this.schedule()
    })
    watcher.on('error', (err) => log.warn('cannot watch the metadata DB for replacement', { error: (err as Error).message }))
    await new Promise<void>((ready) => watcher.once('ready', () => ready()))
    this.watcher = watcher
  }

  /** Checks again once events have been quiet for the debounce time. */
  schedule(): void {
    if (this.closed) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.check(), this.opts.debounceMs ?? 1000)
  }

  /** Rebuilds and swaps if the DB was replaced or the index file is gone; one at a time. */
  check(): Promise<void> {
    if (this.running) {
      this.again = true
      return this.running
    }
    this.running = this.reload()
      .catch((err) =>
        log.error('tree reload failed with an internal error; still serving the previous tree', { error: (err as Error).stack }),
      )
      .finally(() => {
        this.running = undefined
        if (this.again && !this.closed) {
          this.again = false
          this.schedule()
        }
      })
    return this.running
  }

  private async reload(): Promise<void> {
    const { dbPath, stateDir } = this.opts
    const dbNow = dbFileIdentity(dbPath)
    const indexIno = await stat(this.catalog.file).then(
      (st) => st.ino,
      () => 0,
    )
    const dbChanged = dbNow !== this.catalog.dbFile
    if (!dbChanged && indexIno === this.catalog.indexIno) return
    if (this.closed) return
    log.info(
      dbChanged
        ? 'metadata DB replaced; building its tree in the background'
        : 'tree index file deleted or replaced; rebuilding it in the background',
      { db: dbPath },
    )
    this.status.state = 'building'
    let lastLog = 0
    let next: Catalog
    try {
      const prepared = await prepareInWorker({
        dbPath,
        stateDir,
        treeQuery: this.opts.treeQuery,
        signal: this.abort.signal,
        timeoutMs: this.opts.timeoutMs,
        onProgress: (p) => {
          this.status.progress = p
          if (p.rows > 0 && Date.now() - lastLog > 5000) {
            lastLog = Date.now()
            log.info('building tree index', { rows: p.rows, total: p.total })
          }
        },
      })
      if (this.closed) return
      logPrepared(prepared, dbPath)
      next = openPrepared(prepared)
    } catch (err) {
      if (this.closed) return
      this.status.state = 'failed'
      this.status.lastError = (err as Error).message
      log.error(`still serving the previous tree: ${(err as Error).message}`)
      return
    } finally {
      delete this.status.progress
    }
    const old = this.catalog
    await this.opts.swapIn(next)
    this.catalog = next
    this.retire(old)
    removeOtherIndexes(stateDir, next.file)
    this.status.state = 'watching'
    delete this.status.lastError
    this.status.reloads++
    this.status.lastReload = new Date().toISOString()
    log.info('new tree in service', { files: next.result.files, dirs: next.result.dirs, was: old.result.files })
  }

  /** Closes a replaced index once operations that started with it have had time to finish. */
  private retire(old: Catalog): void {
    this.retired.add(old)
    setTimeout(() => {
      if (this.retired.delete(old)) old.index.close()
    }, this.opts.retireMs).unref()
  }

  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    this.abort.abort(new Error('the daemon is stopping'))
    await this.watcher?.close()
    await this.running
    for (const c of this.retired) c.index.close()
    this.retired.clear()
  }
}
