// GET /metrics on the control socket: the daemon's registry in the Prometheus text format. The FUSE
// operation counts live in plain objects on the hot path (fs/ops.ts); the counters that show them are
// set to those running totals whenever the registry is read, rather than counted twice.
import type { ControlServer } from './control.js'
import { metrics } from '../metrics.js'
import type { OpsStats } from '../../fs/ops.js'

/** What the metrics route reads; each getter answers for the daemon as it is when scraped. */
export interface MetricsRouteDeps {
  startedAt: number
  /** The FUSE operation counts, once the mount is up. */
  opsStats: () => OpsStats | undefined
  /** When the bearer token expires (Unix time), if known. */
  tokenExpiry: () => number | undefined
}

export function registerMetricsRoutes(control: ControlServer, deps: MetricsRouteDeps): void {
  const byOp = (pick: (s: OpsStats) => Record<string, number>) => () => {
    const s = deps.opsStats()
    return s && Object.entries(pick(s)).map(([op, value]) => ({ labels: { op }, value }))
  }
  metrics.totals(
    'desfs_fuse_ops_total',
    'FUSE operations by kind',
    ['op'],
    byOp((s) => s.ops),
  )
  metrics.totals(
    'desfs_fuse_errors_total',
    'FUSE operations that failed with EIO (timeouts, archive failures), by kind',
    ['op'],
    byOp((s) => s.errors),
  )
  metrics.totals('desfs_fuse_bytes_served_total', 'bytes returned to readers of the mount', [], () => {
    const s = deps.opsStats()
    return s && [{ labels: {}, value: s.bytesServed }]
  })
  metrics.totals(
    'desfs_fuse_read_requested_bytes_total',
    "bytes the kernel's READ requests asked for, of those that reached the daemon (reads of cached blocks the FUSE plane serves itself are not counted)",
    [],
    () => {
      const s = deps.opsStats()
      return s && [{ labels: {}, value: s.bytesRequested }]
    },
  )
  metrics.gauge('desfs_start_time_seconds', 'when the daemon started (Unix time)', { value: () => Math.floor(deps.startedAt / 1000) })
  metrics.gauge('desfs_token_expiry_seconds', 'when the bearer token expires (Unix time; 0 when unknown or no token)', {
    value: () => deps.tokenExpiry() ?? 0,
  })

  control.route('GET', '/metrics', async (_req, res) => {
    const text = await metrics.render()
    res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) })
    res.end(text)
  })
}
