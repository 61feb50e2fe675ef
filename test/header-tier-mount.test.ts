// The header tier through a real mount: files read whole, then pushed out of a small cache by big
// reads of other files, keep their headers (cache/header-tier.ts), so a header survey of them
// (`desfs headers`) afterwards asks the archive for nothing.
import t from 'tap'
import { openSync, writeSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, desfs } from './helpers.js'
import { addSurveyFiles } from './bench/headers.js'

t.jobs = 1

t.test('a header survey after big reads churned the cache makes no request', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  // 30 multi-extension files of 16 MB (sparse); the last 20 are made not FITS (no headers to keep).
  const files = addSurveyFiles(a.root, a.db, 30, 16e6)
  const surveyed = files.slice(0, 10)
  const churn = files.slice(10)
  for (const rel of churn) {
    const fd = openSync(join(a.root, rel), 'r+')
    writeSync(fd, Buffer.alloc(2880, 'not fits '), 0, 2880, 0)
    closeSync(fd)
  }
  const { server, tokenFile } = await startServer(t, a.root)
  // A cache of 200 MiB: its header tier is 4 MiB, the headers of the 10 files about 2.5 MiB.
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--cache-size', '200M'] })
  t.teardown(() => d.stop())
  const state = ['--state-dir', d.stateDir]
  await run('find', [join(d.mnt, 'OPS/bench/headers'), '-type', 'f']) // the listings first
  const survey = () => desfs(['headers', ...state, '--keys', 'EXPNUM,SCI:EXTNAME', ...surveyed], { timeoutMs: 120_000 })
  const fetchedOf = (rels: string[]) => server.log.filter((r) => r.method === 'GET' && r.status < 300 && rels.includes(r.path))

  // Read whole (their HDU indexes are walked on open), then 320 MB of other files through 200 MiB.
  for (const rel of surveyed) t.equal((await run('cat', [join(d.mnt, rel)], { timeoutMs: 120_000 })).code, 0)
  const first = await survey()
  t.equal(first.code, 0, first.stderr)
  for (const rel of churn) t.equal((await run('cat', [join(d.mnt, rel)], { timeoutMs: 120_000 })).code, 0)
  const ls = JSON.parse((await desfs(['cache', 'ls', ...state, '--json', 'OPS/bench/headers'])).stdout || '[]') as {
    path: string
    cached: number
  }[]
  const cachedBytes = (rel: string) => ls.find((e) => e.path === rel)?.cached ?? 0
  // (Once 0 for one file: the cache's check 5 s after start deleted a rewrite in progress, since fixed;
  // the daemon's lines naming such a file go with a failure.)
  const lost = surveyed.filter((rel) => cachedBytes(rel) === 0)
  t.ok(
    surveyed.every((rel) => cachedBytes(rel) > 0 && cachedBytes(rel) <= 1 << 20),
    `the surveyed files were evicted but for their headers: ${surveyed.map((r) => cachedBytes(r)).join(' ')}`,
    {
      daemonLog: d
        .log()
        .split('\n')
        .filter((l) => lost.some((rel) => l.includes(rel))),
    },
  )

  const text = (await desfs(['cache', 'ls', ...state, 'OPS/bench/headers'])).stdout
  t.same(
    surveyed.map((rel) => text.split('\n').find((l) => l.endsWith(`  ${rel}`))?.[0]),
    surveyed.map(() => 'H'),
    'cache ls marks them H (headers only)',
  )
  const stats = (await desfs(['cache', 'stats', ...state])).stdout
  t.match(
    stats,
    /^header tier \d[\d.]* [KM]iB of evicted files' FITS headers kept \(bound 4(\.0+)? MiB\)$/m,
    'cache stats says what the header tier holds',
  )

  server.clearLog()
  const again = await survey()
  t.equal(again.code, 0, again.stderr)
  t.equal(again.stdout, first.stdout, 'the same survey')
  t.same(
    fetchedOf(surveyed).map((r) => `${r.path} ${r.range}`),
    [],
    'no header fetched again',
  )
})
