// A small FITS writer (FITS 4.0): header cards, image HDUs and binary tables, big-endian data padded
// to 2880-byte records. Used for `; > out.fits` query results and by the test archive generator.

export const RECORD = 2880

type CardValue = string | number | boolean | bigint

export interface Card {
  key: string
  value?: CardValue
  comment?: string
}

function fmtValue(v: CardValue): string {
  if (typeof v === 'boolean') return (v ? 'T' : 'F').padStart(20)
  if (typeof v === 'bigint') return v.toString().padStart(20)
  if (typeof v === 'number') {
    if (Number.isInteger(v) && Math.abs(v) < 1e18) return String(v).padStart(20)
    let s = v.toExponential(14).toUpperCase()
    if (!Number.isFinite(v)) s = "'NaN'"
    return s.padStart(20)
  }
  const esc = v.replace(/'/g, "''")
  return `'${esc.padEnd(8)}'`.padEnd(20)
}

/** One 80-character card. Strings longer than a card allows are cut (FITS has no room for them). */
export function card(c: Card): string {
  const key = c.key.toUpperCase().padEnd(8).slice(0, 8)
  if (c.key === 'END') return 'END'.padEnd(80)
  if (c.value === undefined) return `${key}${c.comment ? '  ' + c.comment : ''}`.padEnd(80).slice(0, 80)
  let s = `${key}= ${fmtValue(c.value)}`
  if (s.length > 80 && typeof c.value === 'string') s = `${key}= '${c.value.replace(/'/g, "''").slice(0, 66)}'`
  if (c.comment && s.length < 77) s += ` / ${c.comment}`
  return s.padEnd(80).slice(0, 80)
}

export function header(cards: Card[]): Buffer {
  const text = [...cards, { key: 'END' }].map(card).join('')
  const len = Math.ceil(text.length / RECORD) * RECORD
  return Buffer.from(text.padEnd(len, ' '), 'ascii')
}

/** Pads data to a whole number of FITS records with zeros. */
export function padData(data: Buffer): Buffer {
  const rem = data.length % RECORD
  return rem === 0 ? data : Buffer.concat([data, Buffer.alloc(RECORD - rem)])
}

export type Bitpix = 8 | 16 | 32 | 64 | -32 | -64

export interface ImageHdu {
  primary?: boolean
  bitpix: Bitpix
  /** NAXIS1 (fastest), NAXIS2, ... */
  axes: number[]
  extname?: string
  cards?: Card[]
  /** Big-endian pixel data, exactly product(axes) * |bitpix|/8 bytes. */
  data?: Buffer
}

export function imageHdu(h: ImageHdu): Buffer {
  const cards: Card[] = h.primary
    ? [{ key: 'SIMPLE', value: true, comment: 'conforms to FITS standard' }]
    : [{ key: 'XTENSION', value: 'IMAGE', comment: 'image extension' }]
  cards.push({ key: 'BITPIX', value: h.bitpix }, { key: 'NAXIS', value: h.axes.length })
  h.axes.forEach((n, i) => cards.push({ key: `NAXIS${i + 1}`, value: n }))
  if (h.primary) cards.push({ key: 'EXTEND', value: true })
  else cards.push({ key: 'PCOUNT', value: 0 }, { key: 'GCOUNT', value: 1 })
  if (h.extname) cards.push({ key: 'EXTNAME', value: h.extname })
  cards.push(...(h.cards ?? []))
  const expected = h.axes.length ? (h.axes.reduce((a, b) => a * b, 1) * Math.abs(h.bitpix)) / 8 : 0
  const data = h.data ?? Buffer.alloc(0)
  if (data.length !== expected) throw new Error(`image data has ${data.length} bytes, axes need ${expected}`)
  return Buffer.concat([header(cards), padData(data)])
}

export type ColumnFormat = 'L' | 'B' | 'I' | 'J' | 'K' | 'E' | 'D' | `${number}A` | `${number}E` | `${number}D` | `${number}J`

export interface Column {
  name: string
  format: ColumnFormat
  unit?: string
  /** Integer value that stands for NULL (TNULLn). */
  nullValue?: number | bigint
}

/** Bytes per row of a column format. */
export function formatWidth(f: ColumnFormat): number {
  const m = /^(\d*)([LBIJKEDA])$/.exec(f)
  if (!m) throw new Error(`unsupported TFORM ${f}`)
  const repeat = m[1] ? Number(m[1]) : 1
  const size = { L: 1, B: 1, I: 2, J: 4, K: 8, E: 4, D: 8, A: 1 }[m[2] as 'L']
  return repeat * size
}

export type CellValue = string | number | bigint | boolean | null | number[]

/** Encodes rows into big-endian binary-table bytes. NULLs become TNULL, NaN, or blanks. */
export function encodeRows(columns: Column[], rows: CellValue[][]): Buffer {
  const widths = columns.map((c) => formatWidth(c.format))
  const rowBytes = widths.reduce((a, b) => a + b, 0)
  const buf = Buffer.alloc(rowBytes * rows.length)
  let off = 0
  for (const row of rows) {
    columns.forEach((c, i) => {
      const v = row[i]
      const kind = c.format.slice(-1)
      const repeat = widths[i]! / formatWidth(kind as ColumnFormat)
      if (kind === 'A') {
        buf.write(v == null ? '' : String(v), off, widths[i]!, 'utf8')
      } else if (Array.isArray(v)) {
        v.slice(0, repeat).forEach((x, j) => writeScalar(buf, kind, off + j * (widths[i]! / repeat), x, c))
      } else {
        writeScalar(buf, kind, off, v ?? null, c)
      }
      off += widths[i]!
    })
  }
  return buf
}

function writeScalar(buf: Buffer, kind: string, off: number, v: CellValue, c: Column): void {
  const isNull = v === null || v === undefined
  switch (kind) {
    case 'L':
      buf.write(isNull ? '\0' : v ? 'T' : 'F', off, 1, 'ascii')
      break
    case 'B':
      buf.writeUInt8(isNull ? Number(c.nullValue ?? 0) : Number(v), off)
      break
    case 'I':
      buf.writeInt16BE(isNull ? Number(c.nullValue ?? 0) : Number(v), off)
      break
    case 'J':
      buf.writeInt32BE(isNull ? Number(c.nullValue ?? 0) : Number(v), off)
      break
    case 'K':
      buf.writeBigInt64BE(isNull ? BigInt(c.nullValue ?? 0) : BigInt(v as number | bigint), off)
      break
    case 'E':
      buf.writeFloatBE(isNull ? NaN : Number(v), off)
      break
    case 'D':
      buf.writeDoubleBE(isNull ? NaN : Number(v), off)
      break
  }
}

export interface TableHdu {
  extname?: string
  columns: Column[]
  /** Rows already encoded with encodeRows (may be built in pieces for large tables). */
  data: Buffer
  rows: number
  cards?: Card[]
}

export function tableHeader(t: Omit<TableHdu, 'data'>): Buffer {
  const rowBytes = t.columns.reduce((a, c) => a + formatWidth(c.format), 0)
  const cards: Card[] = [
    { key: 'XTENSION', value: 'BINTABLE', comment: 'binary table extension' },
    { key: 'BITPIX', value: 8 },
    { key: 'NAXIS', value: 2 },
    { key: 'NAXIS1', value: rowBytes, comment: 'bytes per row' },
    { key: 'NAXIS2', value: t.rows, comment: 'rows' },
    { key: 'PCOUNT', value: 0 },
    { key: 'GCOUNT', value: 1 },
    { key: 'TFIELDS', value: t.columns.length },
  ]
  t.columns.forEach((c, i) => {
    cards.push({ key: `TTYPE${i + 1}`, value: c.name }, { key: `TFORM${i + 1}`, value: c.format })
    if (c.unit) cards.push({ key: `TUNIT${i + 1}`, value: c.unit })
    if (c.nullValue !== undefined) cards.push({ key: `TNULL${i + 1}`, value: c.nullValue })
  })
  if (t.extname) cards.push({ key: 'EXTNAME', value: t.extname })
  cards.push(...(t.cards ?? []))
  return header(cards)
}

export function tableHdu(t: TableHdu): Buffer {
  return Buffer.concat([tableHeader(t), padData(t.data)])
}

/** An empty primary HDU, for files whose content is all in extensions. */
export function emptyPrimary(cards: Card[] = []): Buffer {
  return imageHdu({ primary: true, bitpix: 8, axes: [], cards })
}

/** A header keyword's value as read back: strings unquoted, T/F as booleans, numbers as numbers. */
export type ParsedValue = string | number | boolean | null

/**
 * Reads one 80-character card: its keyword and value (undefined for commentary cards and cards
 * without a value indicator). Integers too large for a double keep their text; a value the standard
 * does not describe (a complex pair, a stray word) also comes back as its text, never as an error.
 */
export function parseCard(text: string): { key: string; value?: ParsedValue } {
  const key = text.slice(0, 8).trimEnd()
  if (text.slice(8, 10) !== '= ') return { key }
  const rest = text.slice(10)
  const lead = rest.trimStart()
  if (lead.startsWith("'")) {
    // A string: quotes doubled inside; trailing blanks are not significant, leading ones are.
    let s = ''
    for (let i = 1; i < lead.length; i++) {
      if (lead[i] === "'") {
        if (lead[i + 1] === "'") {
          s += "'"
          i++
          continue
        }
        return { key, value: s.trimEnd() }
      }
      s += lead[i]
    }
    return { key, value: s.trimEnd() } // no closing quote: what is there
  }
  const slash = lead.indexOf('/')
  const word = (slash < 0 ? lead : lead.slice(0, slash)).trim()
  if (word === '') return { key, value: null } // an undefined value
  if (word === 'T') return { key, value: true }
  if (word === 'F') return { key, value: false }
  if (/^[+-]?\d+$/.test(word)) {
    const n = Number(word)
    return { key, value: Number.isSafeInteger(n) ? n : word }
  }
  if (/^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$/.test(word)) return { key, value: Number(word.replace(/[Dd]/, 'E')) }
  return { key, value: word }
}
