// Bad weather on the network, thousands of random reads: with connections reset mid-body, short
// bodies, bursts of 5xx, stalled bodies, 429s with Retry-After and a token that stops working until
// its file is replaced, every read returns the source's bytes or EIO, never a wrong byte.
import t from 'tap'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import type { Faults } from '../bin/demo/server.js'
import { bigArchive, randomReads, readSet } from './cache-helpers.js'
import { desfs, makeArchive, md5, needPythonModule, PYTHON, run, sourceBytes, startDaemon, startServer, until } from './helpers.js'
import { join } from 'node:path'

t.jobs = 1

t.test('random reads under injected faults: correct bytes or EIO, never wrong bytes', async (t) => {
  if (!needPythonModule(t, 'json', 'python3')) return
  const a = bigArchive(t)
  const { server, tokenFile } = await startServer(t, a.root)
  // A cache smaller than the files read, so blocks keep being evicted and fetched again.
  const d = await startDaemon(t, {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    flags: ['--cache-size', '8M', '--stall-timeout', '1s', '--read-timeout', '20s'],
  })
  const files = readSet(a)
  const env = { ...process.env, DESFS_STATE_DIR: d.stateDir }
  let seed = 1000
  let totalReads = 0

  const scenarios: [string, Faults, (f: Faults) => boolean][] = [
    ['connection reset mid-body', { resetAfterBytes: 150_000, resetCount: 60 }, (f) => f.resetCount! < 60],
    ['short bodies', { shortCount: 60 }, (f) => f.shortCount! < 60],
    ['bursts of 503', { fail5xxRate: 0.3 }, () => server.log.some((r) => r.status === 503)],
    ['stalled bodies', { stallAfterBytes: 100_000, stallCount: 6 }, (f) => f.stallCount! < 6],
    ['429 with Retry-After', { fail429: 12, retryAfterSec: 1 }, (f) => f.fail429! < 12],
    [
      'all at once',
      { resetAfterBytes: 300_000, resetCount: 20, shortCount: 20, fail5xxRate: 0.15, stallAfterBytes: 50_000, stallCount: 3, latencyMs: 5 },
      (f) => f.resetCount! < 20 && f.shortCount! < 20,
    ],
  ]
  for (const [name, faults, exercised] of scenarios) {
    await t.test(name, async (t) => {
      const cleared = await desfs(['cache', 'clear', '--yes'], { env })
      t.equal(cleared.code, 0, `cache cleared ${cleared.stderr}`)
      server.clearLog()
      const left = { ...faults }
      server.faults = left
      const r = await randomReads(d.mnt, a.root, files, { seed: seed, count: 300, readers: 2 })
      seed += 2
      totalReads += r.reads
      server.faults = {}
      t.equal(r.wrong, 0, `no wrong bytes in ${r.reads} reads (${JSON.stringify(r.firstWrong)})`)
      t.same(r.other, {}, 'no errno other than EIO')
      t.ok(r.ok >= r.reads * 0.9, `most reads succeed (${r.ok} ok, ${r.eio} EIO of ${r.reads}; ${r.short} partial reads continued)`)
      t.ok(exercised(left), 'the fault was injected')
    })
  }

  await t.test('401 until the token file is replaced, then success', async (t) => {
    await desfs(['cache', 'clear', '--yes'], { env })
    const fresh = makeToken()
    server.tokens = new Set([fresh])
    const file = join(d.mnt, files[0]!)
    const before = Date.now()
    const r = await run('cat', [file], { timeoutMs: 60_000, binary: true })
    t.not(r.code, 0, 'reading with a rejected token fails')
    t.match(r.stderr, /Input\/output error/, 'with EIO')
    t.ok(Date.now() - before < 25_000, 'within the read deadline')
    t.match(d.log(), /HTTP 401, the bearer token is missing, expired or rejected/, 'the log says why')
    writeTokenFile(tokenFile, fresh)
    t.ok(
      await until(() => /bearer token loaded/.test(d.log().split('HTTP 401').pop() ?? ''), 10_000),
      'the daemon re-read the replaced token file',
    )
    const rr = await randomReads(d.mnt, a.root, files, { seed: seed, count: 300, readers: 2 })
    totalReads += rr.reads
    t.equal(rr.wrong, 0, 'no wrong bytes')
    t.equal(rr.ok, rr.reads, `every read succeeds with the new token (${rr.eio} EIO)`)
  })

  t.ok(totalReads >= 4000, `${totalReads} random reads in all`)
})

t.test('a server that stalls after the headers: no read waits past the deadline + 1 s, and the file reads once it recovers', async (t) => {
  if (!needPythonModule(t, 'json', 'python3')) return
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, largeFileBytes: 8 << 20 })
  const { server, tokenFile } = await startServer(t, a.root)
  const DEADLINE_S = 3
  // A stall is noticed after 5 s, so the read deadline answers the reader first.
  const d = await startDaemon(t, {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    flags: ['--read-timeout', `${DEADLINE_S}s`, '--stall-timeout', '5s'],
  })
  const small = [...a.manifest.files].sort((x, y) => x.size - y.size)[0]!.rel
  const large = a.manifest.largeFile!
  // Each syscall timed by the reader itself: the kernel's read-ahead and its retry of a failed page
  // are both inside the one pread.
  const timedPread = `
import json, os, sys, time
out = []
for path, off in zip(sys.argv[1::2], sys.argv[2::2]):
    fd = os.open(path, os.O_RDONLY)
    t0 = time.monotonic()
    try:
        os.pread(fd, 4096, int(off))
        err = 0
    except OSError as e:
        err = e.errno
    out.append({"path": path, "errno": err, "seconds": time.monotonic() - t0})
    os.close(fd)
print(json.dumps(out))
`
  server.faults = { stallAfterBytes: 0, stallCount: 1000 }
  const r = await run(PYTHON, ['-c', timedPread, join(d.mnt, small), '0', join(d.mnt, large), String(3 << 20)], { timeoutMs: 120_000 })
  server.faults = {}
  t.equal(r.code, 0, r.stderr)
  const reads = JSON.parse(r.stdout) as { path: string; errno: number; seconds: number }[]
  for (const x of reads) {
    t.equal(x.errno, 5, `${x.path.split('/').pop()}: EIO`)
    t.ok(x.seconds < DEADLINE_S + 1, `the pread returned after ${x.seconds.toFixed(2)} s, within the deadline (${DEADLINE_S} s) + 1 s`)
  }
  t.ok(
    server.log.some((x) => x.method === 'GET'),
    'the stalled GETs were made',
  )
  // The failure is remembered only for a few seconds: the same bytes read right once the server is well.
  let md5Now = ''
  t.ok(
    await until(
      async () => {
        const c = await run('md5sum', [join(d.mnt, small)], { timeoutMs: 30_000 })
        md5Now = c.stdout.slice(0, 32)
        return c.code === 0
      },
      30_000,
      500,
    ),
    'the small file reads again once the server recovers',
  )
  t.equal(md5Now, md5(sourceBytes(a, small)), 'with the right bytes')
})
