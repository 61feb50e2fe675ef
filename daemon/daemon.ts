// The daemon's life: start everything in order (state dir, control socket, catalog, token, sources,
// cache, mount), answer the control socket, and take it all down again on a signal or a request,
// unmounting first so no reader is left facing a dead mount.
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { DaemonConfig } from './config.js'
import { ControlServer } from './control/control.js'
import { openCatalog, type Catalog } from './catalog/catalog.js'
import { TreeReloader } from './catalog/tree-reload.js'
import { log } from './log.js'
import { SOCKET_NAME } from './paths.js'
import { ensurePrivateDir } from './state-dir.js'
import { TokenProvider } from './token/token.js'
import { startTokenRefresher, type TokenRefresher } from './token/token-refresher.js'
import { formatSize } from './units.js'
import { registerCacheRoutes } from './control/routes-cache.js'
import { registerSqlRoutes } from './control/routes-sql.js'
import { registerMetricsRoutes } from './control/routes-metrics.js'
import { eventLoopLag } from './metrics.js'
import { registerReloadRoutes } from './control/routes-reload.js'
import { registerJobRoutes, type JobRouteDeps } from './control/routes-jobs.js'
import { startJobs } from './jobs/jobs-setup.js'
import { HeaderReader } from './jobs/headers-index.js'
import { headersRunner } from './jobs/headers.js'
import { registerHeadersRoutes } from './control/routes-headers.js'
import type { JobManager } from './jobs/jobs.js'
import type { SqlEngine } from './sql/sql-engine.js'
import type { BlockStore } from '../cache/block-store.js'
import type { Fetcher } from '../cache/fetcher.js'
import { buildSources, openReadPath } from '../cache/setup.js'
import type { SourceSet } from '../cache/sources/source-set.js'
import { Facts, MISSING } from '../fs/facts.js'
import { Mount, prepareMountpoint } from '../fs/mount.js'
import { cacheWriters } from '../fs/native.js'
import { startMemoryGuard } from '../fs/memory-guard.js'
import { createOps, type OpsStats } from '../fs/ops.js'
import { FileHandles } from '../cache/file-handle.js'
import { Tree } from '../fs/tree.js'
import { CONTROL_DIR, QueryDirs } from '../fs/query-dirs.js'
import { findTreeSource, openMetadataDb } from './catalog/metadata.js'
import * as testHooks from './test-hooks.js'
import { ROOT_ID, type BuildProgress } from '../fs/tree-build.js'

/** Resident memory above which the kernel is asked to forget cached names (see fs/memory-guard.ts). */
const MEMORY_LIMIT = 250e6

export interface DaemonEvents {
  onProgress?: (p: BuildProgress) => void
}

export class Daemon {
  readonly config: DaemonConfig
  readonly startedAt = Date.now()
  control!: ControlServer
  catalog!: Catalog
  token!: TokenProvider
  tokenRefresher: TokenRefresher | undefined
  sources!: SourceSet
  facts!: Facts
  tree!: Tree
  store!: BlockStore
  fetcher!: Fetcher
  headers!: HeaderReader
  mount!: Mount
  reloader: TreeReloader | undefined
  private stopMemoryGuard: (() => void) | undefined
  opsStats!: OpsStats
  queryDirs!: QueryDirs
  sql: SqlEngine | undefined
  jobs: JobManager | undefined
  jobDeps: JobRouteDeps | undefined
  cacheSize = 0
  private stopping: Promise<void> | undefined
  /** Stops a start-up still under way (an index build) when the daemon is stopped meanwhile. */
  private startAbort = new AbortController()
  /** The catalog being opened at start: a stop waits until a build it called off has cleaned up. */
  private opening: Promise<unknown> | undefined

  constructor(config: DaemonConfig) {
    this.config = config
  }

  async start(events: DaemonEvents = {}): Promise<void> {
    const c = this.config
    ensurePrivateDir(c.stateDir, 'state dir')
    ensurePrivateDir(c.cacheDir, 'cache dir')
    // Cheap checks first, so a bad mountpoint is reported before minutes of index building.
    await prepareMountpoint(c.mountpoint)
    this.control = new ControlServer(join(c.stateDir, SOCKET_NAME))
    await this.control.listen()
    this.registerRoutes()
    registerCacheRoutes(this.control, {
      mountpoint: c.mountpoint,
      store: () => this.store,
      fetcher: () => this.fetcher,
      tree: () => this.tree,
      sources: () => this.sources,
    })

    const opening = openCatalog({
      dbPath: c.db,
      stateDir: c.stateDir,
      treeQuery: c.treeQuery,
      onProgress: events.onProgress,
      timeoutMs: c.indexTimeoutMs,
      signal: this.startAbort.signal,
    })
    this.opening = opening.catch(() => undefined)
    this.catalog = await opening
    this.token = new TokenProvider(c.tokenFile ? { ...process.env, DESFS_TOKEN_FILE: c.tokenFile } : process.env)
    const tok = await this.token.start()
    if (tok.problem) log.warn('starting without a usable bearer token; reads will fail until one appears', { problem: tok.problem })
    this.tokenRefresher = await startTokenRefresher(this.control, this.token)

    this.sources = buildSources(c, this.token)
    this.facts = new Facts(join(c.stateDir, 'facts.sqlite'), this.sources.identity)
    if (this.facts.discarded)
      log.info('facts from an older desfs discarded (their source is unknown); they are learned again', { files: this.facts.discarded })
    this.tree = new Tree(this.catalog.index, this.facts, this.sources, { deadlineMs: c.readTimeoutMs })
    ;({ store: this.store, fetcher: this.fetcher } = await openReadPath(c, this.sources, cacheWriters()))
    this.cacheSize = this.store.limit
    this.headers = new HeaderReader({ facts: this.facts, store: this.store, fetcher: this.fetcher })
    this.store.tier.keep = (rel) => this.headers.headerRanges(rel) // evicted files keep their headers

    // .desfs: queries in the SQL engine, stopped a little before the FUSE deadline so the log names them.
    this.queryDirs = new QueryDirs({
      select: (sql, params, timeoutMs) => this.sql!.all(sql, { params, timeoutMs }),
      fileRows: () => {
        const db = openMetadataDb(c.db)
        try {
          return findTreeSource(db, c.db, c.treeQuery).sql
        } finally {
          db.close()
        }
      },
      inTree: (rel) => this.tree.current.lookup(rel)?.dir === null,
      // Files the archive lacks are hidden, as in the tree's own listings; unknown (archive down) counts as present.
      present: (rel) =>
        this.tree.fileFacts(rel).then(
          (f) => f.size !== MISSING,
          () => true,
        ),
      timeoutMs: Math.max(1000, c.readTimeoutMs - 2000),
    })
    const ops = createOps({
      queryDirs: this.queryDirs,
      tree: this.tree,
      files: new FileHandles(this.store, this.fetcher),
      cacheDir: this.store.dir,
      deadlineMs: c.readTimeoutMs,
      locate: (rel) => this.sources.locate(rel),
      mountTime: this.startedAt,
      released: (rel) => this.forgetIfRemoved(rel),
      hdus: (rel, facts) => this.headers.attribute(rel, facts),
      walkHdus: (rel, file) => this.headers.walkOnOpen(rel, file),
    })
    this.mount = new Mount(c.mountpoint)
    const { addon, plane } = await this.mount.mount(ops.dispatch, {
      allowOther: c.allowOther,
      deadlineMs: c.readTimeoutMs,
      mountTimeMs: this.startedAt,
      passthrough: c.passthrough,
      readAhead: this.fetcher.readAheadShape,
      ...testHooks.planeOptions(),
    })
    ops.bind(addon, plane)
    this.opsStats = ops.stats
    this.reloader = new TreeReloader(
      {
        dbPath: c.db,
        stateDir: c.stateDir,
        treeQuery: c.treeQuery,
        timeoutMs: c.indexTimeoutMs,
        retireMs: 2 * c.readTimeoutMs,
        swapIn: (next) => this.swapTree(next),
      },
      this.catalog,
    )
    await this.reloader.start()
    void this.reloader.check() // the DB may have been replaced while the mount came up
    this.stopMemoryGuard = startMemoryGuard({
      limitBytes: MEMORY_LIMIT,
      intervalMs: 5000,
      minGapMs: 30_000,
      forget: () => this.mount.invalidate(this.tree.current.list(ROOT_ID).map((e) => e.name)),
      paused: () => this.reloader?.status.state === 'building',
    })
    ;({ jobs: this.jobs, deps: this.jobDeps } = startJobs({
      stateDir: c.stateDir,
      mountpoint: c.mountpoint,
      tree: this.tree,
      store: this.store,
      fetcher: this.fetcher,
      sources: this.sources,
      sql: this.sql!,
      runners: [headersRunner({ facts: (rel) => this.tree.fileFacts(rel), reader: this.headers })],
    }))
    log.info('mounted', {
      mountpoint: c.mountpoint,
      archive: c.archive,
      files: this.catalog.index.result.files,
      cache: `${c.cacheDir} (${formatSize(this.store.bytes)} of ${formatSize(this.cacheSize)})`,
    })
  }

  /** Puts a rebuilt tree in service and makes the kernel forget names it cached from the old one. */
  private async swapTree(next: Catalog): Promise<void> {
    const roots = new Set(this.tree.current.list(ROOT_ID).map((e) => e.name))
    this.tree.swap(next.index)
    this.queryDirs.clear()
    roots.add(CONTROL_DIR)
    this.mount.forgetTree()
    this.catalog = next
    for (const e of next.index.list(ROOT_ID)) roots.add(e.name)
    await this.mount.invalidate(roots)
  }

  /**
   * A file removed from the tree by a swap but open at the time keeps its kernel entry (the kernel
   * cannot drop names in use); once closed, the kernel is told again, so stat stops finding it.
   */
  private forgetIfRemoved(rel: string): void {
    if (this.tree.current.lookup(rel)?.dir === null) return
    void this.mount.invalidate(
      this.tree.current
        .list(ROOT_ID)
        .map((e) => e.name)
        .concat(rel.split('/')[0]!),
    )
  }

  private registerRoutes(): void {
    this.control.route('GET', '/status', async () => ({
      ...this.status(),
      dbFile: await stat(this.config.db).then(
        (s) => ({ bytes: s.size, modified: s.mtime.toISOString() }),
        () => null,
      ),
      eventLoop: await eventLoopLag(),
    }))
    this.sql = registerSqlRoutes(this.control, this.config)
    registerMetricsRoutes(this.control, {
      startedAt: this.startedAt,
      opsStats: () => this.opsStats,
      tokenExpiry: () => this.token?.current.exp,
    })
    registerReloadRoutes(this.control, { dbPath: this.config.db, token: () => this.token, recycleSql: () => this.sql?.recycle() })
    const jobsReady = () => (this.jobs && this.jobDeps ? { jobs: this.jobs, deps: this.jobDeps } : undefined)
    registerJobRoutes(this.control, jobsReady)
    registerHeadersRoutes(this.control, jobsReady)
    testHooks.register(this.control)
    this.control.route('POST', '/shutdown', () => {
      setImmediate(() => void this.stop('shutdown requested'))
      return { ok: true }
    })
  }

  status(): Record<string, unknown> {
    const settings: Record<string, { value: string | undefined; source: string }> = {}
    for (const [k, v] of this.config.settings) settings[k] = v
    const tok = this.token?.current
    return {
      pid: process.pid,
      cwd: process.cwd(), // relative paths among the settings are relative to it
      mountpoint: this.config.mountpoint,
      startedAt: new Date(this.startedAt).toISOString(),
      ready: !!this.opsStats,
      db: this.config.db,
      archive: this.config.archive,
      tree: this.catalog
        ? { index: this.catalog.file, table: this.catalog.table, ...this.catalog.result, reload: this.reloader?.status }
        : null,
      token: tok
        ? {
            source: tok.source,
            subject: tok.subject,
            scopes: tok.scopes,
            expires: tok.exp ? new Date(tok.exp * 1000).toISOString() : undefined,
            problem: tok.problem,
          }
        : null,
      cache: this.store ? this.store.summary() : null,
      sources: this.sources
        ? this.sources.sources.map((s) => ({
            name: s.name,
            down: this.sources.isDown(s),
            bytesFetched: this.fetcher?.bytesBySource[s.name] ?? 0,
          }))
        : null,
      fetch: this.fetcher?.stats ?? null,
      archiveRequests: this.tree?.stats ?? null,
      ops: this.opsStats ?? null,
      plane: this.mount?.stats() ?? null,
      sql: this.sql?.status() ?? null,
      settings,
    }
  }

  /** Stops everything; safe to call more than once. `quiet` after a failed start (the error says it all). */
  stop(reason: string, quiet = false): Promise<void> {
    if (!this.stopping) {
      this.startAbort.abort(new Error(reason))
      this.stopping = (async () => {
        if (!quiet) log.info('stopping', { reason })
        await this.opening
        await this.jobs?.close()
        await this.mount?.unmount().catch((err) => log.warn('unmount failed', { error: (err as Error).message }))
        await this.reloader?.close()
        this.stopMemoryGuard?.()
        await this.control?.close().catch(() => undefined)
        await this.tokenRefresher?.close().catch(() => undefined)
        await this.sql?.close()
        await this.token?.close().catch(() => undefined)
        await this.sources?.close().catch(() => undefined)
        await this.store?.close().catch(() => undefined)
        this.facts?.close()
        this.catalog?.index.close()
        if (!quiet) log.info('stopped')
      })()
    }
    return this.stopping
  }
}
