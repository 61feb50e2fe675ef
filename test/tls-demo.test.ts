// The archive over TLS (a certificate made here, given with --ca-file), and `desfs demo` from start to
// Ctrl-C, as a newcomer runs it.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DESFS, localCert, makeArchive, needTool, run, sourceBytes, startDaemon, startServer, tmp, until } from './helpers.js'
import { mountedType } from '../fs/mount.js'
import { fileURLToPath } from 'node:url'
import { desfsCommand } from '../bin/how-to-run.js'

t.jobs = 1

t.test('an https archive with its own CA: reads work with --ca-file, and fail clearly without', async (t) => {
  const made = await localCert(t)
  if (!made) return
  const { keyFile: key, certFile: cert } = made
  const a = makeArchive(t, { hostile: false })
  const { server, tokenFile } = await startServer(t, a.root, { tls: { key: readFileSync(key), cert: readFileSync(cert) } })
  t.match(server.archiveUrl, /^https:\/\/127\.0\.0\.1:\d+\//)
  const file = a.manifest.files.find((f) => f.kind === 'red_immask')!.rel

  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--ca-file', cert] })
  const md5 = await run('md5sum', [join(d.mnt, file)])
  t.equal(
    md5.stdout.slice(0, 32),
    createHash('md5').update(sourceBytes(a, file)).digest('hex'),
    'read over TLS (door and pool) with the right bytes',
  )
  t.ok(
    server.log.some((x) => x.port === 'pool' && x.method === 'GET'),
    'through the pool redirect',
  )
  await d.stop()

  const bad = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--read-timeout', '5s'] })
  const s = await run('stat', [join(bad.mnt, file)], { timeoutMs: 30_000 })
  t.not(s.code, 0, 'without the CA the archive is not trusted')
  t.match(s.stderr, /Input\/output error/)
  t.match(bad.log(), /TLS error .*--ca-file/, 'the log names the fix')
})

t.test('the demo prints desfs commands that work as typed', async (t) => {
  const dir = tmp(t)
  const script = realpathSync(DESFS)
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const other = join(dir, 'other-bin')
  mkdirSync(other)
  writeFileSync(join(other, 'desfs'), '#!/bin/sh\necho another desfs\n', { mode: 0o755 })
  const linked = join(dir, 'linked-bin')
  mkdirSync(linked)
  symlinkSync(script, join(linked, 'desfs'))
  const elsewhere = join(dir, 'work')
  mkdirSync(elsewhere)
  t.equal(desfsCommand({ script, env: { PATH: '/nonexistent' }, cwd: root }), 'npx desfs', 'not on PATH, in the package: npx desfs')
  t.equal(
    desfsCommand({ script, env: { PATH: '/nonexistent' }, cwd: elsewhere }),
    `node ${script}`,
    'not on PATH, elsewhere: node and the full path',
  )
  t.equal(desfsCommand({ script, env: { PATH: other }, cwd: root }), 'npx desfs', 'another desfs on the PATH is not this one')
  t.equal(desfsCommand({ script, env: { PATH: `${other}-none:${linked}` }, cwd: elsewhere }), 'desfs', 'this desfs on the PATH: desfs')
  t.equal(
    desfsCommand({ script, env: { PATH: linked, npm_command: 'exec' }, cwd: root }),
    'npx desfs',
    'run by npx, whose PATH the shell lacks',
  )
  t.equal(
    desfsCommand({ script: '/opt/my tools/dist/bin/desfs.js', env: {}, cwd: elsewhere }),
    "node '/opt/my tools/dist/bin/desfs.js'",
    'quoted for the shell',
  )
})

t.test('desfs demo: mounts a generated archive, reads work, Ctrl-C cleans up', async (t) => {
  // Run from a directory of its own, with no desfs on the PATH: how a newcomer who ran `npm ci`
  // elsewhere would, so its hints must not say a bare `desfs`.
  const cwd = tmp(t)
  const env = {
    ...process.env,
    DESFS_CONFIG: '/nonexistent',
    PATH: (process.env.PATH ?? '')
      .split(':')
      .filter((d) => !existsSync(join(d, 'desfs')))
      .join(':'),
  }
  const child = spawn(process.execPath, [DESFS, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'], env, cwd })
  let out = ''
  child.stdout!.on('data', (c: Buffer) => (out += c))
  child.stderr!.on('data', (c: Buffer) => (out += c))
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  t.ok(await until(() => /Press Ctrl-C to stop/.test(out), 60_000), 'the demo says it is ready')
  const dir = /generating a DES-like archive in (\S+) \.\.\./.exec(out)?.[1]
  const mnt = /Mounted \d+ files at (\S+)/.exec(out)?.[1]
  t.ok(dir && mnt, 'it names its directory and mountpoint')
  const fitsverify = /fitsverify (\S+)/.exec(out)?.[1]
  const ls = /ls -l (\S+)/.exec(out)?.[1]
  t.equal((await run('ls', ['-l', ls!])).code, 0, 'the suggested ls works')
  if (needTool(t, 'fitsverify', 'fitsverify')) {
    const v = await run('fitsverify', ['-q', fitsverify!])
    t.match(v.stdout, /verification OK/, 'the suggested fitsverify passes')
  }
  const status = /^ {2}(.* status --state-dir \S+)$/m.exec(out)?.[1]
  t.ok(status, 'it suggests desfs status')
  const typed = await run('sh', ['-c', status!], { env, cwd })
  t.equal(typed.code, 0, `the status hint works as typed: ${status}\n${typed.stderr}`)
  t.match(typed.stdout, /^mounted\s+\S*DESDATA/)
  t.match(
    out,
    /\nThe demo DB also has \d+ deliberately malformed rows; desfs leaves them out, as it would in a real DB \(the status command below lists them\)\.\n/,
    'its hostile rows: one calm line',
  )
  t.notMatch(out, /metadata rows refused|skipped \d+ rows/, 'not the long warning')
  const firstScreen = out.slice(0, out.indexOf('Press Ctrl-C to stop'))
  t.same(
    firstScreen.split('\n').filter((l) => / warn /.test(l)),
    [],
    'no warnings on the first screen',
  )
  child.kill('SIGINT')
  t.equal(
    await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 30_000).unref())]),
    0,
    'Ctrl-C ends it with status 0',
  )
  t.notOk(await mountedType(mnt!), 'unmounted')
  t.notOk(existsSync(dir!), 'its generated directory is removed')
})
