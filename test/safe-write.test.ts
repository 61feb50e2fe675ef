// Writers never write through what another user planted: temporary files get names nobody can guess
// and are created new (a link at any name is refused), results are renamed into place (a link at
// the final name is replaced, not followed), and a file with a fixed name (a resumable download's
// partial) is used only when it is a regular file of our own. Every victim is a file inside this
// test's temporary directory.
import t from 'tap'
import { linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { createNew, openOwnFile, tempNameFor, writeFileAtomic, writeFileAtomicSync } from '../daemon/safe-write.js'
import { writeManifest } from '../bin/cmd-sync.js'
import { FileServer } from './archive/file-server.js'
import { DESFS, desfs, makeArchive, run, tmp } from './helpers.js'

const VICTIM = 'precious\n'

function victim(dir: string): string {
  const file = join(dir, 'victim.txt')
  writeFileSync(file, VICTIM)
  return file
}

t.test('the helpers', async (t) => {
  const dir = tmp(t)
  const v = victim(dir)
  const final = join(dir, 'out.json')

  const names = new Set(Array.from({ length: 100 }, () => tempNameFor(final)))
  t.equal(names.size, 100, 'temporary names differ every time')
  t.ok(
    [...names].every((n) => dirname(n) === dir && basename(n).startsWith('.out.json.')),
    'hidden, beside the final name',
  )

  // The names an attacker could guess before: all links to the victim.
  for (const n of ['out.json.partial', 'out.json.tmp', '.out.json.spool']) symlinkSync(v, join(dir, n))
  await writeFileAtomic(final, 'data\n')
  t.equal(readFileSync(final, 'utf8'), 'data\n')
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')

  symlinkSync(v, join(dir, 'linked.json'))
  await writeFileAtomic(join(dir, 'linked.json'), 'new\n')
  t.ok(lstatSync(join(dir, 'linked.json')).isFile(), 'a link at the final name is replaced by the file')
  writeFileAtomicSync(join(dir, 'linked2.json'), 'sync\n')
  t.equal(readFileSync(join(dir, 'linked2.json'), 'utf8'), 'sync\n')
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')
  t.notOk(
    readdirSync(dir).some((n) => n.endsWith('.tmp') && n.startsWith('.')),
    'no temporary file is left',
  )

  symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'))
  await t.rejects(createNew(join(dir, 'dangling')), { code: 'EEXIST' }, 'a new file is never made through a dangling link')
  t.notOk(readdirSync(dir).includes('nowhere'))

  symlinkSync(v, join(dir, 'partial'))
  await t.rejects(
    openOwnFile(join(dir, 'partial'), 'partial download'),
    /partial download .* is a symbolic link: desfs does not write through links; remove it/,
  )
  linkSync(v, join(dir, 'hardlinked'))
  await t.rejects(openOwnFile(join(dir, 'hardlinked'), 'partial download'), /has 2 names \(hard links\)/)
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')
})

t.test('desfs sql ... ; > FILE does not write through links planted beside FILE', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  const dir = tmp(t)
  const v = victim(dir)
  symlinkSync(v, join(dir, 'out.csv.partial'))
  symlinkSync(v, join(dir, 'out.fits.partial'))
  symlinkSync(v, join(dir, '.out.fits.spool'))
  const env = { ...process.env, DESFS_CONFIG: join(dir, 'no-config'), HOME: dir }
  const sql = (q: string) =>
    run(process.execPath, [DESFS, 'sql', '--state-dir', join(dir, 'state'), '--db', a.db, '-c', q], { env, cwd: dir })
  const csv = await sql('SELECT 42 AS X; > out.csv')
  t.equal(csv.code, 0, csv.stderr)
  t.equal(readFileSync(join(dir, 'out.csv'), 'utf8'), 'X\n42\n', 'the result is in out.csv')
  t.ok(lstatSync(join(dir, 'out.csv')).isFile(), 'out.csv is a regular file')
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched by the CSV result')
  const fits = await sql('SELECT 42 AS X; > out.fits')
  t.equal(fits.code, 0, fits.stderr)
  t.equal(readFileSync(join(dir, 'out.fits')).subarray(0, 9).toString(), 'SIMPLE  =', 'the FITS result is in out.fits')
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')
})

t.test('a manifest replaces a link at its name instead of writing through it', async (t) => {
  const dir = tmp(t)
  const v = victim(dir)
  symlinkSync(v, join(dir, 'manifest.tsv'))
  writeManifest(join(dir, 'manifest.tsv'), [{ path: 'OPS/a.fits', size: 1, status: 'ok' }])
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')
  t.match(readFileSync(join(dir, 'manifest.tsv'), 'utf8'), /^path\tsize\tstatus\tmessage\turl\nOPS\/a\.fits\t1\tok\t\t\n$/)
})

t.test('desfs db download refuses a link planted at its partial download', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  const dir = tmp(t)
  const v = victim(dir)
  const server = await new FileServer().start()
  t.teardown(() => server.stop())
  server.files.set('/m.db', a.db)
  const dest = join(dir, 'db', 'metadata.db')
  mkdirSync(dirname(dest), { mode: 0o700 })
  symlinkSync(v, `${dest}.download`)
  const env = { ...process.env, HOME: dir, DESFS_CONFIG: join(dir, 'no-config'), DES_ARCHIVE_ACCESS_DB: '' }
  const r = await desfs(['db', 'download', '--url', `${server.url}/m.db`, '--db', dest], { env, timeoutMs: 60_000 })
  t.not(r.code, 0, 'the download stops')
  t.match(
    r.stderr,
    /^desfs: partial download .*metadata\.db\.download is a symbolic link: desfs does not write through links; remove it\n$/,
    'with one line that says why',
  )
  t.equal(readFileSync(v, 'utf8'), VICTIM, 'the victim is untouched')
  t.ok(lstatSync(`${dest}.download`).isSymbolicLink(), 'and nothing was renamed into place')
})
