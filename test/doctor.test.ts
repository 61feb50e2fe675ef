// desfs doctor: one line per check with OK/WARN/FAIL and the fix, exit 1 when something fails. Run
// against the test archive with a good setup, then with each piece broken.
import t from 'tap'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { desfs, makeArchive, startDaemon, startServer, tmp } from './helpers.js'
import { resolveSettings } from '../daemon/config.js'
import { withDaemonSettings } from '../bin/doctor.js'

const CHECKS = ['fuse device', 'fusermount', 'libfuse', 'token', 'metadata DB', 'archive', 'cache dir', 'state dir']

t.test('desfs doctor', async (t) => {
  const a = makeArchive(t, { hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const dir = tmp(t)
  const env = { ...process.env, HOME: dir, DESFS_CONFIG: join(dir, 'none'), DES_ARCHIVE_ACCESS_DIR: join(dir, 'daa') }
  const args = (o: { db?: string; archive?: string; token?: string; cache?: string; state?: string } = {}) => [
    'doctor',
    '--db',
    o.db ?? a.db,
    '--archive',
    o.archive ?? server.archiveUrl,
    '--token-file',
    o.token ?? tokenFile,
    '--cache-dir',
    o.cache ?? join(dir, 'cache'),
    '--state-dir',
    o.state ?? join(dir, 'state'),
  ]
  const line = (out: string, name: string) => out.split('\n').find((l) => l.slice(5).startsWith(name + ' ')) ?? ''

  await t.test('a good setup passes every check', async (t) => {
    const r = await desfs(args(), { env })
    t.equal(r.code, 0, `exit 0:\n${r.stdout}${r.stderr}`)
    for (const c of CHECKS) t.match(line(r.stdout, c), /^OK   /, `${c}: OK`)
    t.match(line(r.stdout, 'token'), /subject desfs-demo-user\), expires in 59m/)
    t.match(line(r.stdout, 'metadata DB'), /files from Y6A2_FILE_ARCHIVE_INFO/)
    t.match(line(r.stdout, 'archive'), /answers \(HTTP 207\)/)
    t.match(line(r.stdout, 'cache dir'), /created on first mount.*free/)
    t.equal(server.count('PROPFIND'), 1, 'one PROPFIND of the archive root')
    const j = JSON.parse((await desfs([...args(), '--json'], { env })).stdout) as { name: string; status: string }[]
    t.same(
      j.map((c) => c.name),
      CHECKS,
    )
  })

  await t.test('each broken piece is a FAIL line with its fix, and the exit code says so', async (t) => {
    const expired = join(dir, 'expired', 'tok')
    writeTokenFile(expired, makeToken({}, -60))
    const notDb = join(dir, 'not.db')
    writeFileSync(notDb, 'not a database\n'.repeat(200))
    const loose = join(dir, 'loose-cache')
    mkdirSync(loose, { mode: 0o755 })
    chmodSync(loose, 0o755)
    const r = await desfs(args({ token: expired, db: notDb, cache: loose }), { env })
    t.equal(r.code, 1, 'exit 1')
    t.match(line(r.stdout, 'token'), /^FAIL token\s+.*expired 1m\d\ds ago -> fix: run `htgettoken/)
    t.match(line(r.stdout, 'metadata DB'), /^FAIL .*not a readable SQLite database.* -> fix: desfs db download --force/)
    t.match(line(r.stdout, 'archive'), /^FAIL .*rejects the token \(HTTP 401\) -> fix: run `htgettoken/)
    t.match(line(r.stdout, 'cache dir'), new RegExp(`^FAIL .*mode 755\\): run chmod 700 ${loose}`))
    t.match(line(r.stdout, 'state dir'), /^OK /, 'the rest still checked')
  })

  await t.test('a token file others can read, a missing DB, an unreachable archive', async (t) => {
    const open = join(dir, 'open', 'tok')
    writeTokenFile(open, makeToken())
    chmodSync(open, 0o644)
    const r = await desfs(args({ token: open, db: join(dir, 'missing.db'), archive: 'http://127.0.0.1:9/des' }), { env, timeoutMs: 60_000 })
    t.equal(r.code, 1)
    t.match(line(r.stdout, 'token'), new RegExp(`^FAIL .*readable by group/others \\(mode 644\\): run chmod 600 ${open}`))
    t.match(line(r.stdout, 'metadata DB'), /^FAIL .*not found at .*missing\.db -> fix: desfs db download \(/)
    t.match(line(r.stdout, 'archive'), /^FAIL .*connection refused/)
  })

  await t.test('a token file with two lines, or a directory, is a FAIL, not OK', async (t) => {
    const two = join(dir, 'two', 'tok')
    writeTokenFile(two, `${makeToken()}\n${makeToken()}`)
    let r = await desfs(args({ token: two }), { env })
    t.equal(r.code, 1)
    t.match(line(r.stdout, 'token'), /^FAIL .*holds more than one token \(a line break inside it\)/)
    t.notMatch(r.stdout, /eyJ/, 'the token is never printed')
    r = await desfs(args({ token: join(dir, 'two') }), { env })
    t.match(line(r.stdout, 'token'), /^FAIL .*two is a directory: point --token-file/)
  })

  await t.test('with a daemon running, its settings are checked, not the defaults', async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    // Only the state dir: archive, DB and token file come from the daemon (the defaults would be the
    // FNAL door and ~/.des_archive_access/desdm_pruned_indexed_files.db).
    const r = await desfs(['doctor', '--state-dir', d.stateDir], { env })
    t.equal(r.code, 0, `exit 0:\n${r.stdout}${r.stderr}`)
    t.match(line(r.stdout, 'settings'), new RegExp(`^OK .*running daemon \\(pid ${d.child.pid}\\)`))
    t.match(line(r.stdout, 'archive'), new RegExp(`^OK .*${server.archiveUrl} answers`))
    t.match(line(r.stdout, 'metadata DB'), new RegExp(`^OK .*${a.db}:`))
    t.match(line(r.stdout, 'token'), /^OK .*subject desfs-demo-user/)
    t.match(line(r.stdout, 'cache dir'), new RegExp(`^OK .*${d.cacheDir},`))
    const flagWins = await desfs(['doctor', '--state-dir', d.stateDir, '--archive', 'http://127.0.0.1:9/des'], { env, timeoutMs: 60_000 })
    t.match(line(flagWins.stdout, 'archive'), /^FAIL .*127\.0\.0\.1:9.*connection refused/, 'a flag given to doctor still wins')
  })
})

t.test("doctor takes the running daemon's settings, except where its own flags say otherwise", async (t) => {
  const local = resolveSettings({ 'state-dir': '/s', 'ca-file': '/mine/ca.pem' }, {})
  const merged = withDaemonSettings(local, {
    pid: 42,
    cwd: '/home/u',
    settings: {
      db: { value: 'dbs/metadata.db', source: 'flag --db' },
      archive: { value: 'http://127.0.0.1:8080/des', source: 'env DES_ARCHIVE_ACCESS_ARCHIVE' },
      ca_file: { value: '/theirs/ca.pem', source: 'flag --ca-file' },
      state_dir: { value: '/elsewhere', source: 'flag --state-dir' },
    },
  })
  t.same(merged.get('db'), { value: '/home/u/dbs/metadata.db', source: 'daemon pid 42, flag --db' }, "relative paths are the daemon's")
  t.equal(merged.get('archive')!.value, 'http://127.0.0.1:8080/des')
  t.equal(merged.get('ca_file')!.value, '/mine/ca.pem', 'a flag given to doctor wins')
  t.equal(merged.get('state_dir')!.value, '/s')
})
