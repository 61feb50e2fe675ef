// `desfs headers` in the daemon: a job (like sync) whose files each have their FITS headers walked
// through the cache (daemon/jobs/headers-index.ts), so only header bytes are fetched, many files at once,
// and whose rows are kept in the job's record: a restart resumes the survey where it stopped, and a
// client that went away can come back for the result.
//
// Keys: KEY is the value in the first HDU that has it (the primary first: DES files keep EXPNUM and
// BAND there, fpacked ones sometimes only in the image's header); N:KEY and EXTNAME:KEY come from HDU
// N or the first HDU of that EXTNAME; *:KEY asks for one row per HDU, with that HDU's value.
import { EXIT, UserError } from '../errors.js'
import type { JobFile, JobRunner } from './jobs.js'
import type { ParsedValue } from '../fits.js'
import type { Value } from '../sql/sql-framing.js'
import type { HeaderReader } from './headers-index.js'
import { MISSING, type FileFacts } from '../../fs/facts.js'
import type { HeaderCards, HduInfo } from '../../fs/fits-hdus.js'

export interface KeySpec {
  /** As the column is named: KEY or HDU:KEY, upper case. */
  name: string
  /** Undefined: the first HDU that has it; '*': each row's HDU; a number or an EXTNAME otherwise. */
  hdu?: number | string
  key: string
}

export interface HeadersSpec {
  keys: KeySpec[]
}

/** A file of a headers job: the job record's entry, with its rows once read. */
export interface HeadersFile extends JobFile {
  rows?: Value[][]
}

/** Files whose headers are read at once (each a few small reads). */
export const HEADERS_PARALLELISM = 16

const KEYWORD = /^[A-Z0-9_-]{1,8}$|^HIERARCH [A-Z0-9_. -]{1,60}$/

/** Parses --keys: KEY, N:KEY, EXTNAME:KEY or *:KEY, comma-separated; a UserError names a bad one. */
export function parseKeys(text: string): KeySpec[] {
  const out: KeySpec[] = []
  for (const raw of text.split(',')) {
    const item = raw.trim()
    if (!item) continue
    const colon = item.lastIndexOf(':')
    const key = item
      .slice(colon + 1)
      .trim()
      .toUpperCase()
    const where = colon < 0 ? undefined : item.slice(0, colon).trim()
    if (!KEYWORD.test(key) || where === '')
      throw new UserError(
        `--keys: '${item}' is not a header keyword; give KEY or HDU:KEY (HDU a number, an EXTNAME or *), e.g. --keys EXPNUM,BAND,SCI:AIRMASS`,
        EXIT.USAGE,
      )
    const hdu = where === undefined ? undefined : where === '*' ? '*' : /^\d+$/.test(where) ? Number(where) : where.toUpperCase()
    out.push({ name: hdu === undefined ? key : `${hdu}:${key}`, hdu, key })
  }
  return out
}

/** Per-HDU rows when a key says *:KEY, or when no key is given (then the rows list the HDUs). */
export function perHdu(keys: KeySpec[]): boolean {
  return keys.length === 0 || keys.some((k) => k.hdu === '*')
}

/** The output's columns: the archive path first. */
export function columnsOf(keys: KeySpec[]): string[] {
  const cols = ['path']
  if (perHdu(keys)) cols.push('hdu', 'extname', ...(keys.length ? [] : ['type']))
  return cols.concat(keys.map((k) => k.name))
}

function cell(v: ParsedValue | undefined): Value {
  if (v === undefined || v === null) return null
  if (typeof v === 'boolean') return v ? 'T' : 'F'
  return v
}

/** A file's rows, from its HDU index and headers. */
export function rowsOf(path: string, keys: KeySpec[], hdus: HduInfo[], headers: HeaderCards[]): Value[][] {
  const find = (k: KeySpec, own: number): ParsedValue | undefined => {
    if (k.hdu === undefined) return headers.find((h) => h.has(k.key))?.get(k.key)
    if (k.hdu === '*') return headers[own]?.get(k.key)
    const i = typeof k.hdu === 'number' ? k.hdu : hdus.findIndex((h) => h.extname?.trim().toUpperCase() === k.hdu)
    return headers[i]?.get(k.key)
  }
  if (!perHdu(keys)) return [[path, ...keys.map((k) => cell(find(k, 0)))]]
  return hdus.map((h, i) => [path, h.index, h.extname, ...(keys.length ? [] : [h.type]), ...keys.map((k) => cell(find(k, i)))])
}

/** What a headers job needs from the daemon. */
export interface HeadersDeps {
  facts(rel: string): Promise<FileFacts>
  reader: HeaderReader
}

export function headersRunner(deps: HeadersDeps, parallelism = HEADERS_PARALLELISM): JobRunner<HeadersSpec> {
  return {
    kind: 'headers',
    parallelism,
    async runFile(job, file, signal) {
      const facts = await deps.facts(file.path)
      if (facts.size === MISSING) throw new Error('not in the archive (HTTP 404)')
      const walk = await deps.reader.walk(file.path, facts, true, signal)
      if (walk.hdus.length === 0) throw new Error('not a FITS file (it does not start with SIMPLE  =)')
      const done: Partial<HeadersFile> = { size: facts.size, rows: rowsOf(file.path, job.spec.keys, walk.hdus, walk.headers) }
      return done
    },
  }
}
