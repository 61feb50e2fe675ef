// GET /metrics on the control socket: the daemon's registry in the Prometheus text format. The FUSE
// operation counts live in plain objects on the hot path (fs/ops.ts); they are copied into counters
// when scraped rather than counted twice.
import type { ControlServer } from './control.js'
import type { Daemon } from './daemon.js'
import { metrics, type Counter } from './metrics.js'

/** Adds to a counter what a plain running total gained since the last scrape. */
function mirror(counter: Counter, totals: Record<string, number>, label: string): void {
  for (const [k, v] of Object.entries(totals)) {
    const labels = { [label]: k }
    const gained = v - counter.get(labels)
    if (gained > 0) counter.inc(labels, gained)
  }
}

export function registerMetricsRoutes(control: ControlServer, daemon: Daemon): void {
  const fuseOps = metrics.counter('desfs_fuse_ops_total', 'FUSE operations by kind')
  const fuseErrors = metrics.counter('desfs_fuse_errors_total', 'FUSE operations that failed with EIO (timeouts, archive failures), by kind')
  const served = metrics.counter('desfs_fuse_bytes_served_total', 'bytes returned to readers of the mount')
  const requested = metrics.counter('desfs_fuse_read_requested_bytes_total', 'bytes the kernel\'s READ requests asked for, of those that reached the daemon (reads of cached blocks the FUSE plane serves itself are not counted)')
  metrics.gauge('desfs_start_time_seconds', 'when the daemon started (Unix time)', () => Math.floor(daemon.startedAt / 1000))
  metrics.gauge('desfs_token_expiry_seconds', 'when the bearer token expires (Unix time; 0 when unknown or no token)', () => daemon.token?.current.exp ?? 0)

  control.route('GET', '/metrics', (_req, res) => {
    const s = daemon.opsStats
    if (s) {
      mirror(fuseOps, s.ops, 'op')
      mirror(fuseErrors, s.errors, 'op')
      if (s.bytesServed > served.get()) served.inc(undefined, s.bytesServed - served.get())
      if (s.bytesRequested > requested.get()) requested.inc(undefined, s.bytesRequested - requested.get())
    }
    const text = metrics.render()
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  })
}
