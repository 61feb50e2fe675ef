// The tree index build at start-up has a time limit and can be called off: a --tree-query that
// would write or load an extension is refused up front, one that never ends is stopped after
// --index-timeout, and Ctrl-C or the end of `desfs mount`, or SIGTERM, stops the build. Each time the
// builder process is gone, its partial index removed, one line says why, and the daemon does not die
// of "internal error: write EPIPE".
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import {
  DESFS,
  desfs,
  makeArchive,
  processAlive,
  processesHolding,
  processesMatching,
  startDaemon,
  tmp,
  until,
  type ArchiveFixture,
} from './helpers.js'

t.jobs = 1

/** Rows without end: the builder writes its temporary index until it is stopped. */
const ENDLESS =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 'OPS/x/' || (x % 1000), 'f' || x || '.fits', NULL FROM c"

interface Place {
  mnt: string
  stateDir: string
  args: string[]
  env: NodeJS.ProcessEnv
  log: () => string
  partials: () => string[]
  /** Daemons and builders of this state dir still running. */
  left: () => number[]
}

/** A mountpoint and state dir for `desfs mount` in the background; anything left running is killed at the end. */
function place(t: Test, a: ArchiveFixture, flags: string[]): Place {
  const dir = tmp(t)
  const mnt = join(dir, 'mnt')
  const stateDir = join(dir, 'state')
  mkdirSync(mnt)
  const left = () => [...processesHolding('daemon/main.js', stateDir), ...processesMatching('catalog-worker.js', stateDir)]
  t.teardown(() => {
    for (const pid of left()) process.kill(pid, 'SIGKILL')
  })
  return {
    mnt,
    stateDir,
    args: [
      'mount',
      mnt,
      '--db',
      a.db,
      '--archive',
      'http://127.0.0.1:9',
      '--state-dir',
      stateDir,
      '--cache-dir',
      join(dir, 'cache'),
      ...flags,
    ],
    env: { ...process.env, DESFS_CONFIG: join(dir, 'none') },
    log: () => {
      try {
        return readFileSync(join(stateDir, 'desfs.log'), 'utf8')
      } catch {
        return ''
      }
    },
    partials: () => {
      try {
        return readdirSync(stateDir).filter((n) => /\.tmp-\d+$/.test(n))
      } catch {
        return []
      }
    },
    left,
  }
}

t.test('a --tree-query that writes or loads an extension is refused, in one line that says so', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  const cases: [string, string, RegExp][] = [
    [
      'a write',
      "INSERT INTO Y6A2_FILE_ARCHIVE_INFO(PATH, FILENAME) VALUES ('a', 'b') RETURNING PATH, FILENAME, COMPRESSION",
      /--tree-query is refused: it writes to the DB \(INSERT\); desfs only reads the metadata DB, give one SELECT returning \(path, filename, compression\)/,
    ],
    [
      'an update hidden behind WITH',
      "WITH x AS (SELECT 1) UPDATE Y6A2_FILE_ARCHIVE_INFO SET PATH = 'a' RETURNING PATH, FILENAME, COMPRESSION",
      /--tree-query is refused: it writes to the DB \(WITH\)/,
    ],
    [
      'load_extension',
      "SELECT load_extension('/nonexistent/evil'), FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO",
      /--tree-query is refused: it loads an extension \(load_extension\)/,
    ],
  ]
  for (const [name, sql, pattern] of cases) {
    await t.test(name, async (t) => {
      const p = place(t, a, ['--foreground', '--tree-query', sql])
      const r = await desfs(p.args, { env: p.env, timeoutMs: 60_000 })
      t.equal(r.code, 2, 'exit 2 (bad setting)')
      const lines = r.stderr.trim().split('\n')
      t.equal(lines.length, 1, `one line: ${r.stderr.trim()}`)
      t.match(lines[0], pattern)
      t.notMatch(r.stderr, /corrupt|re-download/, 'not blamed on the DB')
    })
  }
})

t.test('an endless --tree-query is stopped after --index-timeout: mount returns with one line, nothing left behind', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  const p = place(t, a, ['--tree-query', ENDLESS, '--index-timeout', '3s'])
  const r = await desfs(p.args, { env: p.env, timeoutMs: 60_000 })
  t.equal(r.code, 2, `desfs mount returns, exit 2 (${r.stderr.trim()})`)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  t.match(r.stderr, /--tree-query was still running after index_timeout \(3\.0s\) and was stopped: check that it ends .*--index-timeout/)
  t.ok(await until(() => p.left().length === 0, 10_000), 'no daemon or builder left running', { left: p.left() })
  t.same(p.partials(), [], 'the partial index was removed')
  t.match(p.log(), /index_timeout \(3\.0s\) and was stopped.*; its partial index was removed/)
  t.notMatch(p.log(), /internal error/)
})

t.test('--index-timeout out of range is refused', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  for (const v of ['0', '500ms', '2d']) {
    const p = place(t, a, ['--foreground', '--index-timeout', v])
    const r = await desfs(p.args, { env: p.env, timeoutMs: 60_000 })
    t.equal(r.code, 2, `--index-timeout ${v}: exit 2`)
    t.match(r.stderr, new RegExp(`index_timeout \\(from flag --index-timeout\\): '${v}' is out of range: use 1s to 24h`))
  }
})

t.test('desfs mount going away during the build (Ctrl-C, killed) stops it: builder gone, partial index removed, no EPIPE', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    await t.test(signal, async (t) => {
      const p = place(t, a, ['--tree-query', ENDLESS])
      const cli = spawn(process.execPath, [DESFS, ...p.args], { env: p.env, stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
      const exited = new Promise<number | null>((r) => cli.on('exit', (code) => r(code)))
      t.teardown(() => {
        if (cli.exitCode === null) cli.kill('SIGKILL')
      })
      let builder: number[] = []
      t.ok(await until(() => (builder = processesMatching('catalog-worker.js', p.stateDir)).length === 1, 30_000), 'the builder runs')
      t.ok(await until(() => p.partials().length > 0, 30_000), 'and writes its partial index')
      t.equal(processesHolding('daemon/main.js', p.stateDir).length, 1, 'the daemon is seen (so its end can be)')
      cli.kill(signal)
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 30_000))])
      if (signal === 'SIGINT') {
        t.equal(code, 130, 'desfs mount exits 130')
        t.equal(stderr.trim(), 'desfs: mount cancelled; the daemon stops its start-up', 'with one line')
      }
      t.ok(await until(() => p.left().length === 0 && !processAlive(builder[0]!), 15_000), 'daemon and builder ended', { left: p.left() })
      t.same(p.partials(), [], 'the partial index was removed')
      t.match(
        p.log(),
        /the tree index build was cancelled \(desfs mount went away during start-up \([^)]*\)\); its partial index was removed/,
      )
      t.notMatch(p.log(), /internal error|EPIPE/, 'no internal error')
    })
  }
})

t.test('SIGTERM during the build stops it: builder gone, partial index removed, one line', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  const d = await startDaemon(t, { db: a.db, archive: 'http://127.0.0.1:9', flags: ['--tree-query', ENDLESS], waitMounted: false })
  let builder: number[] = []
  t.ok(await until(() => (builder = processesMatching('catalog-worker.js', d.stateDir)).length === 1, 30_000), 'the builder runs')
  t.ok(await until(() => readdirSync(d.stateDir).some((n) => /\.tmp-\d+$/.test(n)), 30_000), 'and writes its partial index')
  await d.stop('SIGTERM')
  t.ok(await until(() => !processAlive(builder[0]!), 10_000), 'the builder ended')
  t.same(
    readdirSync(d.stateDir).filter((n) => /\.tmp-\d+$/.test(n)),
    [],
    'its partial index was removed',
  )
  t.equal(
    d
      .log()
      .split('\n')
      .filter((l) => /tree index build was cancelled \(SIGTERM\); its partial index was removed/.test(l)).length,
    1,
    'one line says so',
  )
  t.notMatch(d.log(), /internal error/)
})
