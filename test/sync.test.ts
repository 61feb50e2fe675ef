// Sync jobs and materialising files, through the real daemon and CLI: a tile's files prefetched and
// pinned, cancel, kill -9 and resume with only the missing bytes fetched again, a missing file in the
// manifest, and `desfs get` into a real DESDATA (copy, symlink, standalone; test/get-modes.test.ts
// has why there is no hardlink mode).
import t, { type Test } from 'tap'
import { readFileSync, readdirSync, statSync, lstatSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import {
  makeArchive,
  startServer,
  startDaemon,
  desfs,
  run,
  tmp,
  until,
  sourceBytes,
  type ArchiveFixture,
  type DaemonFixture,
  md5,
  parseMd5sum,
} from './helpers.js'
import { expectedTileFiles } from './archive/expect.js'

t.jobs = 1

const TILE = 'DES2041-5248'
const envFor = (d: DaemonFixture) => ({
  ...process.env,
  DESFS_STATE_DIR: d.stateDir,
  DESFS_CACHE_DIR: d.cacheDir,
  DESFS_CONFIG: '/nonexistent',
})

interface JobShow {
  id: string
  state: string
  files: { path: string; size: number; status: string; message?: string; fetched?: number }[]
}

async function show(d: DaemonFixture, id: string): Promise<JobShow> {
  const r = await desfs(['jobs', 'show', id, '--json'], { env: envFor(d) })
  return JSON.parse(r.stdout) as JobShow
}

/** Starts a sync in the background (the CLI detaches on its own when killed) and returns its job id. */
async function startSync(t: Test, d: DaemonFixture, args: string[]): Promise<string> {
  const child = desfs(['sync', ...args], { env: envFor(d), timeoutMs: 120_000 })
  let id = ''
  await until(async () => {
    const r = await desfs(['jobs', '--json'], { env: envFor(d) })
    const list = r.code === 0 ? (JSON.parse(r.stdout) as { id: string; state: string }[]) : []
    id = list.find((j) => j.state === 'running')?.id ?? ''
    return !!id
  }, 30_000)
  t.ok(id, 'the sync job is running')
  void child
  return id
}

t.test('sync a tile and band: everything selected, fetched, verified and pinned', async (t) => {
  // 12 exposures (4 in each band) of 10 CCDs: a tile and band needs 4*10*4 + 4 = 164 files.
  const a = makeArchive(t, { exposures: 12, ccds: 10, hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const expected = expectedTileFiles(a.manifest, TILE, 'r')
  t.equal(expected.length, 164)

  const dry = await desfs(['sync', '--tilename', TILE, '--band', 'r', '--dry-run'], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(dry.code, 0, dry.stderr)
  const listed = dry.stdout
    .trim()
    .split('\n')
    .slice(0, -1)
    .map((l) => l.trim().split(/\s+/).pop()!)
  t.same(listed.sort(), expected, "the dry run lists exactly the tile recipe's files")
  const total = expected.reduce((n, rel) => n + a.manifest.files.find((f) => f.rel === rel)!.size, 0)
  t.match(dry.stdout, new RegExp(`164 files, `), 'with a total')
  t.equal(server.count('GET'), 0, 'a dry run fetches nothing')

  const dir = tmp(t)
  const manifest = join(dir, 'manifest.json')
  const r = await desfs(['sync', '--tilename', TILE, '--band', 'r', '--manifest', manifest], { env: envFor(d), timeoutMs: 180_000 })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /sync \S+ done: 164 of 164 files/)
  const m = JSON.parse(readFileSync(manifest, 'utf8')) as { path: string; size: number; status: string; url: string }[]
  t.equal(m.length, 164)
  t.ok(
    m.every((e) => e.status === 'ok' && e.url.startsWith(server.archiveUrl)),
    'every manifest entry is ok, with its source URL',
  )
  const fetched = server.log.filter((x) => x.method === 'GET').reduce((n, x) => n + x.bytes, 0)
  t.equal(fetched, total, 'every byte fetched exactly once')

  const ls = await desfs(['cache', 'ls', '--json'], { env: envFor(d) })
  const entries = JSON.parse(ls.stdout) as { path: string; size: number; cached: number; pinned: boolean }[]
  const byPath = new Map(entries.map((e) => [e.path, e]))
  t.ok(
    expected.every((p) => byPath.get(p)?.pinned && byPath.get(p)!.cached === byPath.get(p)!.size),
    'all 164 files are whole in the cache and pinned',
  )

  server.clearLog()
  const check = await run('md5sum', expected.slice(0, 40), { cwd: d.mnt, timeoutMs: 60_000 })
  const got = parseMd5sum(check.stdout)
  t.ok(
    expected.slice(0, 40).every((p) => got.get(p) === md5(sourceBytes(a, p))),
    'reads through the mount have the source bytes',
  )
  t.equal(server.count('GET'), 0, 'and come from the cache')

  const again = await desfs(['sync', '--tilename', TILE, '--band', 'r'], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(again.code, 0)
  t.match(again.stdout, /0 B transferred/, 'a second sync transfers nothing')
})

t.test('cancel, kill -9 and resume, a missing file, the pin cap', async (t) => {
  const a = makeArchive(t, { exposures: 6, ccds: 6, imageSize: [512, 512], hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const expected = expectedTileFiles(a.manifest, TILE, 'g')
  const total = expected.reduce((n, rel) => n + a.manifest.files.find((f) => f.rel === rel)!.size, 0)

  await t.test('cancel stops the job quickly', async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    // Slow enough (8 s per request) that the cancel, a CLI start away, lands mid-body even on a busy box.
    server.faults = { rateBytesPerSec: 50_000 }
    t.teardown(() => {
      server.faults = {}
    })
    const id = await startSync(t, d, ['--tilename', TILE, '--band', 'g'])
    t.ok(await until(() => server.sending.size > 0, 30_000), 'the sync job is fetching')
    const underWay = [...server.sending]
    const t0 = Date.now()
    const c = await desfs(['jobs', 'cancel', id], { env: envFor(d) })
    t.equal(c.code, 0, c.stderr)
    t.ok(await until(async () => (await show(d, id)).state === 'cancelled', 10_000), 'the job is cancelled')
    t.ok(Date.now() - t0 < 10_000, 'within seconds')
    // The job alone wanted the requests under way: they are called off, not left to finish.
    t.ok(await until(() => server.sending.size === 0, 10_000), 'the requests under way are called off', {
      left: [...server.sending].map((r) => `${r.path} ${r.range} ${r.bytes}`),
    })
    const asked = (r: { range?: string }) => {
      const [a, b] = r.range!.replace('bytes=', '').split('-').map(Number)
      return b! - a! + 1
    }
    t.ok(
      underWay.length > 0 && underWay.some((r) => r.bytes < asked(r)),
      `cut short: ${underWay.map((r) => `${r.bytes} of ${asked(r)}`).join(', ')}`,
    )
    const gets = server.count('GET')
    await new Promise((r) => setTimeout(r, 1500))
    t.equal(server.count('GET'), gets, 'no new requests after the cancel')
    const job = await show(d, id)
    t.ok(
      job.files.some((f) => f.status === 'pending'),
      'files not started stay pending',
    )
    // What the cancelled job had half fetched, a reader gets whole and right.
    server.faults = {}
    const some = expected.slice(0, 20)
    const check = await run('md5sum', some, { cwd: d.mnt, timeoutMs: 60_000 })
    const got = parseMd5sum(check.stdout)
    t.ok(
      some.every((p) => got.get(p) === md5(sourceBytes(a, p))),
      'files the job was fetching read right through the mount afterwards',
    )
    const r = await desfs(['jobs', 'cancel', id], { env: envFor(d) })
    t.equal(r.code, 1, 'cancelling a finished job is refused')
    t.match(r.stderr, /is cancelled, not running/)
  })

  await t.test('kill -9 mid-sync, restart: the job resumes and fetches only what is missing', async (t) => {
    server.clearLog()
    let d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    // Slow enough (per request) that the kill comes while most of the tile is still to fetch.
    server.faults = { rateBytesPerSec: 250_000 }
    const id = await startSync(t, d, ['--tilename', TILE, '--band', 'g'])
    t.ok(await until(async () => (await show(d, id)).files.filter((f) => f.status === 'ok').length >= 5, 60_000), 'some files were synced')
    d.child.kill('SIGKILL')
    await d.exited
    const before = server.log.filter((x) => x.method === 'GET').reduce((n, x) => n + x.bytes, 0)
    t.ok(before < total / 2, `killed early: ${before} of ${total} bytes sent`)
    server.faults = {}
    server.clearLog()
    d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, mnt: d.mnt, stateDir: d.stateDir, cacheDir: d.cacheDir })
    t.ok(await until(() => /resuming job after restart/.test(d.log()), 30_000), 'the daemon resumes the job at start')
    t.ok(await until(async () => (await show(d, id)).state === 'done', 120_000), 'the resumed job finishes')
    const after = server.log.filter((x) => x.method === 'GET').reduce((n, x) => n + x.bytes, 0)
    t.ok(before > 0 && after > 0, `bytes before (${before}) and after (${after}) the crash`)
    t.ok(after < total, 'the restart did not fetch everything again')
    // What was on disk before the kill is not fetched again; at most what was in flight is.
    t.ok(
      before + after <= total + 8 * (1 << 20),
      `fetched ${before + after} bytes in all for ${total} (in flight at the kill fetched twice at most)`,
    )
    const job = await show(d, id)
    t.ok(
      job.files.every((f) => f.status === 'ok'),
      'every file ok',
    )
  })

  await t.test('a file the archive does not have: a manifest entry with the error, exit 1, the rest synced', async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    const gone = expected.find((p) => p.includes('_bkg'))!
    server.faults = { notFound: [gone] }
    t.teardown(() => {
      server.faults = {}
    })
    const dir = tmp(t)
    const manifest = join(dir, 'm.tsv')
    const r = await desfs(['sync', '--tilename', TILE, '--band', 'g', '--manifest', manifest], { env: envFor(d), timeoutMs: 120_000 })
    t.equal(r.code, 1, 'exit code 1')
    t.match(r.stdout, new RegExp(`failed ${gone.replace(/[.+]/g, '\\$&')}: .*404`))
    const rows = readFileSync(manifest, 'utf8')
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => l.split('\t'))
    t.equal(rows.length, expected.length)
    const bad = rows.filter((x) => x[2] === 'failed')
    t.same(
      bad.map((x) => x[0]),
      [gone],
      'only the missing file failed',
    )
    t.match(bad[0]![3], /404/)
  })

  await t.test('asking to pin more than the pin cap is refused up front', async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--pin-size', '100K'] })
    server.clearLog()
    const r = await desfs(['sync', '--tilename', TILE, '--band', 'g'], { env: envFor(d), timeoutMs: 60_000 })
    t.not(r.code, 0)
    t.match(r.stderr, /cannot pin \d+ files \(.*\): pinned files would take .*, over the pin cap of 100 KiB/)
    t.equal(server.count('GET'), 0, 'nothing fetched')
  })
})

t.test('desfs get: into a real DESDATA, idempotent, symlinks, safe after eviction, standalone', async (t) => {
  const a: ArchiveFixture = makeArchive(t, { exposures: 3, ccds: 2, hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const files = a.manifest.files.filter((f) => f.kind === 'red_immask' || f.kind === 'coadd_cat').map((f) => f.rel)
  const base = tmp(t)

  const copyDir = join(base, 'copy')
  const r1 = await desfs(['get', '--desdata', copyDir, ...files], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(r1.code, 0, r1.stderr)
  t.same(
    r1.stdout.trim().split('\n'),
    files.map((f) => join(copyDir, f)),
    'prints each local path',
  )
  t.ok(
    files.every((f) => md5(readFileSync(join(copyDir, f))) === md5(sourceBytes(a, f))),
    'byte-identical copies',
  )
  const mtimes = files.map((f) => statSync(join(copyDir, f)).mtimeMs)
  server.clearLog()
  const r2 = await desfs(['get', '--desdata', copyDir, ...files], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(r2.code, 0)
  t.same(
    files.map((f) => statSync(join(copyDir, f)).mtimeMs),
    mtimes,
    'a second get leaves correct files alone',
  )
  t.equal(server.count('GET'), 0, 'and fetches nothing')
  t.notOk(
    readdirSync(join(copyDir, files[0]!, '..')).some((n) => /^\..*\.[0-9a-f]{16}\.tmp$/.test(n)),
    'no temporary files left behind',
  )

  const symDir = join(base, 'symlink')
  const r4 = await desfs(['get', '--desdata', symDir, '--mode', 'symlink', files[0]!], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(r4.code, 0, r4.stderr)
  t.ok(lstatSync(join(symDir, files[0]!)).isSymbolicLink())
  t.equal(readlinkSync(join(symDir, files[0]!)), join(d.mnt, files[0]!), 'a symlink into the mount')

  // The cache lets go of everything: copies keep their bytes.
  const clear = await desfs(['cache', 'clear', '--yes'], { env: envFor(d) })
  t.equal(clear.code, 0, clear.stderr)
  t.ok(
    files.every((f) => md5(readFileSync(join(copyDir, f))) === md5(sourceBytes(a, f))),
    'copies are intact after the cache was cleared',
  )

  const r5 = await desfs(['get', '--desdata', join(base, 'x'), 'OPS/no/such/file.fits'], { env: envFor(d), timeoutMs: 60_000 })
  t.equal(r5.code, 1, 'a path not in the archive: exit 1')
  t.match(r5.stderr, /failed OPS\/no\/such\/file\.fits: not in the metadata DB/)

  const r6 = await desfs(['get', '--desdata', d.mnt, files[0]!], { env: envFor(d), timeoutMs: 60_000 })
  t.not(r6.code, 0)
  t.match(r6.stderr, /is \(or contains\) the desfs mount/, 'the mount itself is refused as a destination')

  // Without a daemon: the same engine in the CLI process, on its own cache dir.
  await d.stop()
  const alone = join(base, 'standalone')
  const env = {
    ...process.env,
    DESFS_STATE_DIR: join(base, 'state'),
    DESFS_CACHE_DIR: join(base, 'cache'),
    DESFS_CONFIG: '/nonexistent',
    DES_ARCHIVE_ACCESS_ARCHIVE: server.archiveUrl,
    DESFS_TOKEN_FILE: tokenFile,
  }
  const r7 = await desfs(['get', '--desdata', alone, ...files], { env, timeoutMs: 60_000 })
  t.equal(r7.code, 0, r7.stderr)
  t.ok(
    files.every((f) => md5(readFileSync(join(alone, f))) === md5(sourceBytes(a, f))),
    'standalone get places byte-identical files',
  )
  const r8 = await desfs(['get', '--desdata', alone, '--mode', 'symlink', files[0]!], { env, timeoutMs: 60_000 })
  t.not(r8.code, 0)
  t.match(r8.stderr, /--mode symlink links into the mount: start one with desfs mount first/)
})
