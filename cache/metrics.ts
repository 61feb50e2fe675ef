// The cache's and the fetcher's metrics, created once in the daemon's registry. Gauges that describe
// the store are computed when scraped from the store bound last (one store per daemon).
import { metrics } from '../daemon/metrics.js'
import { Counters } from './counters.js'

interface StoreView {
  readonly bytes: number
  readonly limit: number
  summary(): Record<string, number | string>
}

let store: StoreView | undefined

export const cacheMetrics = {
  bind(s: StoreView): void {
    store = s
  },
  bytes: metrics.gauge('desfs_cache_bytes', 'Bytes of archive data in the cache', { value: () => store?.bytes ?? 0 }),
  limit: metrics.gauge('desfs_cache_limit_bytes', 'Size bound of the cache', { value: () => store?.limit ?? 0 }),
  pinned: metrics.gauge('desfs_cache_pinned_bytes', 'Bytes of pinned files in the cache', {
    value: () => Number(store?.summary().pinnedBytes ?? 0),
  }),
  evictedFiles: metrics.counter('desfs_cache_evicted_files_total', 'Files evicted from the cache'),
  evictedBlocks: metrics.counter('desfs_cache_evicted_blocks_total', 'Blocks evicted from the cache'),
  corruptBlocks: metrics.counter('desfs_cache_corrupt_blocks_total', 'Cached blocks that failed their checksum and were dropped'),
  notStored: metrics.counter(
    'desfs_cache_not_stored_blocks_total',
    'Fetched blocks served from memory without storing (no room, disk full)',
  ),
  writeErrors: metrics.counter('desfs_cache_write_errors_total', 'Failed writes to the cache, by errno code', ['code']),
}

/** Bytes received per source, daemon-wide: what the site cache's hit ratio is computed from. */
const fetchedBySource: Record<string, number> = {}

/**
 * The site cache's hit ratio as desfs sees it: bytes fetched from the site / bytes fetched from every
 * source (0 before anything was fetched). What the site cache itself fetched from the archive on a
 * miss is not seen here: a miss at the site still counts as bytes from the site.
 */
export function siteHitRatio(bySource: Record<string, number>): number {
  const total = Object.values(bySource).reduce((a, b) => a + b, 0)
  return total > 0 ? (bySource.site ?? 0) / total : 0
}

export const fetchMetrics = {
  /** tier: memory (recent blocks), disk (the cache), network (fetched for this read). */
  hits: metrics.counter('desfs_read_hits_total', 'Block reads by where the bytes came from (memory, disk, network)', ['tier']),
  // Not the bytes a reader got: those of the mount's reads are desfs_fuse_bytes_served_total (fs/ops.ts).
  bytesAsked: metrics.counter(
    'desfs_fetcher_asked_bytes_total',
    "Bytes asked of the fetcher's reads (the mount's reads that reach the daemon, header reads), counted when asked, whether the read succeeds or not",
  ),
  bytesFetched: metrics.counter('desfs_fetch_bytes_total', 'Bytes received from sources, by source', ['source']),
  requests: metrics.counter('desfs_fetch_requests_total', 'Requests to sources, by source', ['source']),
  errors: metrics.counter('desfs_fetch_errors_total', 'Failed requests to sources, by source and kind', ['source', 'kind']),
  retries: metrics.counter('desfs_fetch_retries_total', 'Requests retried after a failure'),
  failures: metrics.counter('desfs_fetch_failures_total', 'Fetches that failed on every source (the reader got EIO)'),
  latency: metrics.histogram('desfs_fetch_request_seconds', 'Duration of requests to sources, by source', ['source']),
  inflightRequests: metrics.gauge('desfs_fetch_inflight_requests', 'Requests to sources in flight'),
  inflightBytes: metrics.gauge('desfs_fetch_inflight_bytes', 'Bytes being fetched or waiting to be stored'),
  sourceDown: metrics.gauge('desfs_source_down', 'Sources marked down after repeated connection failures (1 = down)', {
    labelNames: ['source'],
  }),
  siteHitRatio: metrics.gauge(
    'desfs_site_hit_ratio',
    'Share of the bytes fetched that came from the site cache (bytes from site / bytes fetched from all sources)',
    { value: () => siteHitRatio(fetchedBySource) },
  ),
}

/** The store's figures (block-store.ts) and the metric each feeds; `blockSize` turns evicted bytes into blocks. */
export function storeCounters(blockSize: number) {
  return new Counters({
    blocksWritten: null,
    blocksDropped: null,
    writeErrors: (n, code) => cacheMetrics.writeErrors.inc({ code: code ?? 'unknown' }, n),
    filesEvicted: (n) => cacheMetrics.evictedFiles.inc(n),
    bytesEvicted: (n) => cacheMetrics.evictedBlocks.inc(Math.ceil(n / blockSize)),
    notStored: (n) => cacheMetrics.notStored.inc(n),
    directBytes: null,
  })
}

/**
 * The fetcher's figures (fetcher.ts, fetch-run.ts) and the metric each feeds; the label is the
 * source's name. `bySource` keeps the bytes fetched per source besides (site vs archive, for status).
 */
export function fetchCounters() {
  const bySource: Record<string, number> = {}
  const counters = new Counters({
    requests: (n, source) => fetchMetrics.requests.inc({ source: source ?? 'any' }, n),
    bytesFetched: (n, source = 'any') => {
      fetchMetrics.bytesFetched.inc({ source }, n)
      bySource[source] = (bySource[source] ?? 0) + n
      fetchedBySource[source] = (fetchedBySource[source] ?? 0) + n
    },
    retries: (n) => fetchMetrics.retries.inc(n),
    failures: (n) => fetchMetrics.failures.inc(n),
    memoryHits: (n) => fetchMetrics.hits.inc({ tier: 'memory' }, n),
    diskHits: (n) => fetchMetrics.hits.inc({ tier: 'disk' }, n),
    networkReads: (n) => fetchMetrics.hits.inc({ tier: 'network' }, n),
  })
  return Object.assign(counters, { bySource })
}

export type StoreCounters = ReturnType<typeof storeCounters>
export type FetchCounters = ReturnType<typeof fetchCounters>
