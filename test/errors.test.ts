// Bad input and bad weather: every problem is one clear line (or EIO with a log line), never a hang
// or a stack trace.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { createServer, type Socket } from 'node:net'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, desfs, tmp, until, killLeavingStaleMount } from './helpers.js'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { mountedType } from '../fs/mount.js'

t.jobs = 1

/** desfs mount in the foreground with settings that must make it refuse to start. */
async function refusedMount(t: Test, args: string[]) {
  const dir = tmp(t)
  const mnt = join(dir, 'mnt')
  mkdirSync(mnt)
  const r = await desfs(
    [
      'mount',
      '--foreground',
      '--state-dir',
      join(dir, 'state'),
      '--cache-dir',
      join(dir, 'cache'),
      ...args.map((a) => a.replace('$MNT', mnt)),
    ],
    {
      timeoutMs: 30_000,
      env: { ...process.env, DESFS_CONFIG: join(dir, 'none') },
    },
  )
  return { r, mnt, dir }
}

function oneClearLine(t: Test, stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${stderr.trim()}`)
  t.match(lines[0], pattern)
  t.notMatch(stderr, /\n\s+at /, 'no stack trace')
}

t.test('start-up problems are one line with the fix', async (t) => {
  const a = makeArchive(t, { hostile: false })

  await t.test('missing DB', async (t) => {
    const { r } = await refusedMount(t, ['$MNT', '--db', '/nonexistent/metadata.db', '--archive', 'http://127.0.0.1:9'])
    t.equal(r.code, 3)
    oneClearLine(t, r.stderr, /metadata DB not found at \/nonexistent\/metadata\.db: download it with `desfs db download`/)
  })

  await t.test('DB without the file table', async (t) => {
    const dir = tmp(t)
    const db = join(dir, 'other.db')
    const sql = new Database(db)
    sql.exec('CREATE TABLE Y6A2_IMAGE (FILENAME TEXT)')
    sql.close()
    const { r } = await refusedMount(t, ['$MNT', '--db', db, '--archive', 'http://127.0.0.1:9'])
    t.equal(r.code, 3)
    oneClearLine(
      t,
      r.stderr,
      /has no usable file table \(looked for a table named like Y6A2_FILE_ARCHIVE_INFO.*found Y6A2_IMAGE\).*--tree-query/,
    )
  })

  await t.test('a file that is not SQLite', async (t) => {
    const dir = tmp(t)
    const db = join(dir, 'metadata.db')
    writeFileSync(db, 'this is not a database\n'.repeat(100))
    const { r } = await refusedMount(t, ['$MNT', '--db', db, '--archive', 'http://127.0.0.1:9'])
    t.equal(r.code, 3)
    oneClearLine(t, r.stderr, /is not a readable SQLite database .*re-download it/)
  })

  await t.test('non-existent mountpoint', async (t) => {
    const { r } = await refusedMount(t, ['/nonexistent/DESDATA', '--db', a.db, '--archive', 'http://127.0.0.1:9'])
    t.equal(r.code, 3)
    oneClearLine(t, r.stderr, /mountpoint \/nonexistent\/DESDATA does not exist: create it with mkdir -p/)
  })

  await t.test('no mountpoint at all', async (t) => {
    const env = { ...process.env }
    delete env.DESDATA
    const r = await desfs(['mount', '--db', a.db], { env, timeoutMs: 30_000 })
    t.equal(r.code, 2)
    oneClearLine(t, r.stderr, /no mountpoint: give one \(desfs mount DIR\) or set DESDATA/)
  })

  await t.test('a bad flag', async (t) => {
    const r = await desfs(['mount', '--no-such-flag'], { timeoutMs: 30_000 })
    t.equal(r.code, 2)
    oneClearLine(t, r.stderr, /Unknown option '--no-such-flag'.*desfs mount --help/)
  })

  await t.test('a bad cache size', async (t) => {
    const { r } = await refusedMount(t, ['$MNT', '--db', a.db, '--cache-size', 'lots'])
    t.equal(r.code, 2)
    oneClearLine(t, r.stderr, /cache_size \(from flag --cache-size\): 'lots' is not a size/)
  })
})

t.test('archive trouble gives EIO within the deadline, with a log line', async (t) => {
  const a = makeArchive(t, { hostile: false })
  const file = a.manifest.files.find((f) => f.kind === 'red_immask')!.rel

  await t.test('archive unreachable', async (t) => {
    // A port that refuses connections.
    const d = await startDaemon(t, {
      db: a.db,
      archive: 'http://127.0.0.1:9/des/persistent/DESDM_ARCHIVE',
      flags: ['--read-timeout', '5s'],
    })
    const t0 = Date.now()
    const r = await run('cat', [join(d.mnt, file)], { timeoutMs: 30_000 })
    t.not(r.code, 0)
    t.match(r.stderr, /Input\/output error/)
    t.ok(Date.now() - t0 < 15_000, 'answered well within the deadline')
    t.match(d.log(), /connection refused/)
  })

  await t.test('archive that accepts connections and never answers', async (t) => {
    const sockets = new Set<Socket>()
    const silent = createServer((s) => sockets.add(s))
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()))
    t.teardown(() => {
      for (const s of sockets) s.destroy()
      silent.close()
    })
    const port = (silent.address() as { port: number }).port
    const d = await startDaemon(t, {
      db: a.db,
      archive: `http://127.0.0.1:${port}/des/persistent/DESDM_ARCHIVE`,
      flags: ['--read-timeout', '3s'],
    })
    const t0 = Date.now()
    const r = await run('stat', ['-c', '%s', join(d.mnt, file)], { timeoutMs: 30_000 })
    const waited = Date.now() - t0
    t.not(r.code, 0, 'stat fails')
    t.match(r.stderr, /Input\/output error/)
    t.ok(waited >= 2500 && waited < 12_000, `EIO after the 3s deadline, not a hang (${waited} ms)`)
    t.match(d.log(), /timed out|no answer within|no response headers/)
  })

  await t.test('token missing, then rejected', async (t) => {
    const { server } = await startServer(t, a.root)
    const dir = tmp(t)
    const tokenFile = join(dir, 'bearer_token')
    // No token file at all: reads fail with a log line saying what to run.
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--read-timeout', '5s'] })
    const r = await run('cat', [join(d.mnt, file)], { timeoutMs: 30_000 })
    t.not(r.code, 0)
    t.match(r.stderr, /Input\/output error/)
    t.match(d.log(), /HTTP 401.*bearer token is missing, expired or rejected: run `htgettoken/)
    t.notMatch(d.log(), /eyJ/, 'no token text in the log')
    // A token the archive does not accept.
    writeTokenFile(tokenFile, makeToken({ sub: 'intruder' }))
    await until(() => d.log().includes('bearer token loaded'), 10_000)
    const r2 = await run('head', ['-c', '100', join(d.mnt, file)], { timeoutMs: 30_000 })
    t.not(r2.code, 0)
    t.match(r2.stderr, /Input\/output error/)
    t.notMatch(d.log(), /eyJ/, 'still no token text in the log')
  })
})

t.test('lifecycle: signals unmount, a stale mount is recovered, mount/status/umount in the background', async (t) => {
  const a = makeArchive(t, { hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const file = a.manifest.files[0]!.rel

  await t.test('SIGTERM and SIGINT unmount cleanly', async (t) => {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
      t.equal(await d.stop(sig), 0, `exit code 0 after ${sig}`)
      t.notOk(await mountedType(d.mnt), `nothing mounted after ${sig}`)
    }
  })

  await t.test('a daemon killed with SIGKILL leaves a stale mount the next start recovers', async (t) => {
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    await killLeavingStaleMount(d)
    const stale = await run('ls', [d.mnt])
    t.match(stale.stderr, /Transport endpoint is not connected/, 'the old mount is stale')
    const d2 = await startDaemon(t, {
      db: a.db,
      archive: server.archiveUrl,
      tokenFile,
      mnt: d.mnt,
      stateDir: d.stateDir,
      cacheDir: d.cacheDir,
    })
    const r = await run('cmp', [join(d2.mnt, file), join(a.root, file)])
    t.equal(r.code, 0, 'the new mount serves the right bytes')
    t.match(d2.log(), /stale mount/)
  })

  await t.test('desfs mount in the background, status, umount', async (t) => {
    const dir = tmp(t)
    const mnt = join(dir, 'DESDATA')
    mkdirSync(mnt)
    const env = {
      ...process.env,
      DESFS_CONFIG: join(dir, 'none'),
      DESFS_STATE_DIR: join(dir, 'state'),
      DESFS_CACHE_DIR: join(dir, 'cache'),
      DESDATA: mnt,
      DES_ARCHIVE_ACCESS_DB: a.db,
      DES_ARCHIVE_ACCESS_ARCHIVE: server.archiveUrl,
      DESFS_TOKEN_FILE: tokenFile,
    }
    t.teardown(() => run('fusermount', ['-uz', mnt]))
    const m = await desfs(['mount'], { env, timeoutMs: 60_000 })
    t.equal(m.code, 0, m.stderr)
    t.match(m.stdout, new RegExp(`mounted ${mnt} \\(\\d+ files; log `))
    const s = await desfs(['status'], { env })
    t.equal(s.code, 0, s.stderr)
    t.match(s.stdout, new RegExp(`mounted\\s+${mnt}`))
    t.match(s.stdout, /db\s+\S+metadata\.db\s+env DES_ARCHIVE_ACCESS_DB/, 'status says where each setting came from')
    const j = await desfs(['status', '--json'], { env })
    t.equal(JSON.parse(j.stdout).mountpoint, mnt)
    const r = await run('cmp', [join(mnt, file), join(a.root, file)])
    t.equal(r.code, 0, 'reads work')
    const u = await desfs(['umount'], { env, timeoutMs: 30_000 })
    t.equal(u.code, 0, u.stderr)
    t.notOk(await mountedType(mnt), 'unmounted')
    const s2 = await desfs(['status'], { env })
    t.equal(s2.code, 4, 'status without a daemon exits 4')
    t.match(s2.stderr, /no desfs daemon is running/)
  })
})
