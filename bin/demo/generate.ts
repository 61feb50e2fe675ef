// Generates a deterministic DES-like archive and a metadata DB shaped like des-archive-access's:
// the real path layout (finalcut single-epoch products per exposure and CCD, multiepoch coadd
// products per tile and band), valid FITS files (fpack-compressed where DES compresses them, using
// Debian's fpack when present and the committed files in bin/demo/fz otherwise), upper-case Y6A2_* tables with no
// size or checksum columns, EXPNUM/CCDNUM stored as REAL in Y6A2_MISCFILE, COMPRESSION values NULL,
// '' and '.fz', and hostile rows that a mount must refuse. Shipped under bin/ because `desfs demo` runs
// it; the tests and benchmarks import it from here.
import Database from 'better-sqlite3'
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { emptyPrimary, encodeRows, imageHdu, tableHdu, type Card, type Column } from '../../daemon/fits.js'

export interface GenerateOptions {
  /** Directory to create: <out>/archive (the files) and <out>/metadata.db. */
  out: string
  seed?: number
  exposures?: number
  ccds?: number
  tiles?: string[]
  /** Single-epoch image size [nx, ny]. */
  imageSize?: [number, number]
  /** Coadd image size [nx, ny]. */
  coaddSize?: [number, number]
  /** Adds an uncompressed file of about this many bytes (a tile's detection image) for benchmarks. */
  largeFileBytes?: number
  /** Adds rows the mount must refuse, and a row whose file is missing from the archive. */
  hostile?: boolean
  /** 'auto' uses Debian's fpack when installed; 'never' always uses the committed fixtures. */
  fpack?: 'auto' | 'never'
}

export interface GeneratedFile {
  /** Archive-relative path: PATH/FILENAME+COMPRESSION. */
  rel: string
  size: number
  kind: string
}

export interface Manifest {
  files: GeneratedFile[]
  /** Rows that name no valid file (refused or missing from the archive), as PATH/FILENAME+COMPRESSION. */
  hostile: { row: string; why: string }[]
  missing: string[]
  tiles: string[]
  bands: string[]
  exposures: { expnum: number; band: string; nite: string; reqnum: number; attempt: number }[]
  ccds: number
  /** Exposure numbers each tile's coadd was made from (all bands). */
  tileExposures: Record<string, number[]>
  largeFile?: string
  usedFpack: boolean
}

const BANDS = ['g', 'r', 'i', 'z', 'Y']
// Run from dist/bin/demo: the committed .fz files stay beside this file's source, which the clone has.
export const FIXTURES_DIR = fileURLToPath(new URL('../../../bin/demo/fz/', import.meta.url))

/** mulberry32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function hashString(s: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** Float32 sky-like image: noise around a background plus a few Gaussian sources. */
function skyImage(nx: number, ny: number, rand: () => number, sources = 12): Buffer {
  const buf = Buffer.alloc(nx * ny * 4)
  const px = new Float32Array(nx * ny)
  for (let i = 0; i < px.length; i++) px[i] = 100 + (rand() + rand() + rand() - 1.5) * 8
  for (let s = 0; s < sources; s++) {
    const cx = rand() * nx
    const cy = rand() * ny
    const amp = 200 + rand() * 2000
    for (let y = Math.max(0, Math.floor(cy - 6)); y < Math.min(ny, cy + 6); y++) {
      for (let x = Math.max(0, Math.floor(cx - 6)); x < Math.min(nx, cx + 6); x++) {
        px[y * nx + x]! += amp * Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4)
      }
    }
  }
  for (let i = 0; i < px.length; i++) buf.writeFloatBE(px[i]!, i * 4)
  return buf
}

function intImage(nx: number, ny: number, rand: () => number, density: number): Buffer {
  const buf = Buffer.alloc(nx * ny * 4)
  for (let i = 0; i < nx * ny; i++) buf.writeInt32BE(rand() < density ? 1 + Math.floor(rand() * 64) : 0, i * 4)
  return buf
}

function weightImage(nx: number, ny: number, rand: () => number): Buffer {
  const buf = Buffer.alloc(nx * ny * 4)
  for (let i = 0; i < nx * ny; i++) buf.writeFloatBE(0.01 + rand() * 0.002, i * 4)
  return buf
}

function commonCards(extra: Record<string, string | number>): Card[] {
  return [{ key: 'ORIGIN', value: 'desfs test archive' }, ...Object.entries(extra).map(([key, value]) => ({ key, value }))]
}

/** Single-epoch or coadd image file: empty primary + SCI, MSK, WGT. */
function sciMskWgt(nx: number, ny: number, rand: () => number, cards: Card[]): Buffer {
  return Buffer.concat([
    emptyPrimary(cards),
    imageHdu({
      bitpix: -32,
      axes: [nx, ny],
      extname: 'SCI',
      data: skyImage(nx, ny, rand),
      cards: [{ key: 'BUNIT', value: 'electrons/s' }],
    }),
    imageHdu({ bitpix: 32, axes: [nx, ny], extname: 'MSK', data: intImage(nx, ny, rand, 0.01) }),
    imageHdu({ bitpix: -32, axes: [nx, ny], extname: 'WGT', data: weightImage(nx, ny, rand) }),
  ])
}

function singleImage(nx: number, ny: number, rand: () => number, cards: Card[], kind: 'sky' | 'seg'): Buffer {
  const data = kind === 'sky' ? skyImage(nx, ny, rand, 0) : intImage(nx, ny, rand, 0.05)
  return Buffer.concat([emptyPrimary(cards), imageHdu({ bitpix: kind === 'sky' ? -32 : 32, axes: [nx, ny], extname: 'SCI', data })])
}

function psfFile(rand: () => number, cards: Card[]): Buffer {
  const columns: Column[] = [{ name: 'PSF_MASK', format: '625E' }]
  const values = Array.from(
    { length: 625 },
    (_, i) => Math.exp(-(((i % 25) - 12) ** 2 + (Math.floor(i / 25) - 12) ** 2) / 8) + rand() * 1e-3,
  )
  return Buffer.concat([
    emptyPrimary(cards),
    tableHdu({
      extname: 'PSF_DATA',
      columns,
      rows: 1,
      data: encodeRows(columns, [[values]]),
      cards: [
        { key: 'PSFAXIS1', value: 25 },
        { key: 'PSFAXIS2', value: 25 },
        { key: 'PSFAXIS3', value: 1 },
      ],
    }),
  ])
}

function catalogFile(rand: () => number, rows: number, cards: Card[]): Buffer {
  const columns: Column[] = [
    { name: 'NUMBER', format: 'J' },
    { name: 'RA', format: 'D', unit: 'deg' },
    { name: 'DEC', format: 'D', unit: 'deg' },
    { name: 'MAG_AUTO', format: 'E', unit: 'mag' },
    { name: 'FLAGS', format: 'I' },
    { name: 'CLASS', format: '8A' },
  ]
  const data = Array.from({ length: rows }, (_, i) => [
    i + 1,
    310 + rand(),
    -52.5 + rand(),
    18 + rand() * 6,
    Math.floor(rand() * 4),
    rand() < 0.8 ? 'galaxy' : 'star',
  ])
  return Buffer.concat([emptyPrimary(cards), tableHdu({ extname: 'OBJECTS', columns, rows, data: encodeRows(columns, data) })])
}

function hasFpack(): boolean {
  try {
    execFileSync('fpack', ['-V'], { stdio: 'ignore' })
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT' && existsSync('/usr/bin/fpack')
  }
}

interface PlannedFile {
  path: string
  filename: string
  compression: string | null
  kind: string
  make: () => Buffer
}

/** Generates the archive and its metadata DB; returns what was made. Deterministic for a seed. */
export function generateArchive(opts: GenerateOptions): Manifest {
  const seed = opts.seed ?? 42
  const nExp = opts.exposures ?? 3
  const nCcd = opts.ccds ?? 4
  const tiles = opts.tiles ?? ['DES2041-5248']
  const [nx, ny] = opts.imageSize ?? [128, 256]
  const [cx, cy] = opts.coaddSize ?? [256, 256]
  const root = join(opts.out, 'archive')
  rmSync(opts.out, { recursive: true, force: true })
  mkdirSync(root, { recursive: true })
  const useFpack = opts.fpack !== 'never' && hasFpack()
  const rand = prng(seed)

  const planned: PlannedFile[] = []
  // With several tiles, exposure e covers tiles e mod n and e+1 mod n (neighbouring tiles share
  // exposures, as on the sky); with one tile every exposure covers it.
  const overlaps = (e: number, tile: string) => {
    const t = tiles.indexOf(tile)
    return tiles.length === 1 || e % tiles.length === t || (e + 1) % tiles.length === t
  }
  const rng = (key: string) => prng(hashString(key, seed))
  const exposures: Manifest['exposures'] = []
  let attempt = 2_730_000 + Math.floor(rand() * 1000)
  const coaddReq = 4575

  // Single-epoch ("finalcut") products, one attempt per exposure.
  const db = {
    image: [] as unknown[][],
    misc: [] as unknown[][],
    coadd: [] as unknown[][],
    catalog: [] as unknown[][],
    proctag: [] as unknown[][],
    i2t: [] as unknown[][],
  }
  for (let e = 0; e < nExp; e++) {
    const expnum = 229_343 + e * 17
    const band = BANDS[e % 3]!
    const nite = `201309${String(15 + e).padStart(2, '0')}`
    const reqnum = 4056 + (e % 2)
    const att = attempt++
    exposures.push({ expnum, band, nite, reqnum, attempt: att })
    db.proctag.push(['Y6A1_FINALCUT', '2019-03-01 12:00:00', 'desfs', att], ['Y6A1_COADD_INPUT', '2019-03-01 12:00:00', 'desfs', att])
    const base = `OPS/finalcut/Y6A1/${nite}-r${reqnum}/D${String(expnum).padStart(8, '0')}/p01`
    for (let c = 1; c <= nCcd; c++) {
      const stem = `D${String(expnum).padStart(8, '0')}_${band}_c${String(c).padStart(2, '0')}_r${reqnum}p01`
      const cards = commonCards({ EXPNUM: expnum, CCDNUM: c, BAND: band, NITE: nite })
      planned.push({
        path: `${base}/red/immask`,
        filename: `${stem}_immasked.fits`,
        compression: '.fz',
        kind: 'red_immask',
        make: () => sciMskWgt(nx, ny, rng(stem + 'immask'), cards),
      })
      planned.push({
        path: `${base}/red/bkg`,
        filename: `${stem}_bkg.fits`,
        compression: '.fz',
        kind: 'red_bkg',
        make: () => singleImage(nx, ny, rng(stem + 'bkg'), cards, 'sky'),
      })
      planned.push({
        path: `${base}/seg`,
        filename: `${stem}_segmap.fits`,
        compression: '.fz',
        kind: 'red_segmap',
        make: () => singleImage(nx, ny, rng(stem + 'seg'), cards, 'seg'),
      })
      planned.push({
        path: `${base}/psf`,
        filename: `${stem}_psfexcat.psf`,
        compression: c % 2 ? null : '',
        kind: 'psfex_model',
        make: () => psfFile(rng(stem + 'psf'), cards),
      })
      db.image.push([`${stem}_immasked.fits`, 'red_immask', att, band, null, expnum, c, nite])
      db.image.push([`${stem}_bkg.fits`, 'red_bkg', att, band, null, expnum, c, nite])
      db.misc.push([`${stem}_segmap.fits`, 'red_segmap', att, band, expnum, c, nite, null])
      db.misc.push([`${stem}_psfexcat.psf`, 'psfex_model', att, band, expnum, c, nite, null])
      for (const t of tiles) if (overlaps(e, t)) db.i2t.push([`${stem}_immasked.fits`, t])
    }
  }

  // Multiepoch ("coadd") products, one attempt per tile.
  const bands = [...new Set(exposures.map((x) => x.band))]
  let largeFile: string | undefined
  for (const tile of tiles) {
    const att = attempt++
    db.proctag.push(['Y6A2_COADD', '2020-01-15 08:00:00', 'desfs', att])
    const base = `OPS/multiepoch/Y6A2/r${coaddReq}/${tile}/p01`
    for (const band of bands) {
      const stem = `${tile}_r${coaddReq}p01_${band}`
      const cards = commonCards({ TILENAME: tile, BAND: band })
      planned.push({
        path: `${base}/coadd`,
        filename: `${stem}.fits`,
        compression: '.fz',
        kind: 'coadd',
        make: () => sciMskWgt(cx, cy, rng(stem), cards),
      })
      planned.push({
        path: `${base}/cat`,
        filename: `${stem}_cat.fits`,
        compression: null,
        kind: 'coadd_cat',
        make: () => catalogFile(rng(stem + 'cat'), 400, cards),
      })
      planned.push({
        path: `${base}/seg`,
        filename: `${stem}_segmap.fits`,
        compression: null,
        kind: 'coadd_segmap',
        make: () => singleImage(cx, cy, rng(stem + 'seg'), cards, 'seg'),
      })
      planned.push({
        path: `${base}/psf`,
        filename: `${stem}_psfcat.psf`,
        compression: null,
        kind: 'coadd_psfex_model',
        make: () => psfFile(rng(stem + 'psf'), cards),
      })
      db.coadd.push([`${stem}.fits`, 'coadd', att, band, tile, 30.0])
      db.catalog.push([`${stem}_cat.fits`, 'coadd_cat', att, band, tile, null, null, null])
      db.misc.push([`${stem}_segmap.fits`, 'coadd_segmap', att, band, null, null, null, tile])
      db.misc.push([`${stem}_psfcat.psf`, 'coadd_psfex_model', att, band, null, null, null, tile])
      // The null-weight single-epoch images the coadd was made from (coadd_nwgint), per input CCD.
      for (const x of exposures.filter((x, e) => x.band === band && overlaps(e, tile))) {
        for (let c = 1; c <= nCcd; c++) {
          const se = `D${String(x.expnum).padStart(8, '0')}_${band}_c${String(c).padStart(2, '0')}`
          const fn = `${tile}_r${coaddReq}p01_${se}_nwgint.fits`
          planned.push({
            path: `${base}/nwgint`,
            filename: fn,
            compression: '.fz',
            kind: 'coadd_nwgint',
            make: () => sciMskWgt(nx, ny, rng(fn), cards),
          })
          db.image.push([fn, 'coadd_nwgint', att, band, tile, x.expnum, c, x.nite])
        }
      }
    }
    if (opts.largeFileBytes && !largeFile) {
      const width = 4096
      const height = Math.max(1, Math.round(opts.largeFileBytes / (width * 4)))
      const fn = `${tile}_r${coaddReq}p01_det.fits`
      largeFile = `${base}/coadd/${fn}`
      planned.push({
        path: `${base}/coadd`,
        filename: fn,
        compression: null,
        kind: 'coadd_det',
        make: () => {
          const r = rng(fn)
          const data = Buffer.allocUnsafe(width * height * 4)
          for (let i = 0; i < width * height; i++) data.writeFloatBE(100 + (r() - 0.5) * 16, i * 4)
          return Buffer.concat([
            emptyPrimary(commonCards({ TILENAME: tile })),
            imageHdu({ bitpix: -32, axes: [width, height], extname: 'SCI', data }),
          ])
        },
      })
      db.coadd.push([fn, 'coadd_det', att, 'det', tile, 30.0])
    }
  }

  // Write files; compress the .fz ones with fpack in one run (or copy fixtures without it).
  const toPack: string[] = []
  for (const f of planned) {
    const dir = join(root, f.path)
    mkdirSync(dir, { recursive: true })
    const target = join(dir, f.filename)
    if (f.compression === '.fz' && !useFpack) {
      copyFileSync(join(FIXTURES_DIR, fixtureFor(f.kind)), target + '.fz')
      continue
    }
    writeFileSync(target, f.make())
    if (f.compression === '.fz') toPack.push(target)
  }
  for (let i = 0; i < toPack.length; i += 200)
    execFileSync('fpack', ['-qt', '4', '-C', '-Y', '-D', ...toPack.slice(i, i + 200)], { stdio: 'ignore' })

  // The metadata DB.
  const hostile: Manifest['hostile'] = []
  const missing: string[] = []
  const fai: [string, string, string | null, number][] = planned.map((f, i) => [f.filename, f.path, f.compression, 100_000 + i])
  if (opts.hostile ?? true) {
    const x = exposures[0]!
    const stem = `D${String(x.expnum).padStart(8, '0')}_${x.band}_c99_r${x.reqnum}p01`
    const immaskPath = `OPS/finalcut/Y6A1/${x.nite}-r${x.reqnum}/D${String(x.expnum).padStart(8, '0')}/p01/red/immask`
    fai.push([`${stem}_immasked.fits`, immaskPath, '.fz', 900_001])
    missing.push(`${immaskPath}/${stem}_immasked.fits.fz`)
    db.image.push([`${stem}_immasked.fits`, 'red_immask', x.attempt, x.band, null, x.expnum, 99, x.nite])
    const bad: [string, string, string | null, string][] = [
      ['passwd', 'OPS/../../../../etc', null, "'..' segment"],
      ['shadow', '/etc', null, 'absolute path'],
      ['escape.fits', 'OPS/finalcut/..', null, "'..' segment"],
      ['double.fits', 'OPS//finalcut', null, 'empty segment'],
      ['nul\u0000name.fits', 'OPS/finalcut', null, 'control character'],
      ['x'.repeat(300) + '.fits', 'OPS/finalcut', null, 'name too long'],
      [planned[0]!.filename, planned[0]!.path, planned[0]!.compression, 'duplicate'],
      ['red', `OPS/finalcut/Y6A1/${x.nite}-r${x.reqnum}/D${String(x.expnum).padStart(8, '0')}/p01`, null, 'file/directory clash'],
    ]
    bad.forEach(([fn, p, c, why], i) => {
      fai.push([fn, p, c, 900_100 + i])
      hostile.push({ row: `${p}/${fn}${c ?? ''}`, why })
    })
  }

  const dbPath = join(opts.out, 'metadata.db')
  const sql = new Database(dbPath)
  sql.pragma('journal_mode = DELETE')
  sql.exec(`
    CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, PATH TEXT, COMPRESSION TEXT, DESFILE_ID INTEGER);
    CREATE INDEX Y6A2_FILE_ARCHIVE_INFO__FILENAME_idx ON Y6A2_FILE_ARCHIVE_INFO (FILENAME);
    CREATE TABLE Y6A2_IMAGE (FILENAME TEXT, FILETYPE TEXT, PFW_ATTEMPT_ID INTEGER, BAND TEXT, TILENAME TEXT, EXPNUM INTEGER, CCDNUM INTEGER, NITE TEXT);
    CREATE INDEX Y6A2_IMAGE__TILENAME_FILETYPE_idx ON Y6A2_IMAGE (TILENAME, FILETYPE, EXPNUM, CCDNUM, PFW_ATTEMPT_ID);
    CREATE TABLE Y6A2_MISCFILE (FILENAME TEXT, FILETYPE TEXT, PFW_ATTEMPT_ID INTEGER, BAND TEXT, EXPNUM REAL, CCDNUM REAL, NITE TEXT, TILENAME TEXT);
    CREATE TABLE Y6A2_COADD (FILENAME TEXT, FILETYPE TEXT, PFW_ATTEMPT_ID INTEGER, BAND TEXT, TILENAME TEXT, MAG_ZERO REAL);
    CREATE TABLE Y6A2_CATALOG (FILENAME TEXT, FILETYPE TEXT, PFW_ATTEMPT_ID INTEGER, BAND TEXT, TILENAME TEXT, EXPNUM INTEGER, CCDNUM INTEGER, NITE TEXT);
    CREATE TABLE Y6A2_PROCTAG (TAG TEXT, CREATED_DATE TEXT, CREATED_BY TEXT, PFW_ATTEMPT_ID INTEGER);
    CREATE TABLE Y6A2_IMAGE_TO_TILE (FILENAME TEXT, TILENAME TEXT);
  `)
  const insertAll = (table: string, rows: unknown[][]) => {
    if (!rows.length) return
    const stmt = sql.prepare(`INSERT INTO ${table} VALUES (${rows[0]!.map(() => '?').join(', ')})`)
    sql.transaction(() => rows.forEach((r) => stmt.run(...r)))()
  }
  insertAll('Y6A2_FILE_ARCHIVE_INFO', fai)
  insertAll('Y6A2_IMAGE', db.image)
  insertAll('Y6A2_MISCFILE', db.misc)
  insertAll('Y6A2_COADD', db.coadd)
  insertAll('Y6A2_CATALOG', db.catalog)
  insertAll('Y6A2_PROCTAG', db.proctag)
  insertAll('Y6A2_IMAGE_TO_TILE', db.i2t)
  sql.close()

  const files: GeneratedFile[] = planned.map((f) => {
    const rel = `${f.path}/${f.filename}${f.compression ?? ''}`
    return { rel, size: statSync(join(root, rel)).size, kind: f.kind }
  })
  const tileExposures = Object.fromEntries(tiles.map((t) => [t, exposures.filter((_, e) => overlaps(e, t)).map((x) => x.expnum)]))
  const manifest: Manifest = {
    files,
    hostile,
    missing,
    tiles,
    bands,
    exposures,
    ccds: nCcd,
    tileExposures,
    usedFpack: useFpack,
    ...(largeFile ? { largeFile } : {}),
  }
  writeFileSync(join(opts.out, 'manifest.json'), JSON.stringify(manifest, null, 1))
  return manifest
}

/** Which committed fixture stands in for an fpack-compressed file when fpack is not installed. */
function fixtureFor(kind: string): string {
  if (kind === 'red_bkg') return 'bkg.fits.fz'
  if (kind === 'red_segmap') return 'segmap.fits.fz'
  if (kind === 'coadd') return 'coadd.fits.fz'
  return 'immasked.fits.fz'
}

/** Writes the fixtures (run once with fpack installed; the results are committed). */
export function writeFixtures(dir = FIXTURES_DIR): void {
  mkdirSync(dir, { recursive: true })
  const cards = commonCards({ EXPNUM: 229343, CCDNUM: 1, BAND: 'g' })
  const files: [string, Buffer][] = [
    ['immasked.fits', sciMskWgt(128, 256, prng(1), cards)],
    ['bkg.fits', singleImage(128, 256, prng(2), cards, 'sky')],
    ['segmap.fits', singleImage(128, 256, prng(3), cards, 'seg')],
    ['coadd.fits', sciMskWgt(256, 256, prng(4), commonCards({ TILENAME: 'DES2041-5248', BAND: 'g' }))],
  ]
  for (const [name, data] of files) {
    rmSync(join(dir, name + '.fz'), { force: true })
    writeFileSync(join(dir, name), data)
    execFileSync('fpack', ['-qt', '4', '-C', '-Y', '-D', join(dir, name)])
  }
}

/** Reads the manifest written next to a generated archive. */
export function readManifest(out: string): Manifest {
  return JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Manifest
}

export function archiveRoot(out: string): string {
  return join(out, 'archive')
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [cmd, out] = process.argv.slice(2)
  if (cmd === 'fixtures') writeFixtures()
  else if (cmd === 'archive' && out) console.log(JSON.stringify(generateArchive({ out }).files.length))
  else console.error('usage: generate.js fixtures | archive OUT')
}
