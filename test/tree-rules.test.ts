// Hostile metadata rows, every kind: refused, counted by reason with examples, and leaving no trace
// in the index (no file, no directory created on their behalf). In-process: no mount needed.
import t from 'tap'
import { join } from 'node:path'
import { tmp } from './helpers.js'
import { generateSynthetic, hostileRows } from './archive/synthetic.js'
import { buildTreeIndex, ROOT_ID } from '../fs/tree-build.js'
import { TreeIndex } from '../fs/tree-index.js'

t.test('every kind of hostile row is refused, counted and reported with examples', async (t) => {
  const dir = tmp(t)
  const db = join(dir, 'metadata.db')
  const gen = generateSynthetic({ db, rows: 2000, hostile: true, bigDir: 100 })
  const out = join(dir, 'tree.sqlite')
  const r = buildTreeIndex({
    dbPath: db,
    sql: 'SELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO',
    outPath: out,
    identity: 'test',
  })
  t.equal(r.files, 2000, 'every valid row is a file')
  t.equal(r.dirs - 1, gen.dirs, 'exactly the directories of valid rows (and the root)')
  t.equal(r.rows, 2000 + hostileRows().length)

  const want = new Map<string, number>()
  for (const h of hostileRows()) want.set(h.why, (want.get(h.why) ?? 0) + 1)
  t.same(Object.fromEntries(Object.entries(r.skipped).map(([k, v]) => [k, v.count])), Object.fromEntries(want), 'counted by reason')
  for (const reason of [
    'absolute path',
    "'.' or '..' segment",
    'empty segment',
    'control character',
    'name too long',
    'path too long',
    'bad compression',
    'empty filename',
    'duplicate',
    'file/directory clash',
  ]) {
    t.ok(want.has(reason), `the fixture has a ${reason} row`)
  }
  for (const [reason, v] of Object.entries(r.skipped)) {
    t.ok(v.examples.length > 0 && v.examples.length <= 3, `${reason}: examples kept`)
    for (const ex of v.examples) {
      t.notMatch(ex, /[\x00-\x1f]/, `${reason}: example printable`)
      t.ok(ex.length <= 120, `${reason}: example shortened`)
    }
  }
  t.match(r.skippedSummary, /^skipped 18 rows: /)
  t.match(r.skippedSummary, /control character \(e\.g\. "[^"]*\\x00[^"]*"\)/, 'a NUL is shown escaped, once')

  // Walk the whole index: no name from a hostile row, and no directory that holds nothing.
  const index = new TreeIndex(out)
  t.teardown(() => index.close())
  let files = 0
  const bad: string[] = []
  const walk = (id: number, rel: string) => {
    const entries = index.list(id)
    if (entries.length === 0) bad.push(`empty directory ${rel}`)
    for (const e of entries) {
      const p = rel ? `${rel}/${e.name}` : e.name
      if (/[\x00-\x1f]|^\/|\/\/|(^|\/)\.\.?(\/|$)/.test(p) || Buffer.byteLength(e.name) > 255) bad.push(p)
      if (e.dir === null) files++
      else walk(e.dir, p)
    }
  }
  walk(ROOT_ID, '')
  t.equal(files, 2000)
  t.same(bad, [], 'nothing hostile in the index')
  const clash = 'OPS/finalcut/Y6A1/20121101-r4056/D00229343/p01/red'
  t.not(index.lookup(clash)?.dir, null, `${clash} stays a directory (the file of the same name was refused)`)
  t.equal(
    index.lookup('OPS/finalcut/Y6A1/20121101-r4056/D00229343/p01/psf/D00229343_g_c01_r4056p01_psfexcat.psf')?.dir,
    null,
    'a file stays a file (a row below it was refused)',
  )
  t.equal(index.lookup('etc'), undefined)
  t.equal(index.lookup('OPS/finalcut/Y6A1/20121101-r4056/D00229343/p01/dot.fits'), undefined)
})
