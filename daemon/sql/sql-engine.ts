// The query engine behind `desfs sql`, shared by the daemon's POST /sql and the CLI's direct mode
// (no daemon running). Queries run in query processes (sql-child.ts), each on its own read-only
// connection, one query at a time per process. The engine hands a process the SQL, passes its result
// stream (NDJSON, or TSV; see sql-framing.ts) on with backpressure, and kills it (SIGKILL: immediate, whatever SQLite is doing) when the
// statement timeout fires or the client goes away; a process whose query ended normally is kept for
// the next one. The daemon keeps one process started ahead of need, so a query does not wait for a
// Node start-up, and runs them at a lower CPU priority so readers of the mount come first.
import { spawn, type ChildProcess } from 'node:child_process'
import { dbFileIdentity } from '../catalog/metadata.js'
import { setPriority } from 'node:os'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { ChildLine } from './sql-child.js'
import { controlLine, Framer, type ResultFormat } from './sql-framing.js'
import { EXIT, UserError } from '../errors.js'
import { log } from '../log.js'
import { metrics } from '../metrics.js'
import { formatDuration } from '../units.js'
import { childEnv } from '../parent-watch.js'

const CHILD = fileURLToPath(new URL('./sql-child.js', import.meta.url))
const NL = 0x0a

const queriesTotal = metrics.counter(
  'desfs_sql_queries_total',
  'SQL queries by outcome (ok, refused, sql_error, db_error, timeout, cancelled, crashed)',
  ['outcome'],
)
const querySeconds = metrics.histogram('desfs_sql_query_seconds', 'SQL query wall time, from request to last row')
const rowsTotal = metrics.counter('desfs_sql_rows_total', 'rows returned by SQL queries')
const runningGauge = metrics.gauge('desfs_sql_running', 'SQL queries running now')

type Outcome = Extract<ChildLine, { done: true }> | Extract<ChildLine, { error: string }>

/** A query process: the child, the DB file it opened, and the query it is running, if any. */
class QueryProcess {
  readonly child: ChildProcess
  readonly identity: string
  current: SqlQuery | undefined
  stderr = ''

  constructor(dbPath: string, identity: string, nice: number) {
    this.identity = identity
    this.child = spawn(process.execPath, [CHILD, dbPath], { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv() })
    this.child.on('error', (err) => log.warn('cannot start an SQL query process', { error: err.message }))
    this.child.stdin!.on('error', () => undefined) // a process that died; its exit says why
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)))
    this.child.stdout!.on('data', (chunk: Buffer) => this.current?.onData(chunk))
    this.child.once('close', (code: number | null, signal: NodeJS.Signals | null) => this.current?.onClose(code, signal))
    if (nice && this.child.pid) {
      try {
        setPriority(this.child.pid, nice)
      } catch {
        // Not fatal: the query then competes with the mount at the same priority.
      }
    }
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL')
  }
}

/**
 * A running query. `output` is its result stream and always ends with a done or an error line, also
 * when the process was killed (the engine writes the line the process could not).
 */
export class SqlQuery {
  // A large buffer lets the query process run ahead of a consumer busy formatting rows.
  readonly output = new PassThrough({ highWaterMark: 1 << 20 })
  /** The first line: the columns, or the error that stopped the query before any row. */
  readonly first: Promise<ChildLine>
  /** The last line: done, or the error. */
  readonly finished: Promise<Outcome>
  private proc: QueryProcess
  private timeoutMs: number
  private killedFor: 'timeout' | 'cancelled' | undefined
  private timer: NodeJS.Timeout | undefined
  private resolveFirst!: (l: ChildLine) => void
  private resolveFinished!: (l: Outcome) => void
  private sawFirst = false
  private last: Outcome | undefined
  /** The consumer is gone: read the rest and drop it. */
  private discard = false
  private partial: Buffer | undefined
  private format: ResultFormat
  private framer: Framer

  constructor(proc: QueryProcess, sql: string, timeoutMs: number, format: ResultFormat, params?: Record<string, string>) {
    this.proc = proc
    this.timeoutMs = timeoutMs
    this.format = format
    this.framer = new Framer(format, (text) => this.onControl(text))
    this.first = new Promise((r) => (this.resolveFirst = r))
    this.finished = new Promise((r) => (this.resolveFinished = r))
    this.output.on('drain', () => proc.child.stdout!.resume())
    this.output.on('close', () => {
      this.discard = true
      proc.child.stdout!.resume()
    })
    proc.current = this
    if (timeoutMs > 0) this.timer = setTimeout(() => this.kill('timeout'), timeoutMs)
    if (proc.alive) proc.child.stdin!.write(JSON.stringify({ sql, format, params }) + '\n')
    else setImmediate(() => this.onClose(proc.child.exitCode, proc.child.signalCode))
  }

  private onControl(text: string): void {
    let l: ChildLine
    try {
      l = JSON.parse(text) as ChildLine
    } catch {
      return
    }
    if (!this.sawFirst) {
      this.sawFirst = true
      this.resolveFirst(l)
    }
    if ('done' in l || 'error' in l) this.last = l
  }

  /** Output of the process while this query is its current one. Only whole lines are passed on. */
  onData(chunk: Buffer): void {
    this.framer.feed(chunk)
    if (!this.discard) {
      const end = chunk.lastIndexOf(NL) + 1
      if (end === 0) this.partial = this.partial ? Buffer.concat([this.partial, chunk]) : chunk
      else {
        const whole = this.partial ? Buffer.concat([this.partial, chunk.subarray(0, end)]) : chunk.subarray(0, end)
        this.partial = end < chunk.length ? chunk.subarray(end) : undefined
        if (!this.output.write(whole) && !this.killedFor) this.proc.child.stdout!.pause()
      }
    }
    // The query's last line ends its output; the process is then free for the next query.
    if (this.last) this.end()
  }

  /** The process ended (killed, or crashed) while running this query. */
  onClose(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.last) return
    let l: Outcome
    if (this.killedFor === 'timeout')
      l = {
        error: `query timed out after ${formatDuration(this.timeoutMs)} and was stopped (allow more with --timeout, 0 for none)`,
        kind: 'timeout',
      }
    else if (this.killedFor === 'cancelled') l = { error: 'query cancelled', kind: 'cancelled' }
    else {
      const why = this.proc.stderr.trim().split('\n').pop()
      l = { error: `the query process died (${signal ?? `exit ${code}`})${why ? ': ' + why : ''}`, kind: 'crashed' }
      log.warn('SQL query process died', { signal, code, stderr: this.proc.stderr })
    }
    this.last = l
    if (!this.discard) this.output.write(controlLine(this.format, l))
    if (!this.sawFirst) {
      this.sawFirst = true
      this.resolveFirst(l)
    }
    this.end()
  }

  private end(): void {
    clearTimeout(this.timer)
    this.proc.current = undefined
    this.proc.child.stdout!.resume()
    this.output.end()
    this.resolveFinished(this.last!)
  }

  /** True when the query ended on its own and its process can run another. */
  get reusable(): boolean {
    return !this.killedFor && this.proc.alive
  }

  private kill(why: 'timeout' | 'cancelled'): void {
    if (this.last) return
    this.killedFor ??= why
    this.proc.kill()
    // What is left in the pipe must still be read for the process's 'close' to come.
    this.proc.child.stdout!.resume()
  }

  /** Stops the query now (the client went away, Ctrl-C, the daemon is stopping). */
  cancel(): void {
    this.kill('cancelled')
  }
}

export interface SqlEngineOptions {
  dbPath: string
  /** Default statement timeout in ms; 0 for none. */
  timeoutMs: number
  /** Most queries running at once; more are refused with a clear message. */
  maxRunning?: number
  /** Keep a query process started ahead of need (the daemon does; a one-shot CLI need not). */
  spare?: boolean
  /** Niceness for query processes (0 keeps the caller's priority). */
  nice?: number
}

export interface QueryOptions {
  /** Overrides the engine's default timeout; 0 for none. */
  timeoutMs?: number
  /** NDJSON rows (the default), or TSV formatted by the query process. */
  format?: ResultFormat
  /** Named parameters (:name in the SQL), for recipes. */
  params?: Record<string, string>
}

/** Idle query processes kept for the next queries. */
const MAX_IDLE = 2

export class SqlEngine {
  readonly opts: Required<SqlEngineOptions>
  private idle: QueryProcess[] = []
  private running = new Set<SqlQuery>()
  private closed = false
  served = 0

  constructor(opts: SqlEngineOptions) {
    this.opts = { maxRunning: 4, spare: false, nice: 0, ...opts }
    void this.refill()
  }

  private async spawn(): Promise<QueryProcess> {
    return new QueryProcess(this.opts.dbPath, dbFileIdentity(this.opts.dbPath), this.opts.nice)
  }

  private refilling = false

  private async refill(): Promise<void> {
    if (this.closed || !this.opts.spare || this.idle.length > 0 || this.refilling) return
    this.refilling = true
    const p = await this.spawn().finally(() => (this.refilling = false))
    if (this.closed || this.idle.length >= MAX_IDLE) p.kill()
    else this.idle.push(p)
  }

  /** An idle process that still has the current DB file open, else a new one. */
  private async take(): Promise<QueryProcess> {
    const identity = dbFileIdentity(this.opts.dbPath)
    for (let p = this.idle.pop(); p; p = this.idle.pop()) {
      if (p.alive && p.identity === identity) return p
      p.kill()
    }
    return this.spawn()
  }

  private release(p: QueryProcess): void {
    if (this.closed || this.idle.length >= MAX_IDLE) p.child.stdin!.end()
    else this.idle.push(p)
  }

  /** Starts a query; throws a UserError when too many are running. */
  async query(sql: string, opts: QueryOptions = {}): Promise<SqlQuery> {
    if (this.closed) throw new UserError('the daemon is stopping; no new queries', EXIT.UNAVAILABLE)
    if (this.running.size >= this.opts.maxRunning)
      throw new UserError(
        `${this.running.size} SQL queries are already running (the limit); wait for one to finish or cancel it`,
        EXIT.UNAVAILABLE,
      )
    const t0 = performance.now()
    const proc = await this.take()
    const q = new SqlQuery(proc, sql, opts.timeoutMs ?? this.opts.timeoutMs, opts.format ?? 'ndjson', opts.params)
    this.running.add(q)
    runningGauge.set(this.running.size)
    setImmediate(() => void this.refill())
    void q.finished.then((end) => {
      this.running.delete(q)
      runningGauge.set(this.running.size)
      this.served++
      if (q.reusable) this.release(proc)
      else void this.refill()
      const outcome = 'done' in end ? 'ok' : end.kind === 'sql' ? 'sql_error' : end.kind === 'db' ? 'db_error' : end.kind
      queriesTotal.inc({ outcome })
      querySeconds.observe((performance.now() - t0) / 1000)
      if ('done' in end) rowsTotal.inc(end.rows)
    })
    return q
  }

  /** Runs a query to the end and returns its rows (for small results: recipes, lists). */
  async all(sql: string, opts: QueryOptions = {}): Promise<unknown[][]> {
    const q = await this.query(sql, { ...opts, format: 'ndjson' })
    const rows: unknown[][] = []
    let rest = ''
    for await (const chunk of q.output as AsyncIterable<Buffer>) {
      const lines = (rest + chunk.toString('utf8')).split('\n')
      rest = lines.pop()!
      // Data rows are arrays; control lines (columns, done, error) are objects (see sql-framing.ts).
      for (const l of lines) if (l.startsWith('[')) rows.push(JSON.parse(l) as unknown[])
    }
    const end = await q.finished
    if ('error' in end) throw new UserError(end.error, end.kind === 'timeout' ? EXIT.UNAVAILABLE : EXIT.USAGE)
    return rows
  }

  /** Drops the idle processes, so the next query opens the DB file afresh (after a reload). */
  recycle(): void {
    for (const p of this.idle.splice(0)) p.kill()
    void this.refill()
  }

  status(): Record<string, unknown> {
    return {
      running: this.running.size,
      maxRunning: this.opts.maxRunning,
      idleProcesses: this.idle.length,
      timeoutMs: this.opts.timeoutMs,
      served: this.served,
    }
  }

  /** Kills the idle processes and every running query. */
  async close(): Promise<void> {
    this.closed = true
    for (const p of this.idle.splice(0)) p.kill()
    const pending = [...this.running].map((q) => {
      q.cancel()
      return q.finished
    })
    await Promise.all(pending)
  }
}
