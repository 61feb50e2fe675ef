// The walking skeleton, end to end: a generated DES archive behind a dCache-like server, mounted by a
// real daemon, read by real tools in child processes.
import t from 'tap'
import { readdirSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, needTool, needPythonModule, PYTHON, sourceBytes, md5, parseMd5sum } from './helpers.js'

t.jobs = 1

t.test('a mounted archive reads like the real thing', async (t) => {
  // Images large enough that some files span several 1 MiB cache blocks.
  const a = makeArchive(t, { imageSize: [512, 1024], coaddSize: [768, 768] })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const files = a.manifest.files

  await t.test('ls -lR lists every file with its true size and fetches no file content', async (t) => {
    server.clearLog()
    const r = await run('ls', ['-lR', '--time-style=+', d.mnt])
    t.equal(r.code, 0, `ls -lR exits 0 (${r.stderr})`)
    // Parse "ls -lR": directory headers end with ':', entries are "mode links user group size name".
    const sizes = new Map<string, number>()
    let dir = ''
    for (const line of r.stdout.split('\n')) {
      if (line.endsWith(':')) dir = line.slice(0, -1).slice(d.mnt.length).replace(/^\//, '')
      const m = /^-r--r--r--\s+\d+\s+\S+\s+\S+\s+(\d+)\s+(.+)$/.exec(line)
      if (m) sizes.set(dir ? `${dir}/${m[2]}` : m[2]!, Number(m[1]))
    }
    t.equal(sizes.size, files.length, 'every generated file is listed, nothing more')
    let wrong = 0
    for (const f of files) if (sizes.get(f.rel) !== f.size) wrong++
    t.equal(wrong, 0, 'every size equals the source file size')
    t.equal(server.count('GET'), 0, 'no GET was made by the listing')
    t.ok(server.count('PROPFIND') > 0, 'sizes came from PROPFIND')
    for (const h of a.manifest.hostile) {
      if (h.why === 'duplicate')
        t.equal(r.stdout.split('\n').filter((l) => l.endsWith(' ' + h.row.split('/').pop())).length, 1, 'a duplicated row is listed once')
      else t.notOk(sizes.has(h.row), `hostile row absent: ${h.why}`)
    }
    for (const m of a.manifest.missing) t.notOk(sizes.has(m), 'a DB row whose file the archive lacks is not listed')
  })

  await t.test('every file read through the mount has the source bytes', async (t) => {
    const list = files.map((f) => f.rel)
    const r = await run('md5sum', list, { cwd: d.mnt, timeoutMs: 120_000 })
    t.equal(r.code, 0, `md5sum exits 0 ${r.stderr}`)
    const got = parseMd5sum(r.stdout)
    let bad = 0
    for (const f of list) if (got.get(f) !== md5(sourceBytes(a, f))) bad++
    t.equal(bad, 0, `all ${list.length} files match`)
  })

  await t.test('a second read of the same bytes makes no request', async (t) => {
    server.clearLog()
    const r = await run(
      'md5sum',
      files.map((f) => f.rel),
      { cwd: d.mnt, timeoutMs: 120_000 },
    )
    t.equal(r.code, 0)
    t.equal(server.log.length, 0, 'no request at all')
  })

  await t.test('fitsverify passes on mounted .fz and .fits files', async (t) => {
    if (!needTool(t, 'fitsverify', 'fitsverify')) return
    const fz = files.filter((f) => f.rel.endsWith('.fits.fz')).slice(0, 6)
    const plain = files.filter((f) => f.rel.endsWith('.fits') || f.rel.endsWith('.psf')).slice(0, 6)
    for (const f of [...fz, ...plain]) {
      const r = await run('fitsverify', ['-q', '-e', join(d.mnt, f.rel)])
      t.match(r.stdout, /verification OK/, `fitsverify ${f.rel}`)
    }
  })

  await t.test('funpack -S through the mount equals funpack of the source', async (t) => {
    if (!needTool(t, 'funpack', 'libcfitsio-bin')) return
    for (const f of files.filter((x) => x.rel.endsWith('.fz')).slice(0, 4)) {
      // -C: funpack otherwise stamps the time into its checksum keywords.
      const m = await run('funpack', ['-C', '-S', join(d.mnt, f.rel)], { timeoutMs: 60_000, binary: true })
      const s = await run('funpack', ['-C', '-S', join(a.root, f.rel)], { timeoutMs: 60_000, binary: true })
      t.equal(m.code, 0, `funpack ${f.rel}`)
      t.ok(m.stdout.length > 2880, 'funpack produced an image')
      t.equal(md5(Buffer.from(m.stdout, 'latin1')), md5(Buffer.from(s.stdout, 'latin1')), 'same output as from the source file')
    }
  })

  await t.test('fitsio and astropy (memory-mapped) read the same data as from the source', async (t) => {
    if (!needPythonModule(t, 'fitsio', 'python3-fitsio') || !needPythonModule(t, 'astropy', 'python3-astropy')) return
    const immask = files.find((f) => f.kind === 'red_immask')!.rel
    const cat = files.find((f) => f.kind === 'coadd_cat')!.rel
    const det = files.find((f) => f.kind === 'coadd_segmap')!.rel
    const script = `
import sys, fitsio, numpy as np
from astropy.io import fits
mnt, src, immask, cat, seg = sys.argv[1:6]
a = fitsio.read(mnt + '/' + immask, ext='SCI'); b = fitsio.read(src + '/' + immask, ext='SCI')
assert a.shape == b.shape and np.array_equal(a, b), 'fitsio SCI differs'
with fits.open(mnt + '/' + seg, memmap=True) as h, fits.open(src + '/' + seg) as g:
    assert h[1].data.shape == g[1].data.shape and np.array_equal(h[1].data, g[1].data), 'astropy image differs'
with fits.open(mnt + '/' + cat, memmap=True) as h, fits.open(src + '/' + cat) as g:
    assert len(h[1].data) == len(g[1].data) and np.array_equal(h[1].data['RA'], g[1].data['RA']), 'astropy table differs'
    assert list(h[1].data['CLASS'][:5]) == list(g[1].data['CLASS'][:5])
with fits.open(mnt + '/' + immask) as h:
    assert h['SCI'].data.shape == b.shape
print('ok', a.shape)
`
    const r = await run(PYTHON, ['-c', script, d.mnt, a.root, immask, cat, det], { timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /^ok/)
  })

  await t.test('writes are refused with EROFS', async (t) => {
    const f = join(d.mnt, files[0]!.rel)
    const dir = join(d.mnt, 'OPS')
    for (const [cmd, args] of [
      ['sh', ['-c', `echo x > '${join(dir, 'new.fits')}'`]],
      ['sh', ['-c', `echo x >> '${f}'`]],
      ['touch', [f]],
      ['rm', ['-f', f]],
      ['mkdir', [join(dir, 'newdir')]],
      ['mv', [f, f + '.moved']],
      ['truncate', ['-s', '0', f]],
    ] as [string, string[]][]) {
      const r = await run(cmd, args)
      t.not(r.code, 0, `${cmd} fails`)
      t.match(r.stderr, /Read-only file system/, `${cmd}: EROFS`)
    }
    const check = await run('md5sum', [f])
    t.equal(check.stdout.slice(0, 32), md5(sourceBytes(a, files[0]!.rel)), 'the file is unchanged')
  })

  await t.test('hostile rows never reach the disk or the mount', async (t) => {
    const walk = (dir: string): string[] =>
      readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]))
    const cached = walk(d.cacheDir)
    t.ok(cached.length > 0, 'the cache holds data')
    t.ok(
      cached.every((p) => /\/(cache\.sqlite(-wal|-shm)?|data\/[0-9a-f]{2}\/[0-9a-f]{32})$/.test(p)),
      'cache files are only hashed names under the cache dir',
    )
    const top = await run('ls', ['-A', d.mnt])
    t.equal(top.stdout.trim(), 'OPS', 'the mount root holds only OPS')
    for (const p of ['etc/passwd', 'etc/shadow', 'OPS/finalcut/double.fits', 'OPS/finalcut/escape.fits']) {
      const r = await run('stat', [join(d.mnt, p)])
      t.not(r.code, 0, `${p} does not resolve inside the mount`)
    }
    t.notOk(existsSync(join(d.mnt, '..', 'etc')), 'nothing appeared beside the mountpoint')
    t.match(d.log(), /metadata rows refused: skipped 8 rows/, 'the refusals are reported once in the log')
  })
})
