// POST /sql on the control socket: {"sql": "...", "timeoutMs": N?, "format": "ndjson"|"tsv"?}
// answered with the query's result stream (see sql-child.ts for the lines, sql-framing.ts for TSV). A query refused or failed before its first row gets a
// plain JSON error ({"error", "kind"}) with a 4xx/5xx status instead; a failure after rows were sent
// is the stream's last line. Closing the connection cancels the query.
import { pipeline } from 'node:stream/promises'
import type { ControlServer } from './control.js'
import { HttpError, sendJson } from './control.js'
import { DURATION_RANGES, durationSetting, type Setting } from '../config.js'
import { UserError } from '../errors.js'
import { SqlEngine } from '../sql/sql-engine.js'

/** The sql_timeout setting in ms (0 = none). */
export function sqlTimeoutMs(settings: Map<string, Setting>): number {
  return durationSetting(settings, 'sql_timeout')
}

const STATUS: Record<string, number> = { refused: 400, sql: 400, timeout: 408, db: 503, crashed: 500, cancelled: 499 }

export function registerSqlRoutes(control: ControlServer, opts: { db: string; settings: Map<string, Setting> }): SqlEngine {
  // Niceness 10: a CPU-bound query yields to the daemon serving reads of the mount.
  const engine = new SqlEngine({ dbPath: opts.db, timeoutMs: sqlTimeoutMs(opts.settings), spare: true, nice: 10 })
  control.route('POST', '/sql', async (_req, res, body) => {
    const b = (body ?? {}) as { sql?: unknown; timeoutMs?: unknown; format?: unknown }
    if (typeof b.sql !== 'string' || !b.sql.trim()) throw new HttpError(400, 'POST /sql needs a JSON body {"sql": "SELECT ..."}')
    const maxMs = DURATION_RANGES.sql_timeout.maxMs
    if (b.timeoutMs !== undefined && (typeof b.timeoutMs !== 'number' || !(b.timeoutMs >= 0) || b.timeoutMs > maxMs))
      throw new HttpError(400, `timeoutMs must be a number of milliseconds up to ${maxMs} (0 for none)`)
    const format = b.format ?? 'ndjson'
    if (format !== 'ndjson' && format !== 'tsv') throw new HttpError(400, 'format must be "ndjson" or "tsv"')
    let q
    try {
      q = await engine.query(b.sql, { timeoutMs: b.timeoutMs as number | undefined, format })
    } catch (err) {
      if (err instanceof UserError) return sendJson(res, 503, { error: err.message, kind: 'busy' })
      throw err
    }
    res.once('close', () => {
      if (!res.writableFinished) q.cancel()
    })
    const first = await q.first
    if ('error' in first) return sendJson(res, STATUS[first.kind] ?? 500, first)
    res.writeHead(200, { 'content-type': format === 'tsv' ? 'text/tab-separated-values; charset=utf-8' : 'application/x-ndjson' })
    // A client that goes away mid-stream makes the pipeline fail; the query is cancelled above.
    await pipeline(q.output, res).catch(() => undefined)
  })
  return engine
}
