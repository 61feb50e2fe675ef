// The daemon's life: start everything in order (state dir, control socket, catalog, token, sources,
// cache, mount), answer the control socket, and take it all down again on a signal or a request,
// unmounting first so no reader is left facing a dead mount.
import { statfs } from 'node:fs/promises'
import { join } from 'node:path'
import type { DaemonConfig } from './config.js'
import { ControlServer } from './control.js'
import { openCatalog, type Catalog } from './catalog.js'
import { TreeReloader } from './tree-reload.js'
import { log } from './log.js'
import { SOCKET_NAME } from './paths.js'
import { ensurePrivateDir } from './state-dir.js'
import { TokenProvider } from './token.js'
import { formatSize } from './units.js'
import { BlockStore } from '../cache/block-store.js'
import { Fetcher } from '../cache/fetcher.js'
import { ArchiveSource } from '../cache/sources/archive.js'
import { HttpClient } from '../cache/sources/http-client.js'
import { Facts } from '../fs/facts.js'
import { Mount, prepareMountpoint } from '../fs/mount.js'
import { startMemoryGuard } from '../fs/memory-guard.js'
import { createOps, type OpsStats } from '../fs/ops.js'
import { Tree } from '../fs/tree.js'
import { ROOT_ID, type BuildProgress } from '../fs/tree-build.js'

/** Resident memory above which the kernel is asked to forget cached names (see fs/memory-guard.ts). */
const MEMORY_LIMIT = 250e6

export interface DaemonEvents {
  onProgress?: (p: BuildProgress) => void
}

/** Cache size when none is configured: a quarter of the cache disk, at most 100 GiB. */
export async function autoCacheSize(dir: string): Promise<number> {
  const s = await statfs(dir)
  return Math.min(100 * 1024 ** 3, Math.floor((s.blocks * s.bsize) / 4))
}

export class Daemon {
  readonly config: DaemonConfig
  readonly startedAt = Date.now()
  control!: ControlServer
  catalog!: Catalog
  token!: TokenProvider
  archive!: ArchiveSource
  facts!: Facts
  tree!: Tree
  store!: BlockStore
  fetcher!: Fetcher
  mount!: Mount
  reloader: TreeReloader | undefined
  private stopMemoryGuard: (() => void) | undefined
  opsStats!: OpsStats
  cacheSize = 0
  private stopping: Promise<void> | undefined

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

    this.catalog = await openCatalog({ dbPath: c.db, stateDir: c.stateDir, treeQuery: c.treeQuery, onProgress: events.onProgress })
    this.token = new TokenProvider(c.tokenFile ? { ...process.env, DESFS_TOKEN_FILE: c.tokenFile } : process.env)
    const tok = await this.token.start()
    if (tok.problem) log.warn('starting without a usable bearer token; reads will fail until one appears', { problem: tok.problem })

    const archiveUrl = new URL(c.archive)
    const http = new HttpClient({
      trustedOrigin: archiveUrl.origin,
      authorization: () => this.token.authorization(),
      reloadToken: async () => { await this.token.reload() },
      connectTimeoutMs: c.connectTimeoutMs,
      headersTimeoutMs: c.readTimeoutMs,
      stallTimeoutMs: Math.min(15_000, c.readTimeoutMs),
      caFile: c.caFile,
    })
    this.archive = new ArchiveSource({ base: c.archive, http })
    this.facts = new Facts(join(c.stateDir, 'facts.sqlite'))
    this.tree = new Tree(this.catalog.index, this.facts, this.archive, { deadlineMs: c.readTimeoutMs })
    this.store = new BlockStore(c.cacheDir)
    this.cacheSize = c.cacheSize ?? (await autoCacheSize(c.cacheDir))
    this.fetcher = new Fetcher([this.archive])

    const { ops, stats } = createOps({
      tree: this.tree,
      store: this.store,
      fetcher: this.fetcher,
      deadlineMs: c.readTimeoutMs,
      locate: (rel) => this.archive.locate(rel),
      mountTime: this.startedAt,
      released: (rel) => this.forgetIfRemoved(rel),
    })
    this.opsStats = stats
    this.mount = new Mount(c.mountpoint)
    await this.mount.mount(ops, { allowOther: c.allowOther, deadlineMs: c.readTimeoutMs })
    this.reloader = new TreeReloader({ dbPath: c.db, stateDir: c.stateDir, treeQuery: c.treeQuery, retireMs: 2 * c.readTimeoutMs, swapIn: (next) => this.swapTree(next) }, this.catalog)
    await this.reloader.start()
    void this.reloader.check() // the DB may have been replaced while the mount came up
    this.stopMemoryGuard = startMemoryGuard({
      limitBytes: MEMORY_LIMIT,
      intervalMs: 5000,
      minGapMs: 30_000,
      forget: () => this.mount.invalidate(this.tree.current.list(ROOT_ID).map((e) => e.name)),
      paused: () => this.reloader?.status.state === 'building',
    })
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
    void this.mount.invalidate(this.tree.current.list(ROOT_ID).map((e) => e.name).concat(rel.split('/')[0]!))
  }

  private registerRoutes(): void {
    this.control.route('GET', '/status', () => this.status())
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
      mountpoint: this.config.mountpoint,
      startedAt: new Date(this.startedAt).toISOString(),
      ready: !!this.opsStats,
      db: this.config.db,
      archive: this.config.archive,
      tree: this.catalog ? { index: this.catalog.file, table: this.catalog.table, ...this.catalog.result, reload: this.reloader?.status } : null,
      token: tok ? { source: tok.source, subject: tok.subject, scopes: tok.scopes, expires: tok.exp ? new Date(tok.exp * 1000).toISOString() : undefined, problem: tok.problem } : null,
      cache: this.store ? { dir: this.config.cacheDir, bytes: this.store.bytes, limit: this.cacheSize, ...this.store.stats } : null,
      fetch: this.fetcher?.stats ?? null,
      archiveRequests: this.tree?.stats ?? null,
      ops: this.opsStats ?? null,
      settings,
    }
  }

  /** Stops everything; safe to call more than once. `quiet` after a failed start (the error says it all). */
  stop(reason: string, quiet = false): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        if (!quiet) log.info('stopping', { reason })
        await this.mount?.unmount().catch((err) => log.warn('unmount failed', { error: (err as Error).message }))
        await this.reloader?.close()
        this.stopMemoryGuard?.()
        await this.control?.close().catch(() => undefined)
        await this.token?.close().catch(() => undefined)
        await this.archive?.close().catch(() => undefined)
        await this.store?.close().catch(() => undefined)
        this.facts?.close()
        this.catalog?.index.close()
        if (!quiet) log.info('stopped')
      })()
    }
    return this.stopping
  }
}
