// Which metadata rows may become files in the tree. A row is refused when its path could escape the
// mount or the cache dir, or could not be a Linux file name: absolute paths, '.'/'..' segments, empty
// segments, NUL or control characters, over-long names. Refusals are counted by reason with a few
// examples, and reported once per build.

export const MAX_NAME_BYTES = 255
export const MAX_PATH_BYTES = 4000

export type RefusalReason =
  | 'absolute path'
  | "'.' or '..' segment"
  | 'empty segment'
  | 'control character'
  | 'name too long'
  | 'path too long'
  | 'bad compression'
  | 'empty filename'
  | 'duplicate'
  | 'file/directory clash'

export interface CheckedRow {
  /** Directory segments, never empty strings, never '.' or '..'. */
  dir: string[]
  /** FILENAME + COMPRESSION. */
  name: string
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/

function checkSegment(seg: string): RefusalReason | undefined {
  if (seg === '') return 'empty segment'
  if (seg === '.' || seg === '..') return "'.' or '..' segment"
  if (CONTROL.test(seg)) return 'control character'
  if (Buffer.byteLength(seg) > MAX_NAME_BYTES) return 'name too long'
  return undefined
}

/**
 * Checks one (PATH, FILENAME, COMPRESSION) row. COMPRESSION may be NULL, '' or an extension such as
 * '.fz'/'.gz'. A single trailing '/' on PATH is tolerated; an empty PATH puts the file at the root.
 */
export function checkRow(path: unknown, filename: unknown, compression: unknown): CheckedRow | RefusalReason {
  const p = path == null ? '' : String(path)
  const f = filename == null ? '' : String(filename)
  const c = compression == null ? '' : String(compression)
  if (f === '') return 'empty filename'
  if (c !== '' && !/^\.[A-Za-z0-9]{1,8}$/.test(c)) return 'bad compression'
  if (p.startsWith('/')) return 'absolute path'
  if (f.includes('/')) return f.startsWith('/') ? 'absolute path' : 'empty segment'
  const name = f + c
  const trimmed = p.endsWith('/') ? p.slice(0, -1) : p
  const dir = trimmed === '' ? [] : trimmed.split('/')
  for (const seg of dir) {
    const bad = checkSegment(seg)
    if (bad) return bad
  }
  const bad = checkSegment(name)
  if (bad) return bad
  if (Buffer.byteLength(trimmed) + 1 + Buffer.byteLength(name) > MAX_PATH_BYTES) return 'path too long'
  return { dir, name }
}

/** Counts refusals by reason, keeping the first few examples of each, for one summary log line. */
export class RefusalTally {
  readonly counts = new Map<RefusalReason, number>()
  readonly examples = new Map<RefusalReason, string[]>()

  add(reason: RefusalReason, example: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1)
    const ex = this.examples.get(reason) ?? []
    if (ex.length < 3) ex.push(example.length > 120 ? example.slice(0, 117) + '...' : example)
    this.examples.set(reason, ex)
  }

  get total(): number {
    let n = 0
    for (const c of this.counts.values()) n += c
    return n
  }

  toJSON(): Record<string, { count: number; examples: string[] }> {
    const out: Record<string, { count: number; examples: string[] }> = {}
    for (const [r, c] of this.counts) out[r] = { count: c, examples: this.examples.get(r) ?? [] }
    return out
  }

  /** e.g. "skipped 4 rows: 2 '.' or '..' segment (e.g. \"a/../b.fits\"), 1 absolute path (...)" */
  summary(): string {
    const parts = [...this.counts].map(([r, c]) => `${c} ${r} (e.g. ${JSON.stringify(this.examples.get(r)?.[0] ?? '')})`)
    return `skipped ${this.total} rows: ${parts.join(', ')}`
  }
}

/** Printable form of a raw row for examples: PATH/FILENAME+COMPRESSION with control characters escaped. */
export function describeRow(path: unknown, filename: unknown, compression: unknown): string {
  // eslint-disable-next-line no-control-regex
  const s = `${path ?? ''}/${filename ?? ''}${compression ?? ''}`
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)
}
