// Crash safety: bytes flipped in a cache file are detected and fetched again; a daemon killed with
// SIGKILL during heavy reads is followed by one that recovers the mount, keeps the cache within its
// bound, and reads every file correctly.
import t, { type Test } from 'tap'
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { cacheKey } from '../cache/block-store.js'
import { bigArchive, diskUsage, randomReads, readSet } from './cache-helpers.js'
import { desfs, killLeavingStaleMount, run, sourceBytes, startDaemon, startServer, until, md5, parseMd5sum } from './helpers.js'
import { mountedType } from '../fs/mount.js'

t.jobs = 1
const MiB = 1 << 20

async function md5sAll(t: Test, mnt: string, a: ReturnType<typeof bigArchive>, files: string[]) {
  const r = await run('md5sum', files, { cwd: mnt, timeoutMs: 120_000 })
  t.equal(r.code, 0, `md5sum exits 0 ${r.stderr}`)
  const got = parseMd5sum(r.stdout)
  const bad = files.filter((f) => got.get(f) !== md5(sourceBytes(a, f)))
  t.same(bad, [], `all ${files.length} files have the source's md5`)
}

t.test('bytes flipped in a cache file are detected and refetched', async (t) => {
  const a = bigArchive(t)
  const { server, tokenFile } = await startServer(t, a.root)
  const big = a.manifest.largeFile!
  let d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const first = await run('md5sum', [join(d.mnt, big)], { timeoutMs: 60_000 })
  t.equal(first.stdout.slice(0, 32), md5(sourceBytes(a, big)), 'first read is right')
  await d.stop()
  // Flip one byte in each of three blocks of the cached copy.
  const data = join(d.cacheDir, 'data', cacheKey(big).slice(0, 2), cacheKey(big))
  const fd = openSync(data, 'r+')
  for (const pos of [5 * MiB + 123, 11 * MiB + 7, 20 * MiB + 99_999]) {
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, pos)
    b[0] = b[0]! ^ 0xff
    writeSync(fd, b, 0, 1, pos)
  }
  closeSync(fd)
  d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, mnt: d.mnt, stateDir: d.stateDir, cacheDir: d.cacheDir })
  server.clearLog()
  const again = await run('md5sum', [join(d.mnt, big)], { timeoutMs: 60_000 })
  t.equal(again.stdout.slice(0, 32), md5(sourceBytes(a, big)), 'the reader gets the right bytes')
  t.equal((d.log().match(/cache block failed its checksum/g) ?? []).length, 3, 'the three bad blocks were detected')
  const gets = server.log.filter((r) => r.method === 'GET' && r.path === big && r.status === 206)
  const fetched = gets.reduce((n, r) => n + r.bytes, 0)
  // Three blocks of 32 KiB (the block size of a new cache dir), with room for some read-ahead.
  t.ok(fetched >= 3 * (32 << 10) && fetched < 10 * MiB, `only the bad blocks were fetched again (${fetched} bytes in ${gets.length} GETs)`)
})

t.test('kill -9 during heavy reads, then restart: mount recovered, cache bounded, every md5 right', async (t) => {
  const a = bigArchive(t)
  const { server, tokenFile } = await startServer(t, a.root)
  const limit = 12 * MiB
  const flags = ['--cache-size', '12M']
  let d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags })
  const files = readSet(a)
  server.faults = { latencyMs: 2 }
  const readers = randomReads(d.mnt, a.root, files, { seed: 77, count: 3000, readers: 3 })
  const cats = Promise.all(files.slice(0, 3).map((f) => run('cat', [join(d.mnt, f)], { timeoutMs: 60_000, binary: true })))
  // Kill while reads are under way (however long the readers take to get going on a loaded machine).
  t.ok(await until(() => server.count('GET') > 10, 30_000), 'reads were under way')
  // The unmount watchdog dies too, so the restart has to recover the dead mount; the watchdog's
  // own work is tested in native-plane.
  await killLeavingStaleMount(d)
  const dead = await readers
  await cats
  t.equal(dead.wrong, 0, `no wrong bytes before or after the crash (${dead.ok} ok reads)`)
  t.equal(await mountedType(d.mnt), 'fuse.desfs', 'the dead mount is still there')
  server.faults = {}
  d = await startDaemon(t, {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    flags,
    mnt: d.mnt,
    stateDir: d.stateDir,
    cacheDir: d.cacheDir,
  })
  t.match(d.log(), /stale mount left by a crashed daemon/, 'the stale mount was recovered')
  await md5sAll(
    t,
    d.mnt,
    a,
    a.manifest.files.map((f) => f.rel),
  )
  const env = { ...process.env, DESFS_STATE_DIR: d.stateDir }
  t.ok(
    await until(async () => diskUsage(join(d.cacheDir, 'data')) <= limit + MiB, 20_000, 500),
    `the cache is within its bound on disk (${diskUsage(join(d.cacheDir, 'data'))} bytes)`,
  )
  const s = JSON.parse((await desfs(['cache', 'stats', '--json'], { env })).stdout) as { bytes: number; limit: number }
  t.ok(s.bytes <= limit, `and on record (${s.bytes} of ${s.limit})`)
})
