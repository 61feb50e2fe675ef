// What a person sees for the bad input of issue 15 (items 4, 6, 7, 8, 11): one line naming the
// problem and the fix and a non-zero exit, through the real CLI; and a detached daemon whose command
// line repeats none of the settings it was given.
import t, { type Test } from 'tap'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { desfs, makeArchive, run, startServer, tmp, until } from './helpers.js'
import { mountedType } from '../fs/mount.js'
import { call, socketPath } from '../bin/client.js'

t.jobs = 1

function oneClearLine(t: Test, stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${stderr.trim()}`)
  t.match(lines[0], pattern)
  t.notMatch(stderr, /internal error|\n\s+at /, 'no internal error, no stack trace')
}

const a = makeArchive(t, { hostile: false })
const dir = tmp(t)
const env: NodeJS.ProcessEnv = { ...process.env, DESFS_CONFIG: join(dir, 'no-config'), HOME: dir, DES_ARCHIVE_ACCESS_DIR: join(dir, 'daa') }
for (const k of ['BEARER_TOKEN', 'BEARER_TOKEN_FILE', 'DESFS_TOKEN_FILE', 'DES_ARCHIVE_ACCESS_ARCHIVE', 'DESFS_STATE_DIR']) delete env[k]

/** `desfs mount --foreground` with these flags, which must refuse to start. */
async function refusedMount(t: Test, flags: string[]) {
  const d = tmp(t)
  mkdirSync(join(d, 'mnt'))
  return desfs(
    ['mount', join(d, 'mnt'), '--foreground', '--db', a.db, '--state-dir', join(d, 'state'), '--cache-dir', join(d, 'cache'), ...flags],
    { env, timeoutMs: 30_000 },
  )
}

t.test('archive URLs: credentials, a query string or a fragment are refused at once', async (t) => {
  let r = await refusedMount(t, ['--archive', 'http://alice:s3cret-pw@127.0.0.1:9/des'])
  t.equal(r.code, 2)
  oneClearLine(
    t,
    r.stderr,
    /archive \(from flag --archive\): 'http:\/\/\*\*\*@127\.0\.0\.1:9\/des' holds a user name or password: .*--token-file FILE/,
  )
  t.notMatch(r.stdout + r.stderr, /s3cret-pw/, 'the password is not repeated')
  r = await desfs(['mount', join(dir, 'nowhere'), '--foreground', '--db', a.db], {
    env: { ...env, DES_ARCHIVE_ACCESS_ARCHIVE: 'http://127.0.0.1:9/des?x=1' },
    timeoutMs: 30_000,
  })
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /archive \(from env DES_ARCHIVE_ACCESS_ARCHIVE\): 'http:\/\/127\.0\.0\.1:9\/des\?x=1' has a query string/)
  r = await refusedMount(t, ['--archive', 'http://127.0.0.1:9/des#x'])
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /has a fragment/)
})

t.test('durations out of range: one line with the setting and its range', async (t) => {
  let r = await refusedMount(t, ['--archive', 'http://127.0.0.1:9/des', '--read-timeout', '0'])
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /read_timeout \(from flag --read-timeout\): '0' is out of range: use 1s to 1h/)
  r = await refusedMount(t, ['--archive', 'http://127.0.0.1:9/des', '--stall-timeout', '30d'])
  oneClearLine(t, r.stderr, /stall_timeout .*'30d' is out of range: use 1s to 1h/)
  r = await refusedMount(t, ['--archive', 'http://127.0.0.1:9/des', '--sql-timeout', '30d'])
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /sql_timeout .*'30d' is out of range: use 100ms to 24h, or 0 for none/)
  r = await desfs(['sql', '--db', a.db, '--timeout', '30d', '-c', 'SELECT 1'], { env, timeoutMs: 30_000 })
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /--timeout: '30d' is out of range: use 100ms to 24h, or 0 for none/)
  r = await desfs(['sql', '--db', a.db, '--timeout', '0', '-c', 'SELECT 1'], { env, timeoutMs: 30_000 })
  t.equal(r.code, 0, '--timeout 0 still means none')
})

t.test('token status: a token file with two lines, or a directory, is not OK', async (t) => {
  const tok = makeToken()
  const twoLines = join(dir, 'two', 'tok')
  writeTokenFile(twoLines, `${tok}\n${tok}`)
  let r = await desfs(['token', 'status', '--token-file', twoLines], { env, timeoutMs: 30_000 })
  t.equal(r.code, 4, 'exit 4: no usable token')
  t.match(r.stdout, /NONE USABLE: token file .*two\/tok holds more than one token \(a line break inside it\)/)
  t.notMatch(r.stdout + r.stderr, /eyJ/, 'the token is never printed')
  const asDir = join(dir, 'tokdir')
  mkdirSync(asDir, { mode: 0o755 })
  r = await desfs(['token', 'status', '--token-file', asDir], { env, timeoutMs: 30_000 })
  t.equal(r.code, 4)
  t.match(r.stdout, /token file .*tokdir is a directory: point --token-file/)
  t.notMatch(r.stdout, /readable by group\/others/)
})

t.test('sql output and get paths: one line each, not an internal error or a quiet 0 files', async (t) => {
  const work = tmp(t)
  mkdirSync(join(work, 'out.fits'))
  let r = await run(
    process.execPath,
    [join(import.meta.dirname, '../bin/desfs.js'), 'sql', '--db', a.db, '-c', 'SELECT 1 AS x; > out.fits'],
    { env, cwd: work, timeoutMs: 30_000 },
  )
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /cannot write out\.fits: it is a directory; name a file, e\.g\. out\.fits\/result\.fits/)
  r = await desfs(['sql', '--db', a.db, '-c', 'SELECT 1 AS x; >'], { env, timeoutMs: 30_000 })
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /'>' after the statement needs a file name/)
  r = await desfs(
    [
      'get',
      '../../etc/passwd',
      '--desdata',
      join(work, 'DESDATA'),
      '--state-dir',
      join(work, 'state'),
      '--cache-dir',
      join(work, 'cache'),
      '--archive',
      'http://127.0.0.1:9/des',
    ],
    { env, timeoutMs: 30_000 },
  )
  t.equal(r.code, 2, 'a usage error, not exit 0')
  oneClearLine(t, r.stderr, /not a path inside the archive tree: \.\.\/\.\.\/etc\/passwd \('\.' or '\.\.' segment\)/)
  t.equal(r.stdout, '', 'nothing placed')
})

t.test("a detached daemon's command line holds none of its settings", async (t) => {
  const { server, tokenFile } = await startServer(t, a.root)
  const d = tmp(t)
  const mnt = join(d, 'DESDATA')
  const state = join(d, 'state')
  mkdirSync(mnt)
  const r = await desfs(
    [
      'mount',
      mnt,
      '--db',
      a.db,
      '--archive',
      server.archiveUrl,
      '--state-dir',
      state,
      '--cache-dir',
      join(d, 'cache'),
      '--token-file',
      tokenFile,
    ],
    { env, timeoutMs: 60_000 },
  )
  t.teardown(async () => {
    await desfs(['umount', mnt, '--state-dir', state], { env, timeoutMs: 30_000 })
    if (await mountedType(mnt)) await run('fusermount', ['-uz', mnt], { timeoutMs: 10_000 })
  })
  t.equal(r.code, 0, r.stderr)
  const s = await desfs(['status', '--json', '--state-dir', state], { env, timeoutMs: 30_000 })
  const status = JSON.parse(s.stdout) as { pid: number; archive: string }
  t.equal(status.archive, server.archiveUrl, 'the daemon got its settings')
  const cmdline = readFileSync(`/proc/${status.pid}/cmdline`, 'utf8').split('\0').join(' ')
  for (const secretish of [server.archiveUrl, a.db, tokenFile, state])
    t.notOk(cmdline.includes(secretish), `not on the command line: ${secretish}`)
  // The daemon refuses a get outside the archive tree as well (the CLI checks first; this is for
  // anything else that talks to the socket).
  await t.rejects(
    call(socketPath(state), 'POST', '/get', { paths: ['OPS/../../etc/passwd'], desdata: join(d, 'copy') }, { timeoutMs: 30_000 }),
    /not a path inside the archive tree: OPS\/\.\.\/\.\.\/etc\/passwd/,
  )
  await desfs(['umount', mnt, '--state-dir', state], { env, timeoutMs: 30_000 })
  t.ok(await until(async () => !(await mountedType(mnt)), 15_000), 'unmounted')
})
