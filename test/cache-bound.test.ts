// The cache bound under concurrent readers (sampled on disk and on record all along), and the cache
// commands: stats, ls, pin/unpin with the pin cap, evict, clear (a dry run without --yes), with one
// clear line and a trustworthy exit code for every mistake.
import t from 'tap'
import { join } from 'node:path'
import { call, socketPath } from '../bin/client.js'
import { bigArchive, diskUsage, randomReads, readSet } from './cache-helpers.js'
import { DESFS, desfs, run, startDaemon, startServer, tmp } from './helpers.js'

t.jobs = 1
const MiB = 1 << 20

t.test('the bound holds within one block at all times under concurrent readers', async (t) => {
  const a = bigArchive(t)
  const { server, tokenFile } = await startServer(t, a.root)
  const limit = 10 * MiB
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--cache-size', '10M'] })
  const files = readSet(a)
  const sock = socketPath(d.stateDir)
  let maxDisk = 0
  let maxRecord = 0
  let samples = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      maxDisk = Math.max(maxDisk, diskUsage(join(d.cacheDir, 'data')))
      maxRecord = Math.max(maxRecord, (await call<{ bytes: number }>(sock, 'GET', '/cache/stats')).bytes)
      samples++
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  const [rr, cats] = await Promise.all([
    randomReads(d.mnt, a.root, files, { seed: 5, count: 300, readers: 4 }),
    Promise.all(files.slice(0, 4).map((f) => run('cat', [join(d.mnt, f)], { timeoutMs: 60_000, binary: true }))),
  ])
  sampling = false
  await sampler
  t.equal(rr.wrong, 0, `no wrong bytes (${rr.ok} ok)`)
  t.ok(
    cats.every((c) => c.code === 0),
    'the sequential readers finished',
  )
  t.ok(samples >= 10, `${samples} samples`)
  t.ok(maxRecord <= limit, `on record: at most ${maxRecord} of ${limit} bytes`)
  t.ok(maxDisk <= limit + MiB, `on disk: at most ${maxDisk} bytes, within one block of the bound`)
  // Evicted whole, or down to their header blocks (the header tier): bytes went either way.
  const s = await call<{ bytesEvicted: number }>(sock, 'GET', '/cache/stats')
  t.ok(s.bytesEvicted > 0, `bytes were evicted along the way (${s.bytesEvicted})`)
})

t.test('desfs cache: stats, ls, pin, unpin, evict, clear', async (t) => {
  const a = bigArchive(t)
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--cache-size', '64M', '--pin-size', '12M'] })
  const env = { ...process.env, DESFS_STATE_DIR: d.stateDir }
  const cache = (...args: string[]) => desfs(['cache', ...args], { env })
  const files = readSet(a, 3, 3)
  const r0 = await run(
    'cat',
    files.map((f) => join(d.mnt, f)),
    { timeoutMs: 60_000, binary: true },
  )
  t.equal(r0.code, 0, 'files read')

  const stats = await cache('stats')
  t.equal(stats.code, 0)
  t.match(stats.stdout, /^cache +\S+\nused +[\d.]+ MiB of 64\.0 MiB \(\d+%\) in 6 files \(blocks of 32\.0 KiB\)\npinned +0 files/m)
  const ls = await cache('ls')
  t.equal(ls.stdout.trim().split('\n').length, 6, 'ls lists the six cached files')
  t.match(ls.stdout, new RegExp(`^- +24\\.0 MiB / 24\\.0 MiB .* ${a.manifest.largeFile!.replace(/[.]/g, '\\.')}$`, 'm'))

  const big = a.manifest.largeFile!
  const small = files[files.length - 1]!
  const refused = await cache('pin', big)
  t.equal(refused.code, 1, 'pinning beyond the cap fails with exit 1')
  t.match(
    refused.stderr,
    /^desfs: cannot pin 1 files \(24\.0 MiB\): pinned files would take 24\.0 MiB, over the pin cap of 12\.0 MiB \(0 B pinned now\); unpin some or raise --pin-size\n$/,
  )
  const pinned = await cache('pin', small, join(d.mnt, files[3]!))
  t.equal(pinned.code, 0, pinned.stderr)
  t.equal(pinned.stdout, 'desfs: pinned 2 files\n')
  t.equal((await cache('ls', '--pinned')).stdout.trim().split('\n').length, 2, 'ls --pinned shows them')
  const inside = await run(process.execPath, [DESFS, 'cache', 'pin', small.split('/').pop()!], {
    env,
    cwd: join(d.mnt, small.split('/').slice(0, -1).join('/')),
  })
  t.equal(inside.code, 0, `a path relative to a directory inside the mount works ${inside.stderr}`)
  t.match(inside.stdout, /pinned 0 files \(1 were pinned already\)/)

  const dry = await cache('clear')
  t.equal(dry.code, 0)
  t.match(dry.stdout, /^desfs: clear would evict 4 files \([\d.]+ MiB\); kept 2 pinned; run desfs cache clear --yes to do it\n$/)
  t.match((await cache('stats')).stdout, /in 6 files/, 'the dry run changed nothing')
  const ev = await cache('evict', files[0]!)
  t.match(ev.stdout, /^desfs: evicted 1 files \(24\.0 MiB\)\n$/)
  const yes = await cache('clear', '--yes')
  t.match(yes.stdout, /^desfs: evicted 3 files .*; kept 2 pinned\n$/)
  t.match((await cache('stats')).stdout, /in 2 files/)
  t.equal((await cache('unpin', 'OPS')).stdout, 'desfs: unpinned 2 files\n', 'unpin takes a directory')
  t.equal((await cache('clear', '--yes')).code, 0)
  t.match((await cache('stats')).stdout, /used +0 B of 64\.0 MiB \(0%\) in 0 files/)

  for (const [args, code, msg] of [
    [[], 2, /^desfs: desfs cache: give a subcommand: one of stats, ls, pin, unpin, evict, clear/],
    [['frobnicate'], 2, /unknown subcommand 'frobnicate'/],
    [['pin'], 2, /desfs cache pin: give one or more PATHs/],
    [['pin', 'OPS/no/such.fits'], 1, /OPS\/no\/such\.fits: no such file or directory in the archive tree/],
    [['evict', '/etc/passwd'], 1, /\/etc\/passwd is not under the mount/],
  ] as [string[], number, RegExp][]) {
    const r = await cache(...args)
    t.equal(r.code, code, `desfs cache ${args.join(' ')} exits ${code}`)
    t.match(r.stderr, msg)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
  const none = await desfs(['cache', 'stats', '--state-dir', tmp(t)])
  t.equal(none.code, 4, 'no daemon: exit 4')
  t.match(none.stderr, /no desfs daemon is running/)
})
