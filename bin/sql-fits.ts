// `; > out.fits`: a query result as a FITS binary table (empty primary HDU + one BINTABLE, like
// des-archive-access's fitsio.write). A FITS header needs the row count and every column's width
// before the first byte of data, so the rows first go to a spool file beside the output (their NDJSON
// lines, as received) while their types and widths are tallied; then the header is written and the
// spool is encoded into the data section. Memory stays bounded whatever the row count.
//
// Column types, decided from the declared type and from every value (not from the first row):
//   any text value                        -> nA string (n = longest value in UTF-8 bytes, at least 1);
//                                            numbers in such a column are written as text
//   a number that is not an integer       -> D (float64)
//   integers only, declared REAL/FLOAT    -> D
//   integers only, otherwise              -> K (int64)
//   NULLs only (or no rows)               -> by declared type: INTEGER K, TEXT 1A, anything else D
// NULLs: K columns get TNULLn = -9223372036854775808 (fitsio returns that value; astropy masks it),
// D columns NaN, strings the empty string.
import { closeSync, createReadStream, createWriteStream } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { emptyPrimary, encodeRows, RECORD, tableHeader, type CellValue, type Column } from '../daemon/fits.js'
import type { ColumnInfo } from '../daemon/sql/sql-child.js'
import type { Value } from '../daemon/sql/sql-framing.js'
import { anonymousTempSync } from '../daemon/safe-write.js'
import { drained, TextOut, uniqueNames, type RowSink } from './sql-output.js'

export const FITS_INT_NULL = -(2n ** 63n)
const BATCH = 2048

interface Tally {
  texts: number
  numbers: number
  nonIntegers: number
  maxBytes: number
  minInt: number
  maxInt: number
}

/** SQLite's type affinity of a declared type (https://sqlite.org/datatype3.html, section 3.1). */
export function affinity(declared: string | null): 'INTEGER' | 'TEXT' | 'BLOB' | 'REAL' | 'NUMERIC' {
  const t = (declared ?? '').toUpperCase()
  if (t.includes('INT')) return 'INTEGER'
  if (/CHAR|CLOB|TEXT/.test(t)) return 'TEXT'
  if (t.includes('BLOB') || t === '') return 'BLOB'
  if (/REAL|FLOA|DOUB/.test(t)) return 'REAL'
  return 'NUMERIC'
}

/** The FITS column for a result column, from its declared type and what its values were. */
export function fitsColumn(name: string, declared: string | null, t: Tally): Column {
  if (t.texts > 0) {
    const numberWidth = t.numbers === 0 ? 0 : t.nonIntegers > 0 ? 24 : Math.max(String(t.minInt).length, String(t.maxInt).length)
    return { name, format: `${Math.max(1, t.maxBytes, numberWidth)}A` }
  }
  const aff = affinity(declared)
  if (t.nonIntegers > 0 || (t.numbers > 0 && aff === 'REAL')) return { name, format: 'D' }
  if (t.numbers > 0 || aff === 'INTEGER') return { name, format: 'K', nullValue: FITS_INT_NULL }
  if (aff === 'TEXT') return { name, format: '1A' }
  return { name, format: 'D' }
}

export function fitsSink(stream: Writable, path: string): Omit<RowSink, 'abort'> & { abort: () => Promise<void> } {
  // The spool has no name (created and unlinked at once): nothing planted beside the output can
  // redirect it, and it vanishes with this process however the query ends.
  const spoolFd = anonymousTempSync(path)
  let spoolOpen = true
  const closeSpool = () => {
    if (spoolOpen) closeSync(spoolFd)
    spoolOpen = false
  }
  const spool = createWriteStream('', { fd: spoolFd, autoClose: false })
  let spoolError: Error | undefined
  spool.on('error', (err) => (spoolError = err))
  const spoolOut = new TextOut(spool)
  let columns: ColumnInfo[] = []
  let tallies: Tally[] = []

  const write = async (buf: Buffer) => {
    if (!stream.write(buf)) await drained(stream)
  }

  return {
    kind: 'rows',
    begin(cols) {
      columns = cols
      tallies = cols.map(() => ({ texts: 0, numbers: 0, nonIntegers: 0, maxBytes: 0, minInt: 0, maxInt: 0 }))
    },
    row(values, line) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i]
        const t = tallies[i]!
        if (typeof v === 'string') {
          t.texts++
          // UTF-8 needs at most 3 bytes per UTF-16 unit: count bytes only when it could matter.
          if (v.length * 3 > t.maxBytes) t.maxBytes = Math.max(t.maxBytes, Buffer.byteLength(v))
        } else if (typeof v === 'number') {
          t.numbers++
          if (!Number.isInteger(v)) t.nonIntegers++
          else if (v < t.minInt) t.minInt = v
          else if (v > t.maxInt) t.maxInt = v
        }
      }
      return spoolOut.write(line + '\n')
    },
    async end(rows) {
      await spoolOut.flush()
      spool.end()
      await finished(spool).catch((err: Error) => (spoolError ??= err))
      if (spoolError) throw spoolError
      const names = uniqueNames(columns)
      const fitsCols = columns.map((c, i) => fitsColumn(names[i]!, c.type, tallies[i]!))
      await write(emptyPrimary([{ key: 'ORIGIN', value: 'desfs sql' }]))
      await write(tableHeader({ columns: fitsCols, rows }))
      let batch: CellValue[][] = []
      let bytes = 0
      const lines = createInterface({ input: createReadStream('', { fd: spoolFd, start: 0, autoClose: false }), crlfDelay: Infinity })
      for await (const l of lines) {
        batch.push(JSON.parse(l) as Value[])
        if (batch.length >= BATCH) {
          const data = encodeRows(fitsCols, batch)
          bytes += data.length
          await write(data)
          batch = []
        }
      }
      const data = encodeRows(fitsCols, batch)
      bytes += data.length
      await write(data)
      if (bytes % RECORD) await write(Buffer.alloc(RECORD - (bytes % RECORD)))
      closeSpool()
    },
    async abort() {
      spool.destroy()
      closeSpool()
    },
  }
}
