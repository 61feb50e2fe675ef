// desfs doctor: one line per check with OK/WARN/FAIL and the fix, exit 1 when something fails. Run
// against the test archive with a good setup, then with each piece broken.
import t from 'tap'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeToken, writeTokenFile } from './archive/token.js'
import { desfs, makeArchive, startServer, tmp } from './helpers.js'

const CHECKS = ['fuse device', 'fusermount', 'libfuse', 'token', 'metadata DB', 'archive', 'cache dir', 'state dir']

t.test('desfs doctor', async (t) => {
  const a = makeArchive(t, { hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const dir = tmp(t)
  const env = { ...process.env, HOME: dir, DESFS_CONFIG: join(dir, 'none'), DES_ARCHIVE_ACCESS_DIR: join(dir, 'daa') }
  const args = (o: { db?: string; archive?: string; token?: string; cache?: string; state?: string } = {}) => [
    'doctor',
    '--db', o.db ?? a.db,
    '--archive', o.archive ?? server.archiveUrl,
    '--token-file', o.token ?? tokenFile,
    '--cache-dir', o.cache ?? join(dir, 'cache'),
    '--state-dir', o.state ?? join(dir, 'state'),
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
    t.same(j.map((c) => c.name), CHECKS)
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
})
