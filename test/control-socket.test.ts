// The control socket as users and intruders meet it: a private state dir, one daemon per socket, a
// stale socket after a crash, another user shut out; and what it answers: status (human and JSON),
// metrics, reload.
import t from 'tap'
import { chmodSync, copyFileSync, existsSync, mkdirSync, renameSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { makeArchive, startServer, startDaemon, desfs, run, tmp, DESFS } from './helpers.js'
import { SOCKET_NAME } from '../daemon/paths.js'

t.jobs = 1

const a = makeArchive(t)
const { server, tokenFile } = await startServer(t, a.root)
const env = { ...process.env, DESFS_CONFIG: '/nonexistent/desfs-config' }

t.test('a state dir others can enter is refused, with the chmod that fixes it', async (t) => {
  const dir = tmp(t)
  const state = join(dir, 'state')
  mkdirSync(state, { mode: 0o755 })
  chmodSync(state, 0o755)
  mkdirSync(join(dir, 'mnt'))
  const r = await desfs(
    [
      'mount',
      join(dir, 'mnt'),
      '--foreground',
      '--db',
      a.db,
      '--archive',
      server.archiveUrl,
      '--state-dir',
      state,
      '--cache-dir',
      join(dir, 'cache'),
    ],
    { env, timeoutMs: 30_000 },
  )
  t.equal(r.code, 3)
  t.equal(r.stderr.trim(), `desfs: state dir ${state} is accessible to other users (mode 755): run chmod 700 ${state}`)
  t.notOk(existsSync(join(state, SOCKET_NAME)), 'no socket was created')
})

t.test('one daemon per socket; status, metrics and reload answer there', async (t) => {
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--sql-timeout', '45s'] })
  const sock = join(d.stateDir, SOCKET_NAME)
  t.equal(statSync(d.stateDir).mode & 0o777, 0o700, 'state dir 0700')
  t.equal(statSync(sock).mode & 0o777, 0o600, 'socket 0600')

  await t.test('a second daemon on the same state dir is refused and the first goes on', async (t) => {
    const mnt2 = join(tmp(t), 'mnt2')
    mkdirSync(mnt2)
    const r = await desfs(
      [
        'mount',
        mnt2,
        '--foreground',
        '--db',
        a.db,
        '--archive',
        server.archiveUrl,
        '--state-dir',
        d.stateDir,
        '--cache-dir',
        join(d.stateDir, '..', 'cache2'),
      ],
      { env, timeoutMs: 30_000 },
    )
    t.equal(r.code, 3)
    t.equal(
      r.stderr.trim(),
      `desfs: another desfs daemon is running with this state dir (socket ${sock}): stop it with desfs umount, or use another --state-dir`,
    )
    const s = await desfs(['status', '--json', '--state-dir', d.stateDir], { env })
    t.equal(s.code, 0, 'the first daemon still answers')
    t.equal(JSON.parse(s.stdout).pid, d.child.pid)
  })

  await t.test('status: the human summary and the JSON for scripts', async (t) => {
    const j = await desfs(['status', '--json', '--state-dir', d.stateDir], { env })
    t.equal(j.code, 0)
    const s = JSON.parse(j.stdout)
    t.match(s, {
      pid: d.child.pid,
      mountpoint: d.mnt,
      ready: true,
      db: a.db,
      dbFile: { bytes: statSync(a.db).size },
      tree: { table: 'Y6A2_FILE_ARCHIVE_INFO', files: a.manifest.files.length + a.manifest.missing.length },
      token: { source: tokenFile, expires: /^\d{4}-\d\d-\d\dT/ },
      cache: { dir: d.cacheDir },
      sql: { running: 0, timeoutMs: 45_000 },
      settings: {
        db: { value: a.db, source: 'flag --db' },
        sql_timeout: { value: '45s', source: 'flag --sql-timeout' },
        log_level: { value: 'info', source: 'default' },
      },
    })
    const h = await desfs(['status', '--state-dir', d.stateDir], { env })
    t.equal(h.code, 0)
    t.match(h.stdout, new RegExp(`^mounted     ${d.mnt} \\(pid ${d.child.pid}, up `))
    t.match(h.stdout, /\nmetadata    .*metadata\.db \(\d+(\.\d+)? KiB, modified \d{4}-/)
    t.match(
      h.stdout,
      new RegExp(
        `\\ntree        ${a.manifest.files.length + a.manifest.missing.length} files in \\d+ directories from Y6A2_FILE_ARCHIVE_INFO\\n`,
      ),
    )
    t.match(h.stdout, /\ntoken       .*bearer_token.*, expires in \d/)
    t.match(h.stdout, /\nsql         0 running, \d+ served, timeout 45s\n/)
    t.match(h.stdout, /\nevent loop  lag p99 \d+(\.\d)? ms, max \d+(\.\d)? ms since the last status or metrics read\n/)
    t.match(h.stdout, /\n  sql_timeout     45s\s+flag --sql-timeout\n/)
  })

  await t.test('metrics: Prometheus text with the SQL and FUSE counters', async (t) => {
    await run('cat', [join(d.mnt, a.manifest.files[0]!.rel)], { timeoutMs: 30_000 })
    await desfs(['sql', '--state-dir', d.stateDir, '-c', 'SELECT count(*) FROM Y6A2_IMAGE'], { env })
    await desfs(['sql', '--state-dir', d.stateDir, '-c', 'DELETE FROM Y6A2_IMAGE'], { env })
    const m = await desfs(['metrics', '--state-dir', d.stateDir], { env })
    t.equal(m.code, 0, m.stderr)
    const lines = m.stdout.trim().split('\n')
    const bad = lines.filter(
      (l) =>
        !/^# (HELP|TYPE) [a-z_][a-z0-9_]* /.test(l) && !/^[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$/.test(l),
    )
    t.same(bad, [], 'every line is a comment or a sample')
    t.match(m.stdout, /# TYPE desfs_sql_queries_total counter\n/)
    t.match(m.stdout, /\ndesfs_sql_queries_total\{outcome="ok"\} 1\n/)
    t.match(m.stdout, /\ndesfs_sql_queries_total\{outcome="refused"\} 1\n/)
    t.match(m.stdout, /\ndesfs_sql_rows_total 1\n/)
    t.match(m.stdout, /\ndesfs_sql_query_seconds_count 2\n/)
    t.match(m.stdout, /\ndesfs_fuse_ops_total\{op="read"\} [1-9]/)
    t.match(m.stdout, /\ndesfs_fuse_bytes_served_total [1-9]/)
    t.match(m.stdout, /\ndesfs_token_expiry_seconds [1-9]\d{9}\n/)
    const again = await desfs(['metrics', '--state-dir', d.stateDir], { env })
    const reads = (text: string) => Number(/\ndesfs_fuse_ops_total\{op="read"\} (\d+)/.exec(text)![1])
    t.equal(reads(again.stdout), reads(m.stdout), 'a second scrape does not count the FUSE ops again')
  })

  await t.test('reload re-reads the token and notices a replaced DB', async (t) => {
    const r = await desfs(['reload', '--json', '--state-dir', d.stateDir], { env })
    t.equal(r.code, 0, r.stderr)
    t.match(JSON.parse(r.stdout), { token: { source: tokenFile, expires: /^\d{4}-/ }, db: { path: a.db, present: true, changed: false } })
    // Replace the DB the way a download does (a new file renamed over the old), with one more table.
    const fresh = a.db + '.new'
    copyFileSync(a.db, fresh)
    const w = new Database(fresh)
    w.exec('CREATE TABLE Y6A2_NEW_TABLE (X INTEGER)')
    w.close()
    renameSync(fresh, a.db)
    const h = await desfs(['reload', '--state-dir', d.stateDir], { env })
    t.equal(h.code, 0, h.stderr)
    t.match(h.stdout, /metadata    .*metadata\.db: changed on disk; queries now use the new file/)
    const q = await desfs(['sql', '--state-dir', d.stateDir, '-c', 'find_tables NEW'], { env })
    t.match(q.stdout, /Y6A2_NEW_TABLE/, 'queries see the new DB')
  })

  await t.test('a stale socket left by a crash is removed by the next daemon', async (t) => {
    d.child.kill('SIGKILL')
    await d.exited
    t.ok(existsSync(sock), 'the crashed daemon left its socket behind')
    const r = await desfs(['status', '--state-dir', d.stateDir], { env })
    t.equal(r.code, 4, 'status: no daemon (exit 4)')
    t.equal(r.stderr.trim(), `desfs: no desfs daemon is running (no socket at ${sock}): start one with desfs mount`)
    await run('fusermount', ['-uz', d.mnt], { timeoutMs: 10_000 })
    const d2 = await startDaemon(t, {
      db: a.db,
      archive: server.archiveUrl,
      tokenFile,
      stateDir: d.stateDir,
      cacheDir: d.cacheDir,
      mnt: d.mnt,
    })
    const s = await desfs(['status', '--json', '--state-dir', d.stateDir], { env })
    t.equal(s.code, 0)
    t.equal(JSON.parse(s.stdout).pid, d2.child.pid, 'the new daemon owns the socket')
    t.notMatch(d2.log(), /another desfs daemon/)
  })
})

t.test(
  'another user cannot reach the socket',
  { skip: process.getuid?.() !== 0 && 'needs root to run a command as nobody (setpriv)' },
  async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    const sock = join(d.stateDir, SOCKET_NAME)
    // env -i: the test runner adds its own hooks to the environment of the processes a test starts.
    const asNobody = (args: string[]) =>
      run(
        'setpriv',
        [
          '--reuid=nobody',
          '--regid=nogroup',
          '--clear-groups',
          '--',
          'env',
          '-i',
          'HOME=/tmp',
          'DESFS_CONFIG=/nonexistent',
          process.execPath,
          ...args,
        ],
        { timeoutMs: 30_000 },
      )
    const probe = `require('net').connect(process.argv[1]).on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(1) })`
    // The state dir (0700) stops nobody first; with the dir opened up, the socket's own 0600 still does.
    const viaDir = await asNobody(['-e', probe, sock])
    t.equal(viaDir.stdout.trim(), 'EACCES', 'the private state dir keeps nobody out')
    chmodSync(d.stateDir, 0o711)
    try {
      const viaSocket = await asNobody(['-e', probe, sock])
      t.equal(viaSocket.stdout.trim(), 'EACCES', 'the 0600 socket keeps nobody out')
      const cli = await asNobody([DESFS, 'status', '--state-dir', d.stateDir])
      t.equal(cli.code, 4)
      t.equal(cli.stderr.trim(), `desfs: permission denied on ${sock}: the daemon belongs to another user`)
      const sql = await asNobody([DESFS, 'sql', '--state-dir', d.stateDir, '-c', 'SELECT 1'])
      t.equal(sql.code, 4, "desfs sql does not fall back to the DB when the daemon is another user's")
      t.match(sql.stderr, /permission denied on .*desfs\.sock/)
    } finally {
      chmodSync(d.stateDir, 0o700)
    }
    const mine = await desfs(['status', '--state-dir', d.stateDir], { env })
    t.equal(mine.code, 0, 'the owner still gets in')
  },
)
