// The site cache source (cache/sources/site.ts) and failover around it. In this process with scripted
// sources and a fake clock: a site that is down, answers 5xx or a wrong length hands the read to the
// archive at once (tried once, no backoff), is marked down after repeated failures and asked again
// once its down time has passed; a damaged copy at the site is caught by the archive's checksum and
// fetched again from the archive, never served; facts never come from the site. Over loopback HTTP
// (servers that record headers): the archive's token never reaches the site, the site's own token
// only the site, and real 5xx, cut bodies, wrong ranges and a stopped site fall back to the archive.
// Operations: bytes per source and the site hit ratio in the fetcher, the metrics and `desfs status`;
// `desfs doctor`'s check of the site cache.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { readThrough as read, fetcherOver, fakeReadPath, type ReadPathOptions, testStore } from './fakes/fetcher-over.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError, type Source } from '../cache/sources/source.js'
import { buildSources, readSource, type ReadPathSettings } from '../cache/setup.js'
import { adler32, adler32Hex } from '../cache/adler32.js'
import { daemonConfig, parseSources, resolveSettings } from '../daemon/config.js'
import { FakeClock, ScriptedSite, ScriptedSource, expected } from './fakes/scripted-source.js'
import { RangeServer } from './fakes/range-server.js'
import { siteHitRatio } from '../cache/metrics.js'
import { metrics } from '../daemon/metrics.js'
import { humanStatus } from '../bin/cmd-status.js'
import { checkSiteCache } from '../bin/doctor-site.js'
import Database from 'better-sqlite3'
import { tmp } from './helpers.js'

const BS = 65536

function setup(t: Test, sources: Source[], opts: ReadPathOptions = {}) {
  return fakeReadPath(t, tmp(t), sources, BS, { attemptsPerSource: 4, ...opts })
}

const refused = () => ({ fail: new SourceError('unreachable', 'connect ECONNREFUSED 127.0.0.1:9') })

t.test('site down: the archive serves each read at once; the site is marked down after three, and asked again 10 s later', async (t) => {
  const site = new ScriptedSite('site', Array.from({ length: 3 }, refused))
  const archive = new ScriptedSource('archive')
  const { store, clock, set, fetcher } = setup(t, [site, archive])
  const one = store.file('OPS/s1.fits', 2 * BS, null)
  t.ok((await read(fetcher, one, 0, 1000)).equals(expected(0, 1000)), 'the bytes came from the archive')
  t.equal(site.calls.length, 1, 'the site was tried once (no retries: the archive is the retry)')
  t.equal(archive.calls.length, 1)
  t.same(clock.sleeps, [], 'and nothing waited for a backoff')
  for (const f of ['OPS/s2.fits', 'OPS/s3.fits']) await read(fetcher, store.file(f, 2 * BS, null), 0, 10)
  t.equal(site.calls.length, 3)
  t.ok(set.isDown(site), 'three failures in a row mark the site down')
  await read(fetcher, store.file('OPS/s4.fits', 2 * BS, null), 0, 10)
  t.equal(site.calls.length, 3, 'while down it is not asked')
  t.equal(archive.calls.length, 4)
  clock.advance(10_001)
  const back = store.file('OPS/s5.fits', 2 * BS, null)
  t.ok((await read(fetcher, back, 0, 1000)).equals(expected(0, 1000)))
  t.equal(site.calls.length, 4, 'after its 10 s the site is asked again')
  t.equal(archive.calls.length, 4, 'and, being back, served the read itself')
  t.notOk(set.isDown(site), 'it is up again')
})

t.test('site answers 5xx: the archive serves at once, and repeated 5xx mark the site down', async (t) => {
  const site = new ScriptedSite(
    'site',
    Array.from({ length: 3 }, () => ({ fail: new SourceError('server', 'HTTP 503 from the site cache', 503) })),
  )
  const archive = new ScriptedSource('archive')
  const { store, clock, set, fetcher } = setup(t, [site, archive])
  t.ok((await read(fetcher, store.file('OPS/x1.fits', 2 * BS, null), 5, 1000)).equals(expected(5, 1005)), 'the bytes came from the archive')
  t.equal(site.calls.length, 1, 'one request to the site')
  t.same(clock.sleeps, [], 'no backoff before the archive')
  for (const f of ['OPS/x2.fits', 'OPS/x3.fits']) await read(fetcher, store.file(f, 2 * BS, null), 0, 10)
  t.ok(set.isDown(site), 'a site failing with 5xx three times is marked down like an unreachable one')
  t.notOk(set.isDown(archive))
})

t.test('wrong length: a site body that ends early is finished by the archive from the first missing byte', async (t) => {
  const site = new ScriptedSite('site', [{ deliver: 1000, fail: new SourceError('protocol', 'body ended 130072 bytes short') }])
  const archive = new ScriptedSource('archive')
  const { store, fetcher } = setup(t, [site, archive])
  const file = store.file('OPS/w.fits', 2 * BS, null)
  t.ok((await read(fetcher, file, 0, 2 * BS)).equals(expected(0, 2 * BS)), 'every byte right')
  // The read's two missing blocks are one request: the site brought its first 1000 bytes.
  t.same(
    site.calls.map((c) => [c.start, c.end]),
    [[0, 2 * BS]],
    'one request to the site for both blocks',
  )
  t.same(
    archive.calls.map((c) => [c.start, c.end]),
    [[1000, 2 * BS]],
    'the archive was asked only for what the site did not bring',
  )
})

t.test('a damaged copy at the site: caught by the checksum, fetched again from the archive, never served', async (t) => {
  const size = 3 * BS + 100
  const sum = adler32Hex(adler32(expected(0, size)))
  const site = new ScriptedSite('site', [{ corrupt: true }])
  const archive = new ScriptedSource('archive')
  const { store, fetcher } = setup(t, [site, archive], { smallFileBytes: 4 << 20 })
  const file = store.file('OPS/small.fits', size, sum)
  t.ok((await read(fetcher, file, 0, size)).equals(expected(0, size)), "the reader got the archive's bytes")
  t.equal(site.calls.length, 1)
  t.same(
    archive.calls.map((c) => [c.start, c.end]),
    [[0, size]],
    'the whole file was fetched again from the archive',
  )
  await fetcher.settled()
  t.ok(file.checkWhole(), 'and the cache holds the right bytes')

  // Damaged everywhere: the reader gets an error, never the bytes.
  const bad = new ScriptedSite('site', [{ corrupt: true }])
  const alsoBad = new ScriptedSource('archive', [{ corrupt: true }])
  const two = setup(t, [bad, alsoBad], { smallFileBytes: 4 << 20 })
  const f2 = two.store.file('OPS/small2.fits', size, sum)
  const err = await read(two.fetcher, f2, 0, size).catch((e: Error) => e)
  t.match(String(err), /checksum mismatch/, `no bytes served (${String(err)})`)
  await two.fetcher.settled()
  t.equal(f2.has(0), false, 'and none stored')
})

t.test('readSource(set) is a Source: one read resumes on the next source where the last stopped, with no fetcher around it', async (t) => {
  const site = new ScriptedSite('site', [{ deliver: 5000, fail: new SourceError('network', 'connection reset') }])
  const archive = new ScriptedSource('archive', [{ fail: new SourceError('server', 'HTTP 503 from the archive', 503) }])
  const clock = new FakeClock()
  const src = readSource(new SourceSet([site, archive], { clock }), {
    attemptsPerSource: 3,
    backoffMs: 10,
    maxBackoffMs: 100,
    minRate: 1,
    rateWindowMs: 60_000,
    clock,
    random: () => 0.5,
  })
  const parts: Buffer[] = []
  let servedBy = ''
  await src.read('OPS/f.fits', 100, 20_100, {
    onData: (c) => parts.push(c),
    onServed: (s) => {
      servedBy = s.name
    },
  })
  t.ok(Buffer.concat(parts).equals(expected(100, 20_100)), 'the bytes are right across the switch')
  t.same(
    site.calls.map((c) => [c.start, c.end]),
    [[100, 20_100]],
    'the site was asked once',
  )
  t.same(
    archive.calls.map((c) => [c.start, c.end]),
    [
      [5100, 20_100],
      [5100, 20_100],
    ],
    'the archive from the first missing byte, retried once after its 503',
  )
  t.equal(servedBy, 'archive')
  t.same(clock.sleeps, [10], "one backoff wait, for the archive's retry")
  t.same(src.count.bySource, { site: 5000, archive: 15_000 }, 'bytes counted per source')
  t.equal(src.count.values.retries, 1)
})

t.test('a large file damaged at the site: found when complete, and fetched again from the archive (sync, then readers)', async (t) => {
  const size = 6 * BS + 10
  const sum = adler32Hex(adler32(expected(0, size)))
  // Every read from the site brings a damaged first byte.
  const site = new ScriptedSite(
    'site',
    Array.from({ length: 50 }, () => ({ corrupt: true })),
  )
  const archive = new ScriptedSource('archive')
  const { store, fetcher } = setup(t, [site, archive])
  const file = store.file('OPS/large.fits', size, sum)
  const got = await fetcher.fetchWhole(file).catch((e: Error) => e)
  t.equal(typeof got, 'number', `the sync succeeded (${String(got)})`)
  t.ok(file.checkWhole(), "the cache holds the archive's bytes")
  t.ok(
    site.calls.length > 0 && archive.calls.length > 0,
    `the site was read first, then the archive (${site.calls.length}, ${archive.calls.length})`,
  )

  // A reader of another damaged large file: the damage is found when the file completes; the
  // blocks are dropped, and read again from the archive, not the site.
  const two = store.file('OPS/large2.fits', size, sum)
  const siteBefore = site.calls.length
  await read(fetcher, two, 0, size)
  await fetcher.settled()
  t.notOk(two.complete, "complete with the site's bytes, it failed the checksum and was dropped")
  const siteAfter = site.calls.length
  t.ok(siteAfter > siteBefore, 'those bytes came from the site')
  t.ok((await read(fetcher, two, 0, size)).equals(expected(0, size)), "read again: the archive's bytes")
  await fetcher.settled()
  t.equal(site.calls.length, siteAfter, 'the site was not asked again for that file')
  t.ok(two.checkWhole(), 'and the cache now holds it right')
})

t.test("facts never come from the site: identity, stat and list are the archive's", async (t) => {
  const site = new ScriptedSite('site', [], new Map([['OPS/f.fits', 5]]))
  const archive = new ScriptedSource('archive', [], new Map([['OPS/f.fits', 777]]))
  const withSite = new SourceSet([site, archive])
  t.equal(withSite.identity, new SourceSet([archive]).identity, 'adding a site cache keeps the facts learned from the archive')
  t.equal((await withSite.stat('OPS/f.fits'))?.size, 777, "the size is the archive's")
  t.equal(withSite.locate('OPS/f.fits'), 'archive:OPS/f.fits', 'and where a file is, the archive (desfs uri, the url attribute)')
  const clock = new FakeClock()
  const down = new SourceSet([site, archive], { clock, downAfter: 1 })
  down.noteFailure(archive, new SourceError('unreachable', 'refused'))
  await t.rejects(
    down.stat('OPS/f.fits'),
    /no source reachable/,
    'with the archive down, facts are unknown (not "missing"), though the site is up',
  )
})

function settings(over: Partial<ReadPathSettings>): ReadPathSettings {
  return {
    sources: ['site', 'archive'],
    archive: 'http://127.0.0.1:9/des',
    siteCache: undefined,
    siteTokenFile: undefined,
    mirrorDir: undefined,
    s3Url: undefined,
    s3Endpoint: undefined,
    s3Region: 'us-east-1',
    caFile: undefined,
    connectTimeoutMs: 2000,
    stallTimeoutMs: 5000,
    minRate: 1024,
    readTimeoutMs: 0,
    cacheDir: '',
    cacheSize: undefined,
    pinSize: undefined,
    cacheMinFree: undefined,
    ...over,
  }
}

const archiveToken = { authorization: () => 'Bearer ARCHIVE-SECRET', reload: () => Promise.resolve(), hint: 'get a token' }

async function httpPair(t: Test, siteTokenFile?: string, opts: ReadPathOptions = {}) {
  const bytes = expected(0, 5 * BS + 17)
  const archive = await new RangeServer(new Map([['/des/OPS/a.fits', bytes]])).start()
  const site = await new RangeServer(new Map([['/xcache/des/OPS/a.fits', bytes]])).start()
  t.teardown(() => Promise.all([archive.stop(), site.stop()]))
  const set = buildSources(settings({ archive: `${archive.url}/des`, siteCache: `${site.url}/xcache/des`, siteTokenFile }), archiveToken)
  t.teardown(() => set.close())
  const store = testStore(tmp(t), { limit: 64 << 20, blockSize: BS })
  t.teardown(() => store.close())
  const fetcher = fetcherOver(set, store, {
    smallFileBytes: 0,
    runBytes: 2 * BS,
    maxWindowBytes: 2 * BS,
    attemptsPerSource: 2,
    backoffMs: 1,
    ...opts,
  })
  return { bytes, archive, site, set, store, fetcher }
}

t.test('over HTTP: the site serves ranges; the archive token never reaches it, its own token only it', async (t) => {
  const { bytes, archive, site, set, store, fetcher } = await httpPair(t)
  t.same(
    set.sources.map((s) => s.name),
    ['site', 'archive'],
  )
  const file = store.file('OPS/a.fits', bytes.length, null)
  t.ok((await read(fetcher, file, BS + 3, 2 * BS)).equals(bytes.subarray(BS + 3, 3 * BS + 3)), 'the bytes are right')
  t.ok(
    site.log.length > 0 && site.log.every((r) => r.method === 'GET' && /^bytes=\d+-\d+$/.test(String(r.headers.range))),
    'ranged GETs went to the site',
  )
  t.equal(archive.log.length, 0, 'nothing was asked of the archive')
  t.ok(
    site.log.every((r) => r.headers.authorization === undefined),
    'with no site_token_file the site gets no Authorization header at all',
  )

  // The site fails: the archive serves, with its token; the site still never saw that token.
  site.fault = 503
  const again = store.file('OPS/a.fits', bytes.length, null)
  t.ok((await read(fetcher, again, 4 * BS, BS)).equals(bytes.subarray(4 * BS, 5 * BS)), 'the archive served the read')
  t.ok(archive.log.length > 0 && archive.log.every((r) => r.headers.authorization === 'Bearer ARCHIVE-SECRET'), 'the archive got its token')
  t.notOk(
    site.log.some((r) => JSON.stringify(r.headers).includes('ARCHIVE-SECRET')),
    'no request to the site carried the archive token',
  )

  const file2 = join(tmp(t), 'site-token')
  writeFileSync(file2, 'SITE-TOKEN\n', { mode: 0o600 })
  const withToken = await httpPair(t, file2)
  await read(withToken.fetcher, withToken.store.file('OPS/a.fits', bytes.length, null), 0, 100)
  t.ok(
    withToken.site.log.length > 0 && withToken.site.log.every((r) => r.headers.authorization === 'Bearer SITE-TOKEN'),
    'with site_token_file the site gets its own token',
  )
  t.equal(withToken.archive.log.length, 0)

  // The site's token is replaced: its 401 makes desfs read the file again, and the site serves.
  writeFileSync(file2, 'NEW-SITE-TOKEN\n')
  withToken.site.requireToken = 'NEW-SITE-TOKEN'
  const before = withToken.site.log.length
  t.ok(
    (await read(withToken.fetcher, withToken.store.file('OPS/a.fits', bytes.length, null), 4 * BS, 100)).equals(
      bytes.subarray(4 * BS, 4 * BS + 100),
    ),
  )
  t.same(
    withToken.site.log.slice(before).map((r) => r.headers.authorization),
    ['Bearer SITE-TOKEN', 'Bearer NEW-SITE-TOKEN'],
    'refused once, then asked again with the new token',
  )
  t.equal(withToken.archive.log.length, 0, 'the archive was not needed')
})

t.test('over HTTP: 5xx, a body cut short, a wrong Content-Range and a stopped site each fall back to the archive', async (t) => {
  const faults: [string, (s: RangeServer) => Promise<void> | void][] = [
    [
      'HTTP 500',
      (s) => {
        s.fault = 500
      },
    ],
    [
      'a body cut short',
      (s) => {
        s.fault = 'short'
      },
    ],
    [
      'a wrong Content-Range',
      (s) => {
        s.fault = 'wrong-range'
      },
    ],
    ['the site stopped', (s) => s.stop()],
    [
      'a stalled body (the stall guard)',
      (s) => {
        s.fault = 'stall'
      },
    ],
  ]
  for (const [what, breakIt] of faults) {
    // A short stall window, so that the stall guard gives up on a stalled site soon.
    const { bytes, archive, site, store, fetcher } = await httpPair(t, undefined, { rateWindowMs: 300, minRate: 1024 })
    await breakIt(site)
    const file = store.file('OPS/a.fits', bytes.length, null)
    const got = await read(fetcher, file, 0, 2 * BS).catch((e: Error) => e)
    t.ok(
      Buffer.isBuffer(got) && got.equals(bytes.subarray(0, 2 * BS)),
      `${what}: the read got the right bytes (${Buffer.isBuffer(got) ? 'ok' : String(got)})`,
    )
    t.ok(
      archive.log.some((r) => r.method === 'GET'),
      `${what}: from the archive`,
    )
    const ranges = site.log.map((r) => String(r.headers.range))
    t.equal(
      new Set(ranges).size,
      ranges.length,
      `${what}: no range was asked of the site twice (no retries of it: ${ranges.join(' ') || 'none'})`,
    )
  }
})

t.test('settings: auto puts the site before the archive; site alone or unset is refused with the fix', async (t) => {
  t.same(parseSources('auto', { mirror: false, s3: false, site: true }), ['site', 'archive'])
  t.same(parseSources('auto', { mirror: true, s3: true, site: true }), ['mirror', 'site', 'archive', 's3'])
  t.throws(() => parseSources('site', { mirror: false, s3: false, site: true }), /serves bytes only; add archive \(e\.g\. site,archive\)/)
  t.throws(() => parseSources('site,archive', { mirror: false, s3: false, site: false }), /site_cache is not set \(--site-cache URL\)/)
  const env = { DESFS_CONFIG: '/nonexistent/desfs-config', DESDATA: '/tmp/mnt', DESFS_SITE_CACHE: 'http://xcache.example:8443/des/' }
  const saved = process.env.DESFS_CONFIG
  process.env.DESFS_CONFIG = env.DESFS_CONFIG
  t.teardown(() => {
    if (saved === undefined) delete process.env.DESFS_CONFIG
    else process.env.DESFS_CONFIG = saved
  })
  const c = daemonConfig(resolveSettings({}, env))
  t.equal(c.siteCache, 'http://xcache.example:8443/des', 'DESFS_SITE_CACHE is read, trailing slash dropped')
  t.same(c.sources, ['site', 'archive'], 'and the default order is site,archive')
  t.throws(
    () => daemonConfig(resolveSettings({ 'site-cache': 'http://u:p@xcache.example/des' }, env)),
    /site_cache \(from flag --site-cache\): .*never takes credentials in a URL/,
  )
  t.throws(
    () => buildSources(settings({ siteCache: 'http://127.0.0.1:9/x', siteTokenFile: '/nonexistent/site-token' }), archiveToken),
    /site_token_file \/nonexistent\/site-token: cannot read it \(ENOENT\)/,
  )
})

t.test('operations: bytes per source and the site hit ratio, in the fetcher, the metrics and status', async (t) => {
  const site = new ScriptedSite('site', [{ fail: new SourceError('server', 'HTTP 503 from the site cache', 503) }])
  const archive = new ScriptedSource('archive')
  const { store, fetcher } = setup(t, [site, archive])
  const f = store.file('OPS/ops.fits', 4 * BS, null)
  await read(fetcher, f, 0, BS) // the site fails: the archive brings block 0
  await read(fetcher, f, 3 * BS, BS) // the site brings block 3
  await read(fetcher, f, 2 * BS, BS) // and block 2
  await fetcher.settled()
  const fromSite = fetcher.stats.bytesFetched - BS
  t.ok(fromSite >= 2 * BS, 'blocks 2 and 3 (and any read ahead) came from the site')
  t.same(fetcher.bytesBySource, { archive: BS, site: fromSite }, 'bytes per source')
  t.equal(siteHitRatio(fetcher.bytesBySource), fromSite / (fromSite + BS), 'site hit ratio = bytes from the site / bytes fetched')

  // The gauge is daemon-wide: bytes from the site over bytes from every source, as the counter has them.
  const text = await metrics.render()
  const byLabel = [...text.matchAll(/^desfs_fetch_bytes_total\{source="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])] as const)
  const all = byLabel.reduce((a, [, n]) => a + n, 0)
  const siteAll = byLabel.filter(([s]) => s === 'site').reduce((a, [, n]) => a + n, 0)
  t.ok(siteAll >= fromSite, 'the per-source byte counter has the site')
  t.match(
    text,
    new RegExp(`^desfs_site_hit_ratio ${String(siteAll / all).replace('.', '\\.')}$`, 'm'),
    `desfs_site_hit_ratio = ${siteAll}/${all}`,
  )

  const status = humanStatus({
    pid: 1,
    mountpoint: '/mnt',
    startedAt: new Date().toISOString(),
    ready: true,
    db: '/db',
    archive: 'https://archive',
    tree: null,
    token: null,
    cache: null,
    fetch: null,
    settings: {},
    sources: [
      { name: 'site', down: false, bytesFetched: 3 << 20 },
      { name: 'archive', down: true, bytesFetched: 1 << 20 },
    ],
  })
  t.match(
    status,
    /^sources {5}site 3\.00 MiB, archive \(DOWN\) 1\.00 MiB; site hit ratio 75% of bytes fetched$/m,
    'status shows bytes per source and the site hit ratio',
  )
})

t.test(
  'doctor: the site cache reachable, a ranged GET of the first DB file matching the archive; each fault named with its fix',
  async (t) => {
    const dir = tmp(t)
    const db = join(dir, 'meta.db')
    const w = new Database(db)
    w.exec(
      "CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (PATH TEXT, FILENAME TEXT, COMPRESSION TEXT); INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES ('OPS/finalcut/x', 'D1_c01.fits', '.fz')",
    )
    w.close()
    const rel = 'OPS/finalcut/x/D1_c01.fits.fz'
    const bytes = expected(0, 100_000)
    const archive = await new RangeServer(new Map([[`/des/${rel}`, bytes]])).start()
    const good = await new RangeServer(new Map([[`/x/des/${rel}`, bytes]])).start()
    const damaged = Buffer.from(bytes)
    damaged[70_000] = damaged[70_000]! ^ 1
    damaged[5] = damaged[5]! ^ 1
    const bad = await new RangeServer(new Map([[`/x/des/${rel}`, damaged]])).start()
    t.teardown(() => Promise.all([archive.stop(), good.stop(), bad.stop()]))
    const check = (site: string | undefined, extra: Record<string, string> = {}) =>
      checkSiteCache(
        resolveSettings(
          { db, archive: `${archive.url}/des`, 'token-file': '/nonexistent/token', 'site-cache': site, 'connect-timeout': '2s', ...extra },
          { DESFS_CONFIG: '/nonexistent/config' },
        ),
      )

    t.equal(await check(undefined), undefined, 'no site cache configured: no check')
    const ok = await check(`${good.url}/x/des`)
    t.match(ok, { status: 'OK', name: 'site cache' })
    t.match(ok?.detail, new RegExp(`serves ${rel} \\(bytes 0-65535 of 97\\.7 KiB, the archive's\\)`), ok?.detail ?? 'no detail')
    t.ok(
      good.log.some((r) => r.headers.range === 'bytes=0-65535'),
      'it made a ranged GET of the file at the site cache',
    )
    t.notOk(
      good.log.some((r) => r.headers.authorization),
      'with no token for it',
    )

    const differ = await check(`${bad.url}/x/des`)
    t.match(differ, { status: 'FAIL', detail: /first 64\.0 KiB of .* differ from the archive's/, fix: /pss\.origin/ })
    const wrongRoot = await check(`${good.url}/wrong`)
    t.match(wrongRoot, { status: 'FAIL', detail: /HTTP 404, not in the site cache/, fix: /must be the archive root/ })
    good.fault = 401
    t.match(await check(`${good.url}/x/des`), { status: 'FAIL', detail: /HTTP 401/, fix: /site_token_file \(--site-token-file\)/ })
    good.fault = 'wrong-range'
    t.match(await check(`${good.url}/x/des`), { status: 'FAIL', detail: /Content-Range/, fix: /byte ranges/ })
    await bad.stop()
    t.match(await check(`${bad.url}/x/des`), { status: 'FAIL', detail: /connection refused/, fix: /check --site-cache/ })
    t.match(await check('ftp://site/x'), { status: 'FAIL', detail: /not an http\(s\) site cache URL/ })
  },
)
