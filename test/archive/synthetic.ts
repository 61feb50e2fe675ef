// A synthetic metadata DB at archive scale (millions of Y6A2_FILE_ARCHIVE_INFO rows) in the real DES
// layout, without file contents: finalcut exposure directories (red/immask, red/bkg, seg, psf, each
// with one file per CCD, 60 CCDs) and multiepoch tile directories (coadd, cat, seg, psf, nwgint, aux).
// Rows come out in pipeline order (per exposure, per CCD, the four products in turn), not sorted by
// path, as a processing-ordered DESFILE_ID would give them. Optionally it pre-seeds desfs's facts DB
// with every file's size (so a mount never asks the archive) and creates the same tree of empty files
// on local disk (the benchmark's baseline). Used by the tree tests and `npm run bench -- tree`.
import Database from 'better-sqlite3'
import { closeSync, mkdirSync, openSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { Facts, type FileFacts } from '../../fs/facts.js'

export interface SyntheticOptions {
  /** The metadata DB file to create (replaced if it exists). */
  db: string
  /** Number of valid FAI rows (files), at least a few hundred. */
  rows: number
  /** Entries in each very large directory (a tile's aux directory). */
  bigDir?: number
  /** How many tiles have such a directory (the first ones). */
  bigDirs?: number
  /** Share of the rows that are multiepoch (tile) products. */
  tileShare?: number
  /** Appends hostile rows of every kind the mount must refuse. */
  hostile?: boolean
  /** Pre-seeds this facts DB (desfs's state dir facts.sqlite) with every file's size. */
  facts?: string
  /** Creates the same tree of empty files under this directory. */
  localTree?: string
  /** Table name for the file table (to test case-insensitive detection). */
  table?: string
  /** Column names [path, filename, compression]. */
  columns?: [string, string, string]
  /** Called every 100,000 rows. */
  onProgress?: (rows: number) => void
}

export interface SyntheticResult {
  /** Valid files (rows that must appear in the mount). */
  files: number
  /** Directories that hold files. */
  fileDirs: number
  /** Every directory the tree has, the root excluded. */
  dirs: number
  /** Archive-relative paths of the large directories. */
  bigDirs: string[]
  /** A few archive-relative file paths spread over the tree, for stat timings. */
  sample: string[]
  /** Hostile rows added, with the reason each must be refused. */
  hostile: { row: string; why: string }[]
  /** Files whose name matches *_r_c27_*. */
  rC27: number
  seconds: number
}

const BANDS = ['g', 'r', 'i', 'z', 'Y']
/** DECam: 62 CCDs, of which 2 and 61 are not used. */
const CCDS = Array.from({ length: 62 }, (_, i) => i + 1).filter((c) => c !== 2 && c !== 61)

const pad = (n: number, w: number) => String(n).padStart(w, '0')

function tileName(t: number): string {
  // Sorted by t: RA hhmm increasing, then Dec.
  const ra = Math.floor(t / 12) % 2400
  const dec = (t % 12) * 5
  return `DES${pad(ra, 4)}-${pad(dec, 2)}${pad((t * 7) % 60, 2)}`
}

function nite(e: number): string {
  const d = new Date(Date.UTC(2012, 10, 1) + Math.floor(e / 150) * 86_400_000)
  return `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1, 2)}${pad(d.getUTCDate(), 2)}`
}

/** A file: directory, FILENAME, COMPRESSION, size. */
type Row = [string, string, string | null, number]

/** Every file of the layout in pipeline order, `rows` in all. */
function* layout(rows: number, tileShare: number, bigDir: number, bigDirs: number, result: SyntheticResult): Generator<Row> {
  let n = 0
  const dirs = new Set<string>()
  const fileDirs = new Set<string>()
  const noteDir = (d: string) => {
    if (fileDirs.has(d)) return
    fileDirs.add(d)
    const segs = d.split('/')
    for (let i = 1; i <= segs.length; i++) dirs.add(segs.slice(0, i).join('/'))
  }
  const emit = (row: Row): Row => {
    noteDir(row[0])
    if (/_r_c27_/.test(row[1])) result.rC27++
    n++
    return row
  }
  const tileRows = Math.floor(rows * tileShare)
  const seRows = rows - tileRows
  // Single-epoch: 240 files per exposure (4 products x 60 CCDs).
  for (let e = 0; n < seRows; e++) {
    const expnum = 229_343 + e
    const band = BANDS[e % 5]!
    const req = 4056 + Math.floor(e / 20_000)
    const base = `OPS/finalcut/Y6A1/${nite(e)}-r${req}/D${pad(expnum, 8)}/p01`
    for (const c of CCDS) {
      if (n >= seRows) break
      const stem = `D${pad(expnum, 8)}_${band}_c${pad(c, 2)}_r${req}p01`
      const s = (expnum * 131 + c * 7) % 1000
      yield emit([`${base}/red/immask`, `${stem}_immasked.fits`, '.fz', 18_000_000 + s * 1000])
      if (n < seRows) yield emit([`${base}/red/bkg`, `${stem}_bkg.fits`, '.fz', 2_000_000 + s * 100])
      if (n < seRows) yield emit([`${base}/seg`, `${stem}_segmap.fits`, '.fz', 1_500_000 + s * 100])
      if (n < seRows) yield emit([`${base}/psf`, `${stem}_psfexcat.psf`, c % 2 ? null : '', 50_000 + s])
    }
    if (e === 0) result.sample.push(`${base}/red/immask/D${pad(expnum, 8)}_${band}_c01_r${req}p01_immasked.fits.fz`)
  }
  // Multiepoch tiles; the first ones have very large aux directories.
  for (let t = 0; n < rows; t++) {
    const tile = tileName(t)
    const base = `OPS/multiepoch/Y6A2/r4575/${tile}/p01`
    const per = (dir: string, name: string, comp: string | null, size: number) =>
      n < rows ? emit([`${base}/${dir}`, name, comp, size]) : undefined
    const out: (Row | undefined)[] = []
    for (const band of BANDS) {
      const stem = `${tile}_r4575p01_${band}`
      out.push(
        per('coadd', `${stem}.fits`, '.fz', 400_000_000),
        per('cat', `${stem}_cat.fits`, null, 90_000_000),
        per('seg', `${stem}_segmap.fits`, null, 40_000_000),
        per('psf', `${stem}_psfcat.psf`, null, 120_000),
      )
    }
    for (const r of out) if (r) yield r
    const big = t < bigDirs
    const inputs = big ? bigDir : 200
    for (let k = 0; k < inputs && n < rows; k++) {
      const expnum = 229_343 + ((t * 37 + k * 11) % 40_000)
      const se = `D${pad(expnum, 8)}_${BANDS[k % 5]}_c${pad(CCDS[k % 60]!, 2)}`
      if (big) {
        yield emit([`${base}/aux`, `${tile}_r4575p01_${se}_${pad(k, 5)}_scamp.ohead`, null, 30_000])
        continue
      }
      yield emit([`${base}/nwgint`, `${tile}_r4575p01_${se}_nwgint.fits`, '.fz', 20_000_000])
      if (n < rows) yield emit([`${base}/aux`, `${tile}_r4575p01_${se}_scamp.ohead`, null, 30_000])
    }
    if (big) result.bigDirs.push(`${base}/aux`)
    if (t === 1) result.sample.push(`${base}/coadd/${tile}_r4575p01_g.fits.fz`)
  }
  result.fileDirs = fileDirs.size
  result.dirs = dirs.size
}

/** Rows the mount must refuse, one or more of every kind; appended after the valid ones. */
export function hostileRows(): { row: [string, string, string | null]; why: string }[] {
  const good = 'OPS/finalcut/Y6A1/20121101-r4056/D00229343/p01'
  return [
    { row: ['OPS/../../../../etc', 'passwd', null], why: "'.' or '..' segment" },
    { row: [`${good}/./red`, 'dot.fits', null], why: "'.' or '..' segment" },
    { row: ['/etc', 'shadow', null], why: 'absolute path' },
    { row: [good, '/etc/hosts', null], why: 'absolute path' },
    { row: ['OPS//finalcut', 'double.fits', null], why: 'empty segment' },
    { row: [good, 'sub/name.fits', null], why: 'empty segment' },
    { row: [good, 'nul\u0000name.fits', null], why: 'control character' },
    { row: [`${good}/bad\u0000dir`, 'x.fits', null], why: 'control character' },
    { row: [good, 'new\nline.fits', null], why: 'control character' },
    { row: [good, 'x'.repeat(300) + '.fits', null], why: 'name too long' },
    { row: [`${good}/${'d'.repeat(256)}`, 'x.fits', null], why: 'name too long' },
    { row: [Array.from({ length: 40 }, () => 'y'.repeat(120)).join('/'), 'deep.fits', null], why: 'path too long' },
    { row: [good, 'weird.fits', '/../x'], why: 'bad compression' },
    { row: [good, '', '.fz'], why: 'empty filename' },
    { row: [good, null as unknown as string, null], why: 'empty filename' },
    { row: [`${good}/red/immask`, `D00229343_g_c01_r4056p01_immasked.fits`, '.fz'], why: 'duplicate' },
    { row: [good, 'red', null], why: 'file/directory clash' },
    { row: [`${good}/psf/D00229343_g_c01_r4056p01_psfexcat.psf`, 'below-a-file.fits', null], why: 'file/directory clash' },
  ]
}

/** Generates the DB (and optionally facts and a local tree). Deterministic. */
export function generateSynthetic(o: SyntheticOptions): SyntheticResult {
  const t0 = Date.now()
  const result: SyntheticResult = { files: 0, fileDirs: 0, dirs: 0, bigDirs: [], sample: [], hostile: [], rC27: 0, seconds: 0 }
  rmSync(o.db, { force: true })
  const table = o.table ?? 'Y6A2_FILE_ARCHIVE_INFO'
  const [cp, cf, cc] = o.columns ?? ['PATH', 'FILENAME', 'COMPRESSION']
  const db = new Database(o.db)
  db.pragma('journal_mode = OFF')
  db.pragma('synchronous = OFF')
  db.exec(`CREATE TABLE "${table}" ("${cf}" TEXT, "${cp}" TEXT, "${cc}" TEXT, DESFILE_ID INTEGER)`)
  const insert = db.prepare(`INSERT INTO "${table}" VALUES (?, ?, ?, ?)`)
  const facts = o.facts ? new Facts(o.facts) : undefined
  // Facts are recorded a few directories at a time, as listings would record them.
  const pending = new Map<string, Map<string, FileFacts>>()
  const flushFacts = () => {
    for (const [dir, files] of pending) facts!.recordListing(dir, files)
    pending.clear()
  }
  if (o.localTree) mkdirSync(o.localTree, { recursive: true })
  const madeDirs = new Set<string>()
  let id = 100_000
  db.exec('BEGIN')
  for (const [path, filename, comp, size] of layout(o.rows, o.tileShare ?? 0.15, o.bigDir ?? 10_000, o.bigDirs ?? 1, result)) {
    insert.run(filename, path, comp, id++)
    const rel = `${path}/${filename}${comp ?? ''}`
    if (facts) {
      let files = pending.get(path)
      if (!files) {
        if (pending.size >= 16) flushFacts()
        pending.set(path, (files = new Map()))
      }
      files.set(rel, { size, adler32: null, mtime: null })
    }
    if (o.localTree) {
      if (!madeDirs.has(path)) {
        mkdirSync(join(o.localTree, path), { recursive: true })
        madeDirs.add(path)
      }
      closeSync(openSync(join(o.localTree, rel), 'w'))
    }
    result.files++
    if (result.files % 100_000 === 0) {
      db.exec('COMMIT; BEGIN')
      o.onProgress?.(result.files)
    }
  }
  if (o.hostile) {
    for (const h of hostileRows()) {
      insert.run(h.row[1], h.row[0], h.row[2], id++)
      result.hostile.push({ row: `${h.row[0]}/${h.row[1]}${h.row[2] ?? ''}`, why: h.why })
    }
  }
  db.exec('COMMIT')
  db.close()
  if (facts) {
    flushFacts()
    facts.close()
  }
  result.seconds = (Date.now() - t0) / 1000
  return result
}
