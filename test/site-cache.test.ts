// The site tier against a REAL XRootD XCache (test/xcache.ts): an xrootd origin serving the test
// archive directory over xroot, an XCache in front of it speaking HTTP, and desfs daemons ("nodes")
// reading through it with `--site-cache`. Bytes the origin served are counted from its own trace.
import t, { type Test } from 'tap'
import { lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ArchiveServer } from '../bin/demo/server.js'
import type { GenerateOptions } from '../bin/demo/generate.js'
import {
  desfs,
  makeArchive,
  md5,
  parseMd5sum,
  processAlive,
  run,
  skipBecause,
  sourceBytes,
  startDaemon,
  startServer,
  until,
  type ArchiveFixture,
} from './helpers.js'
import { coveredBytes, parseOriginReads, startXCache, xcacheMissing, type XCache } from './xcache.js'

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
  t.same(
    parseOriginReads(log),
    [
      { path: 'a/b.fits', offset: 0, length: 131072 },
      { path: 'a/b.fits', offset: 131072, length: 100 },
    ],
    'archive reads only, the probe left out',
  )
  t.equal(
    coveredBytes([
      { offset: 0, length: 10 },
      { offset: 5, length: 10 },
      { offset: 30, length: 5 },
    ]),
    20,
    'overlaps counted once',
  )
  t.equal(
    coveredBytes([
      { offset: 0, length: 10 },
      { offset: 2, length: 3 },
    ]),
    10,
    'a read inside another adds nothing',
  )
})

t.test('the XCache fixture: ranged GET 206 with the right bytes, PROPFIND Depth 1, origin bytes counted once', async (t) => {
  if (!needXCache(t)) return
  const a = makeArchive(t, { hostile: false })
  const x = await startXCache(t, a.root)
  t.equal(x.originBytes(), 0, 'nothing served by the origin before the first read')
  const f = [...a.manifest.files].sort((p, q) => q.size - p.size)[0]!
  const url = `${x.url}/${f.rel}`
  const r = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '-', '-w', '', url], { binary: true })
  t.equal(r.code, 0, `curl: ${r.stderr}`)
  t.equal(
    Buffer.from(r.stdout, 'latin1').toString('hex'),
    sourceBytes(a, f.rel).subarray(100, 200).toString('hex'),
    'a range through the XCache gives those bytes',
  )
  const code = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-r', '0-9', url])
  t.equal(code.stdout, '206', 'a ranged GET answers 206')
  const lower = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'range: bytes=0-9', url])
  t.equal(
    lower.stdout,
    '200',
    'XrdHttp 5.5 matches header names by case: a lower-case `range:` gets the whole file (200), so clients must send `Range`',
  )
  const served = x.originBytes()
  t.ok(served >= 100 && served <= f.size, `the origin served the block holding the range (${served} of ${f.size} bytes)`)
  const again = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '/dev/null', url])
  t.equal(again.code, 0, `the same range again: ${again.stderr}`)
  t.equal(x.originBytes(), served, 'the same range again comes from the cache: the origin served nothing more')
  const cov = x.originCoverage().get(f.rel)!
  t.equal(cov.bytes, cov.distinct, 'no byte served twice')

  const dir = f.rel.slice(0, f.rel.lastIndexOf('/'))
  const siblings = a.manifest.files.filter((g) => g.rel.startsWith(dir + '/') && !g.rel.slice(dir.length + 1).includes('/'))
  const p = await run('curl', ['-sS', '-X', 'PROPFIND', '-H', 'Depth: 1', `${x.url}/${dir}/`])
  t.equal(p.code, 0, `PROPFIND: ${p.stderr}`)
  for (const g of siblings) t.match(p.stdout, `<D:href>/archive/${g.rel}</D:href>`, `PROPFIND lists ${g.rel.slice(dir.length + 1)}`)
  t.match(p.stdout, new RegExp(`<lp1:getcontentlength>${f.size}</lp1:getcontentlength>`), 'with its size')

  // The cached data sits at the file's own offsets in the XCache's data dir: flipping a byte there is
  // what a reader through the XCache gets next (the corruption fault).
  const cached = x.cachedFile(f.rel)
  const data = readFileSync(cached)
  t.equal(
    data.subarray(100, 200).toString('hex'),
    sourceBytes(a, f.rel).subarray(100, 200).toString('hex'),
    'the data file holds the block at its offset',
  )
  data[150] = data[150]! ^ 0xff
  writeFileSync(cached, data)
  const bad = await run('curl', ['-sS', '-f', '-r', '100-199', '-o', '-', url], { binary: true })
  t.not(
    Buffer.from(bad.stdout, 'latin1').toString('hex'),
    sourceBytes(a, f.rel).subarray(100, 200).toString('hex'),
    'a flipped byte in the data dir is served by the XCache',
  )

  await x.stopCache()
  const down = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '-r', '0-9', url])
  t.not(down.stdout, '206', 'stopCache(): the XCache no longer answers')
  await x.stop()
  t.same(x.pids().filter(processAlive), [], 'no xrootd left running')
})

// --- The acceptance tests of issue 14: desfs daemons ("nodes") reading through the XCache ---------

/** Body bytes the dCache-like archive served for GETs of these archive paths. */
function archiveGetBytes(server: ArchiveServer, rels: Iterable<string>): number {
  const want = new Set(rels)
  return server.log.filter((r) => r.method === 'GET' && want.has(r.path) && r.status < 300).reduce((a, r) => a + r.bytes, 0)
}

/** Reads files whole through a mount (md5sum in a child process); the paths whose md5 is wrong or missing. */
async function wrongMd5s(a: ArchiveFixture, mnt: string, rels: string[], timeoutMs = 120_000): Promise<string[]> {
  const r = await run(
    'md5sum',
    rels.map((rel) => join(mnt, rel)),
    { timeoutMs },
  )
  const got = parseMd5sum(r.stdout)
  return rels.filter((rel) => got.get(join(mnt, rel)) !== md5(sourceBytes(a, rel)))
}

/** Bytes a daemon's block store holds on disk (allocated, so sparse files count what they hold). */
function storedBytes(cacheDir: string): number {
  let total = 0
  const walk = (d: string) => {
    let names: string[]
    try {
      names = readdirSync(d)
    } catch {
      return
    }
    for (const n of names) {
      const p = join(d, n)
      const st = lstatSync(p)
      if (st.isDirectory()) walk(p)
      else if (st.isFile()) total += st.blocks * 512
    }
  }
  walk(join(cacheDir, 'data'))
  return total
}

const siteFlags = (x: XCache) => ['--site-cache', x.url]

/** The test archive, the dCache-like server over it, and an XCache whose origin serves the same directory. */
async function archiveWithXCache(t: Test, opts: Omit<GenerateOptions, 'out'>) {
  const a = makeArchive(t, opts)
  const { server, tokenFile } = await startServer(t, a.root)
  const x = await startXCache(t, a.root)
  return { a, server, tokenFile, x }
}

t.test(
  'three nodes read the same 20 files through one XCache: md5s right, the origin serves each byte at most once; without it the archive serves them three times',
  async (t) => {
    if (!needXCache(t)) return
    const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false })
    const files = [...a.manifest.files].sort((p, q) => q.size - p.size || (p.rel < q.rel ? -1 : 1)).slice(0, 20)
    const rels = files.map((f) => f.rel)
    const total = files.reduce((s, f) => s + f.size, 0)
    t.equal(rels.length, 20, '20 files')

    const nodes = []
    for (let i = 0; i < 3; i++) nodes.push(await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) }))
    server.clearLog()
    const wrong = await Promise.all(nodes.map((d) => wrongMd5s(a, d.mnt, rels)))
    t.same(wrong, [[], [], []], 'every md5 right on every node')
    // xrootd writes a trace line after the read it logs: wait (bounded) for the lines to be there.
    await until(() => files.every((f) => x.originCoverage().get(f.rel)?.distinct === f.size), 10_000)
    const cov = x.originCoverage()
    t.same(
      files.filter((f) => cov.get(f.rel)?.distinct !== f.size).map((f) => [f.rel, f.size, cov.get(f.rel)]),
      [],
      'the origin served every byte of every file',
    )
    t.same(
      rels.filter((rel) => cov.get(rel)?.bytes !== cov.get(rel)?.distinct),
      [],
      'and no byte twice',
    )
    t.equal(x.originBytes(), total, `the origin served ${total} bytes in all: each file once for three nodes`)
    t.equal(archiveGetBytes(server, rels), 0, 'the archive served no file bytes (sizes and checksums only)')
    for (const d of nodes) await d.stop()

    // Without the site cache: three fresh nodes, the same files, all from the archive.
    const plain = []
    for (let i = 0; i < 3; i++) plain.push(await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile }))
    server.clearLog()
    const originBefore = x.originBytes()
    t.same(await Promise.all(plain.map((d) => wrongMd5s(a, d.mnt, rels))), [[], [], []], 'every md5 right without the site cache')
    t.equal(archiveGetBytes(server, rels), 3 * total, `the archive served ${3 * total} bytes: each file three times`)
    t.equal(x.originBytes(), originBefore, 'the XCache was not asked')
  },
)

t.test('the XCache stopped mid-read: the read completes from the archive within the deadline', async (t) => {
  if (!needXCache(t)) return
  const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false, largeFileBytes: 40 << 20 })
  const large = a.manifest.largeFile!
  const size = sourceBytes(a, large).length
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: [...siteFlags(x), '--read-timeout', '30s'] })
  // The XCache holds the first 16 MiB; then the origin is frozen, so a read through the XCache gets
  // those bytes and then hangs: it cannot finish through the site.
  const warm = await run('curl', ['-sS', '-f', '-o', '/dev/null', '-H', `Range: bytes=0-${(16 << 20) - 1}`, `${x.url}/${large}`], {
    timeoutMs: 60_000,
  })
  t.equal(warm.code, 0, `the XCache was warmed with the first 16 MiB ${warm.stderr}`)
  t.ok(x.originCoverage().get(large)!.distinct < size, 'the XCache holds part of the file only')
  x.pauseOrigin()
  server.clearLog()
  const reader = wrongMd5s(a, d.mnt, [large], 180_000)
  const midRead = await until(() => storedBytes(d.cacheDir) >= 4 << 20, 60_000)
  t.ok(midRead, 'the node got bytes of the file from the site')
  t.equal(archiveGetBytes(server, [large]), 0, 'none from the archive yet: it is mid-read through the XCache')
  await x.stopCache()
  x.resumeOrigin()
  t.same(await reader, [], 'the read completed with the right bytes (no EIO: within the read deadline)')
  t.ok(archiveGetBytes(server, [large]) > 0, 'the rest came from the archive')
  t.ok(archiveGetBytes(server, [large]) < size, 'not the whole file: what the site gave was kept')
  t.match(d.log(), /fetch failed[^\n]*site|site[^\n]*(down|fail)/, 'a log line says the site failed')
})

t.test('the XCache serving a corrupted block: detected by the checksum, refetched from the archive, never served', async (t) => {
  if (!needXCache(t)) return
  const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false })
  // A file smaller than desfs's run, so it is fetched whole and checked against the archive's
  // Adler-32 before any of it is served (cache/fetch-run.ts deliverWhole).
  const f = [...a.manifest.files].sort((p, q) => q.size - p.size)[0]!
  const url = `${x.url}/${f.rel}`
  const first = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
  t.same(await wrongMd5s(a, first.mnt, [f.rel]), [], 'a first node reads it through the XCache, which now holds it')
  await first.stop()
  const cached = x.cachedFile(f.rel)
  const data = readFileSync(cached)
  const at = Math.floor(f.size / 2)
  data[at] = data[at]! ^ 0x5a
  writeFileSync(cached, data)
  const bad = await run('curl', ['-sS', '-f', '-o', '-', url], { binary: true })
  t.not(md5(Buffer.from(bad.stdout, 'latin1')), md5(sourceBytes(a, f.rel)), 'the XCache now serves a corrupted copy')

  server.clearLog()
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
  t.same(await wrongMd5s(a, d.mnt, [f.rel]), [], 'a second node reads the right bytes')
  t.match(d.log(), /checksum mismatch|does not match the archive/, 'the corruption was detected')
  t.equal(archiveGetBytes(server, [f.rel]), f.size, 'the file was refetched from the archive')
  t.same(await wrongMd5s(a, d.mnt, [f.rel]), [], 'and what the node keeps is right')
})

t.test('desfs sync and desfs headers go through the site cache', async (t) => {
  if (!needXCache(t)) return
  const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false })
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
  const env = { ...process.env, DESFS_STATE_DIR: d.stateDir, DESFS_CACHE_DIR: d.cacheDir, DESFS_CONFIG: '/nonexistent' }
  const fits = a.manifest.files.filter((f) => f.rel.endsWith('.fits') || f.rel.endsWith('.fits.fz'))
  const toSync = fits.slice(0, 5)
  const toSurvey = fits.slice(5, 10)
  server.clearLog()

  const s = await desfs(['sync', ...toSync.map((f) => f.rel)], { env, timeoutMs: 120_000 })
  t.equal(s.code, 0, `desfs sync: ${s.stderr}`)
  await until(() => toSync.every((f) => x.originCoverage().get(f.rel)?.distinct === f.size), 10_000)
  const cov = x.originCoverage()
  t.same(
    toSync.filter((f) => cov.get(f.rel)?.distinct !== f.size).map((f) => f.rel),
    [],
    'sync: the origin served every synced file whole',
  )
  t.equal(
    archiveGetBytes(
      server,
      toSync.map((f) => f.rel),
    ),
    0,
    'sync: no file bytes from the archive',
  )

  const h = await desfs(['headers', '--state-dir', d.stateDir, '--keys', 'NAXIS', ...toSurvey.map((f) => f.rel)], {
    env,
    timeoutMs: 120_000,
  })
  t.equal(h.code, 0, `desfs headers: ${h.stderr}`)
  await until(() => toSurvey.every((f) => x.originCoverage().has(f.rel)), 10_000)
  const cov2 = x.originCoverage()
  t.same(
    toSurvey.filter((f) => !(cov2.get(f.rel)?.distinct ?? 0)).map((f) => f.rel),
    [],
    'headers: the origin served part of every surveyed file',
  )
  t.equal(
    archiveGetBytes(
      server,
      toSurvey.map((f) => f.rel),
    ),
    0,
    'headers: no file bytes from the archive',
  )
})

t.test('a read near the end of a large file through the XCache: the origin serves the blocks around it, not the file', async (t) => {
  if (!needXCache(t)) return
  // XrdHttp 5.5 honours a header spelt `Range` only; a lower-case `range:` gets 200 and the whole
  // file from byte 0, which the XCache would fetch from the origin to stream it.
  const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false, largeFileBytes: 48 << 20 })
  const large = a.manifest.largeFile!
  const size = sourceBytes(a, large).length
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
  server.clearLog()
  const r = await run('tail', ['-c', '1000', join(d.mnt, large)], { binary: true })
  t.equal(r.code, 0, `tail: ${r.stderr}`)
  t.equal(md5(Buffer.from(r.stdout, 'latin1')), md5(sourceBytes(a, large).subarray(size - 1000)), 'the last 1000 bytes are right')
  t.equal(archiveGetBytes(server, [large]), 0, 'they came through the site')
  await until(() => (x.originCoverage().get(large)?.distinct ?? 0) > 0, 10_000)
  const served = x.originCoverage().get(large)?.distinct ?? 0
  t.ok(
    served > 0 && served <= 16 << 20,
    `the origin served ${served} bytes of the ${size}: the blocks near the end, not the file from its start`,
  )
})

/** The test archive with a large file whose block at 5 MiB is corrupted in the XCache's copy. */
async function corruptLargeAtSite(t: Test) {
  const { a, server, tokenFile, x } = await archiveWithXCache(t, { hostile: false, largeFileBytes: 24 << 20 })
  const large = a.manifest.largeFile!
  const warm = await run('curl', ['-sS', '-f', '-o', '/dev/null', `${x.url}/${large}`], { timeoutMs: 60_000 })
  t.equal(warm.code, 0, `the XCache holds the whole file ${warm.stderr}`)
  const cached = x.cachedFile(large)
  const data = readFileSync(cached)
  data[5 << 20] = data[5 << 20]! ^ 0x5a
  writeFileSync(cached, data)
  return { a, server, tokenFile, x, large }
}

t.test(
  'desfs sync of a large file with a corrupted block at the site: the whole-file check fails, the file is fetched again from the archive',
  async (t) => {
    if (!needXCache(t)) return
    const { a, server, tokenFile, x, large } = await corruptLargeAtSite(t)
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
    const env = { ...process.env, DESFS_STATE_DIR: d.stateDir, DESFS_CACHE_DIR: d.cacheDir, DESFS_CONFIG: '/nonexistent' }
    const s = await desfs(['sync', large], { env, timeoutMs: 120_000 })
    t.equal(s.code, 0, `desfs sync ends well: ${s.stdout.slice(-300)}${s.stderr.slice(-300)}`)
    t.match(d.log(), /checksum mismatch|does not match the archive/, "the damaged copy was detected by the archive's Adler-32")
    t.match(d.log(), /without the site cache/, 'and the file was read again from the archive')
    t.same(await wrongMd5s(a, d.mnt, [large]), [], 'the synced file reads right through the mount')
  },
)

// Not covered yet (a todo, so it shows in every run): a file larger than one run is served block by
// block as it arrives, and checked whole only once all of it is in the cache (sync, get, or a read
// that completes it). A corrupted block from the XCache then reaches a reader of the mount.
t.test(
  'a corrupted block of a large file in the XCache is not served to a reader',
  {
    todo: 'blocks of files larger than one run are not checked before they are served (only whole files are); neither the archive nor the site gives a per-block checksum',
  },
  async (t) => {
    if (!needXCache(t)) return
    const { a, server, tokenFile, x, large } = await corruptLargeAtSite(t)
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: siteFlags(x) })
    t.same(await wrongMd5s(a, d.mnt, [large]), [], 'a read through the mount gets the right bytes')
  },
)
