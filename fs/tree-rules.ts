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

const CONTROL = /[\x00-\x1f\x7f]/

function checkSegment(seg: string): RefusalReason | undefined {
  if (seg === '') return 'empty segment'
  if (seg === '.' || seg === '..') return "'.' or '..' segment"
  if (CONTROL.test(seg)) return 'control character'
  if (Buffer.byteLength(seg) > MAX_NAME_BYTES) return 'name too long'
  return undefined
}

/** A checked PATH: its directory segments and its length in bytes (for the whole-path limit). */
export interface CheckedPath {
  dir: string[]
  bytes: number
}

/**
 * Checks a PATH value. A single trailing '/' is tolerated; an empty PATH puts files at the root.
 * Kept apart from the name check because thousands of rows share one PATH: the build checks each
 * distinct PATH once.
 */
export function checkPath(path: unknown): CheckedPath | RefusalReason {
  const p = path == null ? '' : String(path)
  if (p.startsWith('/')) return 'absolute path'
  const trimmed = p.endsWith('/') ? p.slice(0, -1) : p
  const dir = trimmed === '' ? [] : trimmed.split('/')
  for (const seg of dir) {
    const bad = checkSegment(seg)
    if (bad) return bad
  }
  return { dir, bytes: Buffer.byteLength(trimmed) }
}

/** Checks FILENAME and COMPRESSION (NULL, '' or an extension such as '.fz'/'.gz'); returns the file's name. */
export function checkName(filename: unknown, compression: unknown): string | { refused: RefusalReason } {
  const f = filename == null ? '' : String(filename)
  const c = compression == null ? '' : String(compression)
  if (f === '') return { refused: 'empty filename' }
  if (c !== '' && !/^\.[A-Za-z0-9]{1,8}$/.test(c)) return { refused: 'bad compression' }
  if (f.includes('/')) return { refused: f.startsWith('/') ? 'absolute path' : 'empty segment' }
  const name = f + c
  const bad = checkSegment(name)
  return bad ? { refused: bad } : name
}

/** The whole-path limit, for a checked PATH and name. */
export function pathTooLong(path: CheckedPath, name: string): boolean {
  return path.bytes + 1 + Buffer.byteLength(name) > MAX_PATH_BYTES
}

/** Checks a whole (PATH, FILENAME, COMPRESSION) row: the archive path's segments, or why it is refused. */
export function checkRow(path: unknown, filename: unknown, compression: unknown): { dir: string[]; name: string } | RefusalReason {
  const p = checkPath(path)
  if (typeof p === 'string') return p
  const name = checkName(filename, compression)
  if (typeof name !== 'string') return name.refused
  return pathTooLong(p, name) ? 'path too long' : { dir: p.dir, name }
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
    // Examples are already printable (describeRow), so they are quoted, not JSON-escaped again.
    const parts = [...this.counts].map(([r, c]) => `${c} ${r} (e.g. "${this.examples.get(r)?.[0] ?? ''}")`)
    return `skipped ${this.total} rows: ${parts.join(', ')}`
  }
}

/** Printable form of a raw row for examples: PATH/FILENAME+COMPRESSION with control characters escaped. */
export function describeRow(path: unknown, filename: unknown, compression: unknown): string {
  const s = `${path ?? ''}/${filename ?? ''}${compression ?? ''}`
  return s.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)
}
