// Where `desfs sql` results go, a chunk at a time so a 10-million-row result never sits in memory:
// an aligned table on a terminal, TSV into a pipe, and files by extension after `; > FILE`
// (.fits/.fit, .csv, .tsv/.tab, .json, each optionally .gz). TSV is formatted by the query process
// and only copied here (the bulk path: no parsing in the CLI); the other formats get parsed rows.
// Files are written beside their final name (a new file with a random name: daemon/safe-write.ts)
// and renamed into place at the end, so a failed or cancelled query leaves no half file and never
// clobbers an older result, and nothing planted beside the output is ever written through.
import { createWriteStream, openSync } from 'node:fs'
import { NEW_FILE_FLAGS, tempNameFor } from '../daemon/safe-write.js'
import { rename, rm } from 'node:fs/promises'
import { pipeline, type Writable } from 'node:stream'
import { createGzip } from 'node:zlib'
import type { ColumnInfo } from '../daemon/sql/sql-child.js'
import { EXIT, UserError } from '../daemon/errors.js'
import type { Value } from '../daemon/sql/sql-framing.js'
import { fitsSink } from './sql-fits.js'
import { statSync } from 'node:fs'
import { dirname, extname, join, resolve } from 'node:path'

interface SinkEnds {
  begin(columns: ColumnInfo[]): Promise<void> | void
  end(rows: number): Promise<void>
  /** The query failed or was cancelled: drop whatever was written. */
  abort(): Promise<void>
}

/** Receives parsed rows (from NDJSON): each row's values, and its NDJSON line. */
export interface RowSink extends SinkEnds {
  kind: 'rows'
  row(values: Value[], line: string): Promise<void> | void
}

/** Receives the TSV bytes the query process wrote (header line included). */
export interface TsvSink extends SinkEnds {
  kind: 'tsv'
  data(chunk: Buffer): Promise<void> | void
}

export type Sink = RowSink | TsvSink

const FLUSH_AT = 64 * 1024

/** Batches text into large writes and waits when the stream wants it to. */
export class TextOut {
  private buf = ''
  readonly stream: Writable

  constructor(stream: Writable) {
    this.stream = stream
  }

  write(text: string): Promise<void> | void {
    this.buf += text
    if (this.buf.length >= FLUSH_AT) return this.flush()
  }

  async flush(): Promise<void> {
    const b = this.buf
    this.buf = ''
    if (b && !this.stream.write(b)) await drained(this.stream)
  }

  /** Bytes as they are (after any text still batched). */
  async bytes(chunk: Buffer): Promise<void> {
    if (this.buf) await this.flush()
    if (!this.stream.write(chunk)) await drained(this.stream)
  }
}

/** Waits for 'drain'; fails when the stream errs or closes first (a full disk, a closed pipe). */
export function drained(stream: Writable): Promise<void> {
  if (stream.destroyed) return Promise.reject(stream.errored ?? new Error('the output was closed'))
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', onDrain)
      stream.off('error', onError)
      stream.off('close', onClose)
      if (err) reject(err)
      else resolve()
    }
    const onDrain = () => done()
    const onError = (err: Error) => done(err)
    const onClose = () => done(stream.errored ?? new Error('the output was closed'))
    stream.on('drain', onDrain).on('error', onError).on('close', onClose)
  })
}

/** Column names made unique (a join can return two ID columns): later ones get _2, _3, ... */
export function uniqueNames(columns: ColumnInfo[]): string[] {
  const seen = new Map<string, number>()
  return columns.map((c) => {
    const key = c.name.toUpperCase()
    const n = (seen.get(key) ?? 0) + 1
    seen.set(key, n)
    return n === 1 ? c.name : `${c.name}_${n}`
  })
}

function csvField(v: Value): string {
  if (v === null) return ''
  if (typeof v !== 'string') return String(v)
  return /[",\n\r]|^\s|\s$/.test(v) ? `"${v.replace(/"/g, '""')}"` : v
}

type Inner = Omit<RowSink, 'abort'> | Omit<TsvSink, 'abort'>

/** CSV (RFC 4180 quoting); NULL is an empty field. */
function csvSink(out: TextOut): Omit<RowSink, 'abort'> {
  return {
    kind: 'rows',
    begin: (columns) => out.write(columns.map((c) => csvField(c.name)).join(',') + '\n'),
    row: (values) => {
      let s = ''
      for (let i = 0; i < values.length; i++) s += (i ? ',' : '') + csvField(values[i]!)
      return out.write(s + '\n')
    },
    end: () => out.flush(),
  }
}

/** TSV as the query process wrote it (sql-framing.ts tsvField: NULL empty, backslash escapes). */
function tsvSink(out: TextOut): Omit<TsvSink, 'abort'> {
  return { kind: 'tsv', begin: () => undefined, data: (chunk) => out.bytes(chunk), end: () => out.flush() }
}

/** A JSON array of objects keyed by column name, written as it comes. */
function jsonSink(out: TextOut): Omit<RowSink, 'abort'> {
  let keys: string[] = []
  let first = true
  return {
    kind: 'rows',
    begin: (columns) => {
      keys = uniqueNames(columns).map((n) => JSON.stringify(n) + ':')
      return out.write('[')
    },
    row: (values) => {
      let s = first ? '\n{' : ',\n{'
      first = false
      for (let i = 0; i < keys.length; i++) s += (i ? ',' : '') + keys[i] + JSON.stringify(values[i])
      return out.write(s + '}')
    },
    end: async () => {
      await out.write(first ? ']\n' : '\n]\n')
      await out.flush()
    },
  }
}

const TABLE_SAMPLE = 1000

/**
 * An aligned table for a terminal. Widths come from the first rows (up to 1000); later rows that are
 * wider simply push their line out. Numbers are right-aligned; NULL shows as NULL.
 */
function tableSink(out: TextOut): Omit<RowSink, 'abort'> {
  let names: string[] = []
  let sample: Value[][] | undefined = []
  let widths: number[] = []
  let numeric: boolean[] = []
  const cell = (v: Value) => (v === null ? 'NULL' : String(v))
  const fmt = (values: Value[]) =>
    values
      .map((v, i) => (numeric[i] ? cell(v).padStart(widths[i]!) : cell(v).padEnd(widths[i]!)))
      .join('  ')
      .trimEnd() + '\n'
  const flushSample = async () => {
    const rows = sample!
    sample = undefined
    widths = names.map((n, i) => Math.max(n.length, ...rows.map((r) => cell(r[i]!).length)))
    numeric = names.map(
      (_, i) => rows.some((r) => typeof r[i] === 'number') && rows.every((r) => r[i] === null || typeof r[i] === 'number'),
    )
    await out.write(
      names
        .map((n, i) => (numeric[i] ? n.padStart(widths[i]!) : n.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd() + '\n',
    )
    await out.write(widths.map((w) => '-'.repeat(w)).join('  ') + '\n')
    for (const r of rows) await out.write(fmt(r))
  }
  return {
    kind: 'rows',
    begin: (columns) => {
      names = columns.map((c) => c.name)
    },
    row: (values) => {
      if (sample) {
        sample.push(values)
        if (sample.length >= TABLE_SAMPLE) return flushSample()
        return
      }
      return out.write(fmt(values))
    },
    end: async () => {
      if (sample) await flushSample()
      await out.flush()
    },
  }
}

export type Format = 'table' | 'tsv' | 'csv' | 'json' | 'fits'

const EXTENSIONS: Record<string, Format> = { fits: 'fits', fit: 'fits', csv: 'csv', tsv: 'tsv', tab: 'tsv', json: 'json' }

/** The format a file name asks for, and whether it is gzipped; a clear error for anything else. */
export function formatOf(file: string): { format: Format; gzip: boolean } {
  const m = /\.([A-Za-z]+)(\.gz)?$/.exec(file)
  const format = m ? EXTENSIONS[m[1]!.toLowerCase()] : undefined
  if (!format)
    throw new UserError(
      `cannot tell the output format of '${file}': end the file name with .fits, .csv, .tsv, .tab or .json (optionally .gz)`,
      EXIT.USAGE,
    )
  return { format, gzip: !!m![2] }
}

/**
 * Checks the file of a `; > FILE` before its query runs: a name given, a known extension, not a
 * directory, in a directory that exists. Throws a UserError with one line.
 */
export function checkOutputFile(file: string): void {
  if (!file) throw new UserError("'>' after the statement needs a file name, e.g. SELECT ...; > out.fits", EXIT.USAGE)
  formatOf(file)
  const path = resolve(file)
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory())
    throw new UserError(
      `cannot write ${file}: it is a directory; name a file, e.g. ${join(file, `result${extname(file) || '.fits'}`)}`,
      EXIT.USAGE,
    )
  const parent = statSync(dirname(path), { throwIfNoEntry: false })
  if (!parent?.isDirectory()) throw new UserError(`cannot write ${file}: ${dirname(path)} is not a directory (create it first)`, EXIT.USAGE)
}

function textSink(format: Exclude<Format, 'fits'>, out: TextOut): Inner {
  return format === 'table' ? tableSink(out) : format === 'json' ? jsonSink(out) : format === 'csv' ? csvSink(out) : tsvSink(out)
}

/** A sink writing to stdout in the given format (a table on a terminal, TSV otherwise). */
export function stdoutSink(format: 'table' | 'tsv'): Sink {
  const out = new TextOut(process.stdout)
  return {
    ...textSink(format, out),
    abort: async () => {
      await out.flush().catch(() => undefined)
    },
  } as Sink
}

/** A sink writing the file `path` (format by extension), atomically. */
export function fileSink(path: string): Sink {
  const { format, gzip } = formatOf(path)
  const partial = tempNameFor(path)
  let fd: number
  try {
    fd = openSync(partial, NEW_FILE_FLAGS, 0o644)
  } catch (err) {
    throw new UserError(`cannot write ${path}: ${(err as Error).message}`, EXIT.FAILURE)
  }
  const file = createWriteStream(partial, { fd })
  // Errors (ENOSPC, EACCES) surface on the next write or at the end as one line.
  let failure: Error | undefined
  file.on('error', (err) => (failure = err))
  let stream: Writable = file
  if (gzip) {
    const gz = createGzip()
    pipeline(gz, file, () => undefined) // a file error then also stops the gzip stream
    stream = gz
  }
  const check = () => {
    if (failure) throw new UserError(`cannot write ${path}: ${failure.message}`, EXIT.FAILURE)
  }
  const inner: Inner & { abort?: () => Promise<void> } = format === 'fits' ? fitsSink(stream, path) : textSink(format, new TextOut(stream))
  const closed = new Promise<void>((resolve) => file.once('close', () => resolve()))
  return {
    ...inner,
    begin: (c) => {
      check()
      return inner.begin(c)
    },
    end: async (rows) => {
      await inner.end(rows)
      stream.end()
      await closed
      check()
      await rename(partial, path)
    },
    abort: async () => {
      await inner.abort?.()
      stream.destroy()
      file.destroy()
      await rm(partial, { force: true })
    },
  } as Sink
}
