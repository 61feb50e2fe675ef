// Running one statement for `desfs sql`: through the daemon's socket when one runs, otherwise on the
// DB directly with the same engine (daemon/sql/sql-engine.ts), reading the result stream into a sink
// (parsed NDJSON rows, or TSV bytes copied as they come), and printing des-archive-access's
// `found N rows in S seconds (R rows/s)`. Also easyaccess's describe_table and find_tables.
import { StringDecoder } from 'node:string_decoder'
import { EXIT, UserError } from '../daemon/errors.js'
import type { ChildLine, ColumnInfo } from '../daemon/sql/sql-child.js'
import { SqlEngine } from '../daemon/sql/sql-engine.js'
import { callStream } from './client.js'
import { resolve } from 'node:path'
import type { ScriptStatement } from '../daemon/sql/sql-text.js'
import { checkOutputFile, fileSink, stdoutSink, type RowSink, type Sink, type TsvSink } from './sql-output.js'
import { Framer, type ResultFormat, type Value } from '../daemon/sql/sql-framing.js'

/** Exit codes by the kind of failure the engine reports. */
export const KIND_EXIT: Record<string, number> = {
  refused: EXIT.FAILURE,
  sql: EXIT.FAILURE,
  timeout: EXIT.FAILURE,
  crashed: EXIT.FAILURE,
  db: EXIT.CONFIG,
  busy: EXIT.UNAVAILABLE,
  cancelled: EXIT.INTERRUPTED,
}

export interface QueryOptions {
  timeoutMs?: number
  signal?: AbortSignal
  format?: ResultFormat
}

/** Where queries go: the daemon, or the DB itself. Either way a result stream (sql-framing.ts). */
export interface SqlTarget {
  readonly description: string
  open(sql: string, opts: QueryOptions): Promise<AsyncIterable<Buffer>>
  close(): Promise<void>
}

export function daemonTarget(sock: string): SqlTarget {
  return {
    description: `the daemon at ${sock}`,
    open: (sql, opts) =>
      callStream(
        sock,
        'POST',
        '/sql',
        { sql, format: opts.format ?? 'ndjson', ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) },
        { signal: opts.signal, kinds: KIND_EXIT },
      ),
    close: async () => undefined,
  }
}

export function directTarget(dbPath: string, timeoutMs: number): SqlTarget {
  const engine = new SqlEngine({ dbPath, timeoutMs })
  return {
    description: dbPath,
    async open(sql, opts) {
      const q = await engine.query(sql, { timeoutMs: opts.timeoutMs, format: opts.format ?? 'ndjson' })
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

/** Reads NDJSON rows into a row sink; returns the end line. */
async function readRows(stream: AsyncIterable<Buffer>, sink: RowSink, onEnd: (l: ChildLine) => void): Promise<void> {
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
        const p = sink.row(JSON.parse(line) as Value[], line)
        if (p) await p
        continue
      }
      const ctl = JSON.parse(line) as ChildLine
      if ('columns' in ctl) await sink.begin(ctl.columns)
      onEnd(ctl)
    }
    rest = text.slice(start)
  }
}

/** Copies TSV bytes into a TSV sink, picking out the control lines. */
async function readTsv(stream: AsyncIterable<Buffer>, sink: TsvSink, onEnd: (l: ChildLine) => void): Promise<void> {
  const controls: ChildLine[] = []
  const framer = new Framer('tsv', (json) => controls.push(JSON.parse(json) as ChildLine))
  for await (const chunk of stream) {
    for (const part of framer.feed(chunk)) {
      const p = sink.data(part)
      if (p) await p
    }
    for (const ctl of controls.splice(0)) {
      if ('columns' in ctl) await sink.begin(ctl.columns)
      onEnd(ctl)
    }
  }
}

/** Runs one statement into a sink. Failures (also after some rows) throw a UserError; the sink is aborted. */
export async function runStatement(target: SqlTarget, sql: string, sink: Sink, opts: QueryOptions = {}): Promise<QueryResult> {
  const t0 = performance.now()
  let began = false
  let end: Extract<ChildLine, { done: true }> | undefined
  let failure: Extract<ChildLine, { error: string }> | undefined
  const onControl = (l: ChildLine) => {
    if ('columns' in l) began = true
    else if ('done' in l) end = l
    else failure ??= l
  }
  try {
    const stream = await target.open(sql, { ...opts, format: sink.kind === 'tsv' ? 'tsv' : 'ndjson' })
    if (sink.kind === 'tsv') await readTsv(stream, sink, onControl)
    else await readRows(stream, sink, onControl)
    if (opts.signal?.aborted) throw new UserError('query cancelled', EXIT.INTERRUPTED)
    if (failure) throw new UserError(failure.error, KIND_EXIT[failure.kind] ?? EXIT.FAILURE)
    if (!end || !began) throw new UserError(`the result from ${target.description} ended early`, EXIT.FAILURE)
    await sink.end(end.rows)
  } catch (err) {
    await sink.abort().catch(() => undefined)
    if (opts.signal?.aborted) throw new UserError('query cancelled', EXIT.INTERRUPTED)
    throw err
  }
  return { rows: end.rows, seconds: (performance.now() - t0) / 1000 }
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
    return {
      sql: `SELECT name AS TABLE_NAME, type AS TYPE FROM sqlite_master WHERE type IN ('table', 'view') AND name LIKE ${sqlString(pattern)} ORDER BY name`,
    }
  }
  return { sql }
}

/**
 * A sink that shows nothing until it is known there are rows, and fails with `message` when there
 * are none (describe_table of a missing table). Holds at most the first row (or the small TSV output
 * of a convenience query) back.
 */
function failWhenEmpty(sink: Sink, message: string): Sink {
  let columns: ColumnInfo[] = []
  const held: Buffer[] = []
  let started = false
  const begin = (c: ColumnInfo[]) => {
    columns = c
  }
  const fail = (rows: number) => {
    if (rows === 0) throw new UserError(message, EXIT.FAILURE)
  }
  if (sink.kind === 'tsv') {
    return {
      kind: 'tsv',
      begin,
      data: (chunk) => void held.push(Buffer.from(chunk)),
      end: async (rows) => {
        fail(rows)
        await sink.begin(columns)
        for (const b of held) await sink.data(b)
        await sink.end(rows)
      },
      abort: () => sink.abort(),
    }
  }
  return {
    kind: 'rows',
    begin,
    row: async (values, line) => {
      if (!started) {
        started = true
        await sink.begin(columns)
      }
      await sink.row(values, line)
    },
    end: async (rows) => {
      fail(rows)
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
  // A missing name, an unknown extension or a directory fails before the query runs.
  if (st.output !== undefined) checkOutputFile(st.output)
  let sink = st.output ? fileSink(resolve(st.output)) : stdoutSink(session.tty ? 'table' : 'tsv')
  if (emptyMessage) sink = failWhenEmpty(sink, emptyMessage)
  const r = await runStatement(session.target, sql, sink, { timeoutMs: session.timeoutMs, signal })
  const msg = foundLine(r) + '\n'
  if (st.output || session.tty) process.stdout.write(msg)
  else process.stderr.write(msg)
}
