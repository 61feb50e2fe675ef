// The site tier against a REAL XRootD XCache (test/xcache.ts): an xrootd origin serving the test
// archive directory over xroot, an XCache in front of it speaking HTTP, and desfs daemons ("nodes")
// reading through it with `--site-cache`. Bytes the origin served are counted from its own trace.
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { makeArchive, processAlive, run, skipBecause, sourceBytes } from './helpers.js'
import { coveredBytes, parseOriginReads, startXCache, xcacheMissing } from './xcache.js'

t.jobs = 1

function needXCache(t: Test): boolean {
  const missing = xcacheMissing()
  if (!missing) return true
  if (process.env.CI) t.fail(missing)
  else skipBecause(t, missing)
  return false
}

t.test('origin trace parsing and byte coverage', async (t) => {
  const log = [
    '261203 18:07:57 705 u25.695:24@[::ffff:127.0.0.1] ofs_read: 131072@0 fn=/archive/a/b.fits',
    '261203 18:07:57 705 u25.695:24@[::ffff:127.0.0.1] ofs_open: 0-600 fn=/archive/a/b.fits',
    '261203 18:07:57 705 u25.695:24@[::ffff:127.0.0.1] ofs_read: 100@131072 fn=/archive/a/b.fits',
    '261203 18:07:57 705 u25.695:24@[::ffff:127.0.0.1] ofs_read: 6@0 fn=/probe',
  ].join('\n')
  t.same(parseOriginReads(log), [{ path: 'a/b.fits', offset: 0, length: 131072 }, { path: 'a/b.fits', offset: 131072, length: 100 }], 'archive reads only, the probe left out')
  t.equal(coveredBytes([{ offset: 0, length: 10 }, { offset: 5, length: 10 }, { offset: 30, length: 5 }]), 20, 'overlaps counted once')
  t.equal(coveredBytes([{ offset: 0, length: 10 }, { offset: 2, length: 3 }]), 10, 'a read inside another adds nothing')
})

t.test('the XCache fixture: ranged GET 206 with the right bytes, PROPFIND Depth 1, origin bytes counted once', async (t) => {
  if (!needXCache(t)) return
  const a = makeArchive(t, { hostile: false })
  const x = await startXCache(t, a.root)
  t.equal(x.originBytes(), 0, 'nothing served by the origin before the first read')
  const f = [...a.manifest.files].sort((p, q) => q.size - p.size)[0]!
  const url = `${x.url}/${f.rel}`
  const r = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '-', '-w', '', url], { binary: true })
  t.equal(r.code, 0, r.stderr)
  t.equal(Buffer.from(r.stdout, 'latin1').toString('hex'), sourceBytes(a, f.rel).subarray(100, 200).toString('hex'), 'a range through the XCache gives those bytes')
  const code = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-r', '0-9', url])
  t.equal(code.stdout, '206', 'a ranged GET answers 206')
  const lower = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'range: bytes=0-9', url])
  t.equal(lower.stdout, '200', 'XrdHttp 5.5 matches header names by case: a lower-case `range:` gets the whole file (200), so clients must send `Range`')
  const served = x.originBytes()
  t.ok(served >= 100 && served <= f.size, `the origin served the block holding the range (${served} of ${f.size} bytes)`)
  const again = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '/dev/null', url])
  t.equal(again.code, 0, again.stderr)
  t.equal(x.originBytes(), served, 'the same range again comes from the cache: the origin served nothing more')
  const cov = x.originCoverage().get(f.rel)!
  t.equal(cov.bytes, cov.distinct, 'no byte served twice')

  const dir = f.rel.slice(0, f.rel.lastIndexOf('/'))
  const siblings = a.manifest.files.filter((g) => g.rel.startsWith(dir + '/') && !g.rel.slice(dir.length + 1).includes('/'))
  const p = await run('curl', ['-sS', '-X', 'PROPFIND', '-H', 'Depth: 1', `${x.url}/${dir}/`])
  t.equal(p.code, 0, p.stderr)
  for (const g of siblings) t.match(p.stdout, `<D:href>/archive/${g.rel}</D:href>`, `PROPFIND lists ${g.rel.slice(dir.length + 1)}`)
  t.match(p.stdout, new RegExp(`<lp1:getcontentlength>${f.size}</lp1:getcontentlength>`), 'with its size')

  // The cached data sits at the file's own offsets in the XCache's data dir: flipping a byte there is
  // what a reader through the XCache gets next (the corruption fault).
  const cached = x.cachedFile(f.rel)
  const data = readFileSync(cached)
  t.equal(data.subarray(100, 200).toString('hex'), sourceBytes(a, f.rel).subarray(100, 200).toString('hex'), 'the data file holds the block at its offset')
  data[150] = data[150]! ^ 0xff
  writeFileSync(cached, data)
  const bad = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '-', url], { binary: true })
  t.not(Buffer.from(bad.stdout, 'latin1').toString('hex'), sourceBytes(a, f.rel).subarray(100, 200).toString('hex'), 'a flipped byte in the data dir is served by the XCache')

  await x.stopCache()
  const down = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '-r', '0-9', url])
  t.not(down.stdout, '206', 'stopCache(): the XCache no longer answers')
  await x.stop()
  t.same(x.pids().filter(processAlive), [], 'no xrootd left running')
})
