// How a query's result stream is framed. Control lines (the columns, the end, an error) are JSON
// objects on lines of their own that start with a marker byte; every other line is data. In NDJSON
// (the default) the marker is the object's own '{' (data rows are arrays, starting with '['); in TSV,
// where the query process formats the rows itself, it is the ASCII record separator (0x1e, which TSV
// fields escape), so a TSV row can never be taken for a control line. Data never holds a raw newline
// inside a row in either format, so control lines are found at "\n" + marker without parsing rows.
export type ResultFormat = 'ndjson' | 'tsv'

/** A value as it comes out of a result row (BLOBs arrive as hex text). */
export type Value = string | number | null

export const RS = '\x1e'
const NL = 0x0a

export function markerOf(format: ResultFormat): number {
  return format === 'tsv' ? RS.charCodeAt(0) : '{'.charCodeAt(0)
}

/** A control line as written in a format (the marker, then the JSON). */
export function controlLine(format: ResultFormat, value: unknown): string {
  return (format === 'tsv' ? RS : '') + JSON.stringify(value) + '\n'
}

/** A TSV field: NULL is empty; tab, newline, CR, backslash and the record separator are escaped. */
export function tsvField(v: Value): string {
  if (v === null) return ''
  if (typeof v !== 'string') return String(v)
  return /[\t\n\r\\\x1e]/.test(v)
    ? v.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\x1e/g, '\\x1e')
    : v
}

/**
 * Splits a byte stream into data and control lines, chunk by chunk, whatever the chunk boundaries.
 * `feed` returns the data parts of a chunk (in order, whole or partial lines) and reports each complete
 * control line, without its marker in TSV, to `onControl`.
 */
export class Framer {
  private marker: number
  private nlMarker: Buffer
  private strip: number
  private atLineStart = true
  private ctrl: Buffer[] | undefined
  private onControl: (json: string) => void

  constructor(format: ResultFormat, onControl: (json: string) => void) {
    this.marker = markerOf(format)
    this.nlMarker = Buffer.of(NL, this.marker)
    this.strip = format === 'tsv' ? 1 : 0
    this.onControl = onControl
  }

  feed(chunk: Buffer): Buffer[] {
    const data: Buffer[] = []
    let pos = 0
    if (this.ctrl) {
      const nl = chunk.indexOf(NL)
      this.ctrl.push(chunk.subarray(0, nl < 0 ? chunk.length : nl))
      if (nl < 0) return data
      this.onControl(Buffer.concat(this.ctrl).toString('utf8'))
      this.ctrl = undefined
      pos = nl + 1
      this.atLineStart = true
    }
    while (pos < chunk.length) {
      let start: number
      if (this.atLineStart && chunk[pos] === this.marker) start = pos
      else {
        const k = chunk.indexOf(this.nlMarker, pos)
        if (k < 0) break
        start = k + 1
      }
      if (start > pos) data.push(chunk.subarray(pos, start))
      const nl = chunk.indexOf(NL, start)
      if (nl < 0) {
        this.ctrl = [chunk.subarray(start + this.strip)]
        pos = chunk.length
        break
      }
      this.onControl(chunk.subarray(start + this.strip, nl).toString('utf8'))
      pos = nl + 1
      this.atLineStart = true
    }
    if (pos < chunk.length) data.push(chunk.subarray(pos))
    if (chunk.length) this.atLineStart = chunk[chunk.length - 1] === NL
    return data
  }
}
