// Running one statement for `desfs sql`: through the daemon's socket when one runs, otherwise on the
// DB directly with the same engine (daemon/sql-engine.ts), reading the NDJSON result line by line
// into a sink, and printing des-archive-access's `found N rows in S seconds (R rows/s)`.
import { StringDecoder } from 'node:string_decoder'
import { EXIT, UserError } from '../daemon/errors.js'
import type { ChildLine, ColumnInfo } from '../daemon/sql-child.js'
import { SqlEngine } from '../daemon/sql-engine.js'
import { callStream } from './client.js'
import { resolve } from 'node:path'
import type { ScriptStatement } from '../daemon/sql-text.js'
import { fileSink, formatOf, stdoutSink, type Sink, type Value } from './sql-output.js'

/** Exit codes by the kind of failure the engine reports. */
export const KIND_EXIT: Record<string, number> = { refused: EXIT.FAILURE, sql: EXIT.FAILURE, timeout: EXIT.FAILURE, crashed: EXIT.FAILURE, db: EXIT.CONFIG, busy: EXIT.UNAVAILABLE, cancelled: EXIT.INTERRUPTED }

export interface QueryOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

/** Where queries go: the daemon, or the DB itself. Either way a stream of NDJSON lines. */
export interface SqlTarget {
  readonly description: string
  open(sql: string, opts: QueryOptions): Promise<AsyncIterable<Buffer>>
  close(): Promise<void>
}

export function daemonTarget(sock: string): SqlTarget {
  return {
    description: `the daemon at ${sock}`,
    open: (sql, opts) => callStream(sock, 'POST', '/sql', { sql, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) }, { signal: opts.signal, kinds: KIND_EXIT }),
    close: async () => undefined,
  }
}

export function directTarget(dbPath: string, timeoutMs: number): SqlTarget {
  const engine = new SqlEngine({ dbPath, timeoutMs })
  return {
    description: dbPath,
    async open(sql, opts) {
      const q = await engine.query(sql, { timeoutMs: opts.timeoutMs })
      const cancel = () => q.cancel()
      opts.signal?.addEventListener('abort', cancel, { once: true })
      void q.finished.then(() => opts.signal?.removeEventListener('abort', cancel))
      const first = await q.first
      if ('error' in first) throw new UserError(first.error, KIND_EXIT[first.kind] ?? EXIT.FAILURE)
      return q.output
    },
    close: () => engine.close(),
  }
}

export interface QueryResult {
  rows: number
  seconds: number
}

/** Runs one statement into a sink. Failures (also after some rows) throw a UserError; the sink is aborted. */
export async function runStatement(target: SqlTarget, sql: string, sink: Sink, opts: QueryOptions = {}): Promise<QueryResult> {
  const t0 = performance.now()
  let rows = 0
  let began = false
  let end: Extract<ChildLine, { done: true }> | undefined
  try {
    const stream = await target.open(sql, opts)
    const decoder = new StringDecoder('utf8')
    let rest = ''
    for await (const chunk of stream) {
      const text = rest + decoder.write(chunk)
      let start = 0
      let nl: number
      while ((nl = text.indexOf('\n', start)) >= 0) {
        const line = text.slice(start, nl)
        start = nl + 1
        if (line.charCodeAt(0) === 0x5b /* [ */) {
          rows++
          const p = sink.row(JSON.parse(line) as Value[], line)
          if (p) await p
          continue
        }
        const ctl = JSON.parse(line) as ChildLine
        if ('columns' in ctl) {
          began = true
          await sink.begin(ctl.columns as ColumnInfo[])
        } else if ('done' in ctl) end = ctl
        else throw new UserError(ctl.error, KIND_EXIT[ctl.kind] ?? EXIT.FAILURE)
      }
      rest = text.slice(start)
    }
    if (opts.signal?.aborted) throw new UserError('query cancelled', EXIT.INTERRUPTED)
    if (!end || !began) throw new UserError(`the result from ${target.description} ended early (after ${rows} rows)`, EXIT.FAILURE)
    await sink.end(rows)
  } catch (err) {
    await sink.abort().catch(() => undefined)
    if (opts.signal?.aborted) throw new UserError('query cancelled', EXIT.INTERRUPTED)
    throw err
  }
  return { rows, seconds: (performance.now() - t0) / 1000 }
}

/** des-archive-access's line, to the digit. */
export function foundLine(r: QueryResult): string {
  const rate = r.seconds > 0 ? r.rows / r.seconds : 0
  return `found ${r.rows} rows in ${r.seconds.toFixed(6)} seconds (${rate.toFixed(6)} rows/s)`
}

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`
}

/**
 * easyaccess's `describe_table NAME` and `find_tables PATTERN`, as the SQL they stand for (so they go
 * through the same engine, output and redirection). Anything else is returned unchanged.
 */
export function expandConvenience(sql: string): { sql: string; emptyMessage?: string } {
  const d = /^\s*describe_table\s+([^\s;]+)\s*$/i.exec(sql)
  if (d) {
    const name = d[1]!.replace(/^["'`[]|["'`\]]$/g, '')
    return {
      sql: `SELECT name AS COLUMN_NAME, type AS TYPE, "notnull" AS NOT_NULL, pk AS PRIMARY_KEY FROM pragma_table_info(${sqlString(name)}) ORDER BY cid`,
      emptyMessage: `no table or view named ${name} (list them with find_tables)`,
    }
  }
  const f = /^\s*find_tables(?:\s+([^\s;]+))?\s*$/i.exec(sql)
  if (f) {
    const p = f[1] ?? '%'
    const pattern = p.includes('%') ? p : `%${p}%`
    return { sql: `SELECT name AS TABLE_NAME, type AS TYPE FROM sqlite_master WHERE type IN ('table', 'view') AND name LIKE ${sqlString(pattern)} ORDER BY name` }
  }
  return { sql }
}

/** A sink that shows nothing until the first row, and fails with `message` when there is none. */
function failWhenEmpty(sink: Sink, message: string): Sink {
  let columns: ColumnInfo[] = []
  let started = false
  return {
    begin: (c) => {
      columns = c
    },
    row: async (values, line) => {
      if (!started) {
        started = true
        await sink.begin(columns)
      }
      await sink.row(values, line)
    },
    end: async (rows) => {
      if (!started) throw new UserError(message, EXIT.FAILURE)
      await sink.end(rows)
    },
    abort: () => sink.abort(),
  }
}

export interface SqlSession {
  target: SqlTarget
  timeoutMs: number | undefined
  /** Stdout is a terminal: tables there, and the found line with them. */
  tty: boolean
}

/**
 * Runs one statement of a script: its result to its `> FILE` or to stdout, then the found line (on
 * stdout, or on stderr when stdout carries TSV data into a pipe).
 */
export async function runOne(session: SqlSession, st: ScriptStatement, signal?: AbortSignal): Promise<void> {
  const { sql, emptyMessage } = expandConvenience(st.sql)
  if (st.output) formatOf(st.output) // an unknown extension fails before the query runs
  let sink = st.output ? fileSink(resolve(st.output)) : stdoutSink(session.tty ? 'table' : 'tsv')
  if (emptyMessage) sink = failWhenEmpty(sink, emptyMessage)
  const r = await runStatement(session.target, sql, sink, { timeoutMs: session.timeoutMs, signal })
  const msg = foundLine(r) + '\n'
  if (st.output || session.tty) process.stdout.write(msg)
  else process.stderr.write(msg)
}
