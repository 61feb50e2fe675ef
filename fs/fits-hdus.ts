// Walks a FITS file's headers, given only a way to read bytes at an offset: the HDU index (where each
// header and each data part is, what kind of HDU it is) and, for those who ask, the header keywords.
// It knows FITS by content (`SIMPLE  =` in the first card), not by name, reads headers in whole
// 2880-byte records, and jumps over data parts (their length follows from BITPIX, NAXISn, PCOUNT and
// GCOUNT), so a file's headers cost its header bytes and nothing more. Anything malformed or cut short
// ends the walk quietly with the HDUs read so far: the file still reads as plain bytes.
import { RECORD, parseCard, type ParsedValue } from '../daemon/fits.js'

/** Reads up to `length` bytes at `offset` (fewer at the end of the file). */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>

export type HduType = 'image' | 'bintable' | 'table' | 'compressed' | string

export interface HduInfo {
  index: number
  extname: string | null
  /** image (the primary HDU too), bintable, table, compressed (a tile-compressed image: ZIMAGE), or the XTENSION named otherwise. */
  type: HduType
  headerOffset: number
  headerLength: number
  dataOffset: number
  /** Bytes of data the header describes (heap included), without the padding to a whole record. */
  dataLength: number
}

/** A header's keywords: the first value of each (commentary cards left out), long strings joined. */
export type HeaderCards = Map<string, ParsedValue>

export interface FitsWalk {
  hdus: HduInfo[]
  /** Each HDU's keywords, by index (only when asked for). */
  headers: HeaderCards[]
}

/** Records read at a time once a header goes on past its first record. */
const CHUNK_RECORDS = 4
/** A header longer than this is taken for garbage (the largest real ones hold a few thousand cards). */
const MAX_HEADER_BYTES = 1000 * RECORD
/** HDUs walked at most (DECam exposures have 70; a file with more is taken for garbage). */
const MAX_HDUS = 10_000

const CARD = 80

/** True when a first record starts like a FITS file. */
export function looksLikeFits(first: Buffer): boolean {
  return first.length >= 10 && first.toString('latin1', 0, 10) === 'SIMPLE  = '
}

/**
 * One header starting at `offset`: its cards up to END and its length in whole records, or null when
 * it has no END within the file (cut short) or within MAX_HEADER_BYTES.
 */
async function readHeader(read: ReadAt, offset: number, size: number, first?: Buffer): Promise<{ cards: string[]; length: number } | null> {
  const cards: string[] = []
  let at = offset
  let chunk = first ?? (await read(at, Math.min(RECORD, size - at)))
  for (;;) {
    const whole = chunk.length - (chunk.length % RECORD)
    if (whole === 0) return null
    for (let c = 0; c < whole; c += CARD) {
      const text = chunk.toString('latin1', c, c + CARD)
      if (text.startsWith('END') && text.slice(3).trim() === '')
        return { cards, length: at - offset + Math.ceil((c + CARD) / RECORD) * RECORD }
      cards.push(text)
    }
    at += whole
    if (whole < chunk.length || at >= size || at - offset >= MAX_HEADER_BYTES) return null
    chunk = await read(at, Math.min(CHUNK_RECORDS * RECORD, size - at))
  }
}

/** The keywords of a header's cards; CONTINUE cards extend a string that ends in '&'. */
export function headerCards(cards: string[]): HeaderCards {
  const out: HeaderCards = new Map()
  let last: string | undefined
  for (const text of cards) {
    const { key, value } = parseCard(text)
    if (key === 'CONTINUE' && last !== undefined) {
      const prev = out.get(last)
      const more = parseCard(`CONTINUE= ${text.slice(8).trimStart()}`).value
      if (typeof prev === 'string' && prev.endsWith('&') && typeof more === 'string') {
        out.set(last, prev.slice(0, -1) + more)
        continue
      }
    }
    last = undefined
    if (value === undefined || key === '' || out.has(key)) continue
    out.set(key, value)
    last = key
  }
  return out
}

const int = (v: ParsedValue | undefined): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined)

/** Bytes of data a header describes (FITS 4.0, 4.4.1.1 and 7.1.1), or undefined when it makes no sense. */
export function dataBytes(h: HeaderCards, primary: boolean): number | undefined {
  const bitpix = int(h.get('BITPIX'))
  const naxis = int(h.get('NAXIS'))
  if (bitpix === undefined || ![8, 16, 32, 64, -32, -64].includes(bitpix)) return undefined
  if (naxis === undefined || naxis < 0 || naxis > 999) return undefined
  if (naxis === 0) return 0
  const axes: number[] = []
  for (let i = 1; i <= naxis; i++) {
    const n = int(h.get(`NAXIS${i}`))
    if (n === undefined || n < 0) return undefined
    axes.push(n)
  }
  // Random groups: NAXIS1 = 0 says so, and the groups' axes are the rest.
  const groups = primary && axes[0] === 0 && h.get('GROUPS') === true
  if (primary && !groups) return axes.reduce((a, b) => a * b, 1) * (Math.abs(bitpix) / 8)
  const pcount = int(h.get('PCOUNT') ?? 0)
  const gcount = int(h.get('GCOUNT') ?? 1)
  if (pcount === undefined || gcount === undefined || pcount < 0 || gcount < 0) return undefined
  const product = (groups ? axes.slice(1) : axes).reduce((a, b) => a * b, 1)
  const bytes = (Math.abs(bitpix) / 8) * gcount * (pcount + product)
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

function hduType(h: HeaderCards, primary: boolean): HduType {
  if (primary) return 'image'
  const x = String(h.get('XTENSION') ?? '')
    .trim()
    .toUpperCase()
  if (x === 'BINTABLE') return h.get('ZIMAGE') === true ? 'compressed' : 'bintable'
  if (x === 'IMAGE') return 'image'
  if (x === 'TABLE') return 'table'
  return x.toLowerCase()
}

/**
 * Walks the HDUs of a file of `size` bytes. Not FITS by content: no HDUs, after one read of the first
 * record. `withCards` keeps each header's keywords as well.
 */
export async function walkFits(read: ReadAt, size: number, withCards = false): Promise<FitsWalk> {
  const walk: FitsWalk = { hdus: [], headers: [] }
  if (size < RECORD) return walk
  const first = await read(0, RECORD)
  if (!looksLikeFits(first)) return walk
  let offset = 0
  for (let index = 0; index < MAX_HDUS && offset + RECORD <= size; index++) {
    const header = await readHeader(read, offset, size, index === 0 ? first : undefined)
    if (!header) break
    const primary = index === 0
    // After the primary, anything that does not start with XTENSION is not an HDU (trailing bytes).
    if (!primary && !header.cards[0]?.startsWith('XTENSION= ')) break
    const cards = headerCards(header.cards)
    const data = dataBytes(cards, primary)
    if (data === undefined) break
    const extname = cards.get('EXTNAME')
    const dataOffset = offset + header.length
    walk.hdus.push({
      index,
      extname: typeof extname === 'string' ? extname : null,
      type: hduType(cards, primary),
      headerOffset: offset,
      headerLength: header.length,
      dataOffset,
      dataLength: data,
    })
    if (withCards) walk.headers.push(cards)
    offset = dataOffset + Math.ceil(data / RECORD) * RECORD
  }
  return walk
}

/** Just the HDU index; [] for a file that is not FITS. */
export async function hduIndex(read: ReadAt, size: number): Promise<HduInfo[]> {
  return (await walkFits(read, size)).hdus
}
