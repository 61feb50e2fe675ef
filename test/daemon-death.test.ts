// When the daemon dies (kill -9, a crash), nothing of it runs on and its clients say so in one line:
// its SQL query processes and its tree index builder end by themselves, and `desfs sync` / `desfs get`
// following a job exit with one line (and the job can be followed again once a daemon is back).
import t from 'tap'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, desfs, until, processesMatching, processAlive, tmp, type DaemonFixture } from './helpers.js'

t.jobs = 1

const TILE = 'DES2041-5248'
const envFor = (d: DaemonFixture) => ({
  ...process.env,
  DESFS_STATE_DIR: d.stateDir,
  DESFS_CACHE_DIR: d.cacheDir,
  DESFS_CONFIG: '/nonexistent',
})

/** A query that never ends and never returns a row: SQLite counts in one native call. */
const ENDLESS_SQL = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c'

t.test('kill -9 of the daemon ends its SQL query processes, a running one included', async (t) => {
  const a = makeArchive(t, { exposures: 2, ccds: 2, hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const query = desfs(['sql', '--timeout', '0', '-c', ENDLESS_SQL], { env: envFor(d), timeoutMs: 60_000 })
  const running = async () => {
    const r = await desfs(['status', '--json'], { env: envFor(d) })
    return r.code === 0 && (JSON.parse(r.stdout) as { sql: { running: number } }).sql.running === 1
  }
  t.ok(await until(running, 20_000), 'the endless query runs')
  const children = processesMatching('sql-child.js', a.db)
  t.ok(children.length >= 1, `query processes: ${children.join(', ')}`)
  d.child.kill('SIGKILL')
  await d.exited
  const q = await query
  t.not(q.code, 0, 'the sql client fails')
  t.ok(await until(() => children.every((pid) => !processAlive(pid)), 10_000, 100), 'every query process ended within 10 s', {
    left: children.filter(processAlive),
  })
})

t.test('kill -9 of the daemon during an index build ends the builder and removes its partial index', async (t) => {
  const a = makeArchive(t, { exposures: 2, ccds: 2, hostile: false })
  const base = tmp(t)
  const stateDir = join(base, 'state')
  // Rows without end: the builder keeps writing its temporary index until it is stopped.
  const endless =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 'OPS/x/' || (x % 1000), 'f' || x || '.fits', NULL FROM c"
  const d = await startDaemon(t, {
    db: a.db,
    archive: 'http://127.0.0.1:9',
    stateDir,
    flags: ['--tree-query', endless],
    waitMounted: false,
  })
  let builder: number[] = []
  t.ok(await until(() => (builder = processesMatching('catalog-worker.js', stateDir)).length === 1, 30_000), 'the index builder runs')
  t.ok(await until(() => readdirSync(stateDir).some((n) => /\.tmp-\d+$/.test(n)), 30_000), 'and writes its partial index')
  d.child.kill('SIGKILL')
  await d.exited
  t.ok(await until(() => !processAlive(builder[0]!), 10_000, 100), 'the builder ended within 10 s')
  t.same(
    readdirSync(stateDir).filter((n) => /\.tmp-\d+$/.test(n)),
    [],
    'its partial index was removed',
  )
})

t.test('sync and get clients say in one line that the daemon died; sync --attach works once it is back', async (t) => {
  const a = makeArchive(t, { exposures: 6, ccds: 6, imageSize: [512, 512], hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  let d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  // Slow enough that the jobs are still running when the daemon is killed.
  server.faults = { rateBytesPerSec: 20_000 }
  t.teardown(() => {
    server.faults = {}
  })

  const jobIds = async (dd: DaemonFixture) => {
    const r = await desfs(['jobs', '--json'], { env: envFor(dd) })
    return r.code === 0 ? (JSON.parse(r.stdout) as { id: string; kind: string; state: string }[]) : []
  }
  const sync = desfs(['sync', '--tilename', TILE, '--band', 'g'], { env: envFor(d), timeoutMs: 120_000 })
  const files = a.manifest.files
    .filter((f) => f.kind === 'red_immask')
    .slice(0, 6)
    .map((f) => f.rel)
  const get = desfs(['get', '--desdata', join(tmp(t), 'DESDATA'), ...files], { env: envFor(d), timeoutMs: 120_000 })
  let id = ''
  t.ok(
    await until(async () => {
      const jobs = await jobIds(d)
      // Jobs run one after the other: one runs, the other waits its turn.
      const live = jobs.filter((j) => j.state === 'running' || j.state === 'queued')
      id = live.find((j) => j.kind === 'sync')?.id ?? ''
      return !!id && live.some((j) => j.kind === 'get')
    }, 30_000),
    'a sync and a get job are under way',
  )
  t.ok(await until(() => server.sending.size > 0, 30_000), 'and fetch')
  d.child.kill('SIGKILL')
  await d.exited

  for (const [name, p] of [
    ['sync', sync],
    ['get', get],
  ] as const) {
    const r = await p
    t.not(r.code, 0, `${name} exits non-zero`)
    t.equal(r.code, 4, `${name} exits 4 (daemon unavailable)`)
    // Besides the start line and the progress lines (every 10 s when stderr is not a terminal).
    const lines = r.stderr
      .trim()
      .split('\n')
      .filter((l) => !/^sync job \S+ started|^(sync|get) \S+: \d+\/\d+ files/.test(l))
    t.equal(lines.length, 1, `${name}: one line: ${r.stderr.trim()}`)
    t.match(
      lines[0],
      /the daemon stopped while following (sync|get) \S+ \(connection lost\); the job resumes when it starts again .*desfs sync --attach \S+/,
    )
    t.notMatch(r.stderr, /Unhandled|ECONNRESET|\n\s+at /, 'no crash, no stack trace')
  }

  server.faults = {}
  d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, mnt: d.mnt, stateDir: d.stateDir, cacheDir: d.cacheDir })
  const attached = await desfs(['sync', '--attach', id], { env: envFor(d), timeoutMs: 120_000 })
  t.equal(attached.code, 0, `sync --attach ${id} after the restart exits 0 (${attached.stderr.trim()})`)
  t.match(attached.stdout, new RegExp(`sync ${id} done: (\\d+) of \\1 files`), 'and reports the job done')
})
