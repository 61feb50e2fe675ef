// SQL queries, in a process of their own. Started ahead of need with the DB path as its argument, it
// opens the metadata DB read-only, then answers request lines on stdin ({"sql": "..."}) one at a
// time, streaming each result to stdout as NDJSON, until stdin ends or it is killed.
//
// Why a process and not a worker thread: better-sqlite3 has no sqlite3_interrupt, and terminating a
// worker does not stop a long native step (an aggregate over millions of rows runs on for seconds),
// while SIGKILL ends a process at once whatever it is doing. So the timeout and the client's Ctrl-C
// are a kill, and the daemon's event loop never shares a thread with user SQL.
//
// Output, one line each (framing: sql-framing.ts):
//   {"columns":[{"name":"FILENAME","type":"TEXT"},...]}   before the first row (or at the end)
//   [value, ...]                                           one per row
//   {"done":true,"rows":N,"seconds":S}                     at the end, or instead
//   {"error":"...","kind":"refused"|"sql"|"db"}            when the query cannot run or fails
// A request may ask for {"format": "tsv"}: the process then writes the rows as TSV itself (a header
// line of column names first), so a client that wants TSV only copies bytes, and control lines carry
// a leading record separator.
// Rows are JSON.stringify'd arrays: native, and no slower than any per-value encoder we tried (one
// that kept SQLite's storage classes with safeIntegers measured the same or slower). So integers
// beyond 2^53 lose precision (the DES metadata has none), a REAL infinity becomes null, and a BLOB is
// written as hex; column types for FITS come from the declared types and the values (sql-columns.ts).
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import type { Database, Statement } from 'better-sqlite3'
import { openMetadataDb } from '../catalog/metadata.js'
import { oneLine } from '../errors.js'
import { exitWithParent } from '../parent-watch.js'
import { MULTIPLE_STATEMENTS, statementRefusal, textRefusal } from './sql-policy.js'
import { controlLine, tsvField, type ResultFormat, type Value } from './sql-framing.js'

export interface ColumnInfo {
  name: string
  /** Declared type of the column the value comes from, or null for an expression. */
  type: string | null
}

export type ChildLine =
  | { columns: ColumnInfo[] }
  | { done: true; rows: number; seconds: number }
  | { error: string; kind: 'refused' | 'sql' | 'db' | 'timeout' | 'cancelled' | 'crashed' }

const FLUSH_AT = 64 * 1024

async function write(text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain')
}

function prepare(db: Database, sql: string): Statement | ChildLine {
  const early = textRefusal(sql)
  if (early) return { error: early, kind: 'refused' }
  let stmt: Statement
  try {
    stmt = db.prepare(sql)
  } catch (err) {
    if (err instanceof RangeError && /more than one statement/.test(err.message)) return { error: MULTIPLE_STATEMENTS, kind: 'refused' }
    if (err instanceof RangeError && /empty|no statement/i.test(err.message)) return { error: 'no SQL statement given', kind: 'sql' }
    return { error: `SQL error: ${oneLine(err)}`, kind: 'sql' }
  }
  const refusal = statementRefusal(sql, stmt)
  return refusal ? { error: refusal, kind: 'refused' } : stmt
}

/** Runs one query and writes its result (NDJSON or TSV) to stdout. */
async function runQuery(db: Database, sql: string, format: ResultFormat, params?: Record<string, string>): Promise<void> {
  const line = (v: ChildLine) => controlLine(format, v)
  const t0 = performance.now()
  const prepared = prepare(db, sql)
  if (!('run' in prepared)) return write(line(prepared))
  const stmt = prepared.raw(true)
  const columns: ColumnInfo[] = stmt.columns().map((c) => ({ name: c.name, type: c.type }))
  const header = line({ columns }) + (format === 'tsv' ? columns.map((c) => tsvField(c.name)).join('\t') + '\n' : '')
  const n = columns.length
  let rows = 0
  let buf = ''
  try {
    for (const row of (params ? stmt.iterate(params) : stmt.iterate()) as IterableIterator<Value[]>) {
      if (rows === 0) buf += header
      rows++
      if (format === 'tsv') {
        let s = tsvField(row[0]!)
        for (let i = 1; i < n; i++) s += '\t' + tsvField(row[i]!)
        buf += s + '\n'
      } else buf += JSON.stringify(row) + '\n'
      if (buf.length >= FLUSH_AT) {
        await write(buf)
        buf = ''
      }
    }
  } catch (err) {
    return write(buf + line({ error: `SQL error: ${oneLine(err)}`, kind: 'sql' }))
  }
  if (rows === 0) buf += header
  await write(buf + line({ done: true, rows, seconds: (performance.now() - t0) / 1000 }))
}

async function main(): Promise<void> {
  // A daemon killed with -9 closes our stdin, but a query in a long native step would never read it.
  exitWithParent()
  // BLOBs go out as hex rather than as {"type":"Buffer","data":[...]}; this process does nothing else.
  Buffer.prototype.toJSON = function (this: Buffer) {
    return this.toString('hex') as unknown as { type: 'Buffer'; data: number[] }
  }
  const dbPath = process.argv[2]!
  let db: Database | undefined
  let openError: string | undefined
  try {
    db = openMetadataDb(dbPath)
  } catch (err) {
    openError = oneLine(err)
  }
  // One request per line; the answer to each ends with its done or error line. Ends with stdin.
  for await (const req of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    const { sql, format = 'ndjson', params } = JSON.parse(req) as { sql: string; format?: ResultFormat; params?: Record<string, string> }
    if (!db) await write(controlLine(format, { error: openError!, kind: 'db' } satisfies ChildLine))
    else await runQuery(db, sql, format, params)
  }
  db?.close()
}

void main().catch((err) => {
  // The engine reports the process's death, with this line as the reason.
  process.stderr.write(`internal error in the query process: ${oneLine(err)}\n`)
  process.exitCode = 1
})
