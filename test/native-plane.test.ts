// The native FUSE plane (fs/native/): cached bytes served without the event loop (pread in the
// plane's threads, or the kernel itself in passthrough), passthrough files safe across eviction, cache
// clear and a DB reload, kill -9 under concurrent readers leaving no hung mount, and a mount by a
// user who is not root (fusermount3, pread path).
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import Database from 'better-sqlite3'
import { createInterface } from 'node:readline'
import { randomReads } from './cache-helpers.js'
import {
  makeArchive,
  startServer,
  startDaemon,
  run,
  tmp,
  until,
  md5,
  sourceBytes,
  hasTool,
  PYTHON,
  DESFS,
  desfs,
  type DaemonFixture,
  skipBecause,
} from './helpers.js'
import { call, socketPath } from '../bin/client.js'
import { mountedType } from '../fs/mount.js'
import type { PlaneStats } from '../fs/native.js'
import { fileURLToPath } from 'node:url'

t.jobs = 1

const HOLD_READ = fileURLToPath(new URL('../../test/readers/hold_read.py', import.meta.url))
const HOOKS = { DESFS_TEST_HOOKS: '1' }

const plane = async (d: DaemonFixture) => (await call<{ plane: PlaneStats }>(socketPath(d.stateDir), 'GET', '/status')).plane

/** Reads a file through the mount with O_DIRECT, so the request reaches the plane whatever the page cache holds. */
const directRead = (path: string, timeoutMs: number) =>
  run('dd', [`if=${path}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none'], { timeoutMs })

t.test('cached reads are served while the event loop is blocked; an uncached one waits and succeeds', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, fpack: 'never', largeFileBytes: 8 << 20 })
  const { server, tokenFile } = await startServer(t, a.root)
  const big = a.manifest.largeFile!
  const other = a.manifest.files.find((f) => f.kind === 'red_immask')!.rel
  for (const passthrough of ['false', 'true']) {
    await t.test(`passthrough ${passthrough}`, async (t) => {
      const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--passthrough', passthrough], env: HOOKS })
      t.equal(
        (await run('cat', [join(d.mnt, big)], { binary: true })).stdout.length,
        readFileSync(join(a.root, big)).length,
        'the big file is read once (now cached)',
      )
      await until(async () => (await plane(d)).openHandles === 0, 10_000)
      const before = await plane(d)
      await call(socketPath(d.stateDir), 'POST', '/test/block-loop', { ms: 6000 })
      const cached = await directRead(join(d.mnt, big), 4500)
      t.equal(cached.code, 0, `a cached read completes while the loop is blocked (${cached.stderr.trim() || 'ok'})`)
      const uncached = await directRead(join(d.mnt, other), 60_000)
      t.equal(uncached.code, 0, 'an uncached read waits for the loop, then succeeds')
      const after = await plane(d)
      if (passthrough === 'true') t.ok(after.passthroughOpens > before.passthroughOpens, 'the cached file was opened in passthrough')
      else t.ok(after.nativeReadBytes - before.nativeReadBytes >= 8 << 20, 'the cached file was read by the plane (pread)')
      t.ok(after.toJavaScript > before.toJavaScript, 'the uncached file went through JavaScript')
      t.equal((await run('md5sum', [join(d.mnt, other)])).stdout.slice(0, 32), md5(sourceBytes(a, other)), 'its bytes are right')
    })
  }
})

/** A copy of the DB without one file's row. */
function dbWithout(src: string, out: string, rel: string): void {
  copyFileSync(src, out)
  const db = new Database(out)
  db.prepare("DELETE FROM Y6A2_FILE_ARCHIVE_INFO WHERE PATH || '/' || FILENAME || coalesce(COMPRESSION, '') = ?").run(rel)
  db.close()
}

t.test('a file open in passthrough reads right through eviction, cache clear and a DB reload', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, fpack: 'never', largeFileBytes: 16 << 20 })
  const { server, tokenFile } = await startServer(t, a.root)
  const big = a.manifest.largeFile!
  const dir = tmp(t, 'desfs-pt-')
  const db = join(dir, 'metadata.db')
  copyFileSync(a.db, db)
  const d = await startDaemon(t, { db, archive: server.archiveUrl, tokenFile })
  t.equal(
    (await run('md5sum', [join(d.mnt, big)])).stdout.slice(0, 32),
    md5(sourceBytes(a, big)),
    'first read: right bytes, now cached whole',
  )
  const before = await plane(d)
  t.ok(before.passthrough, `passthrough is in use (${before.passthroughNote || 'root, kernel offers it'})`)
  const reader = spawn(PYTHON, [HOLD_READ, join(d.mnt, big)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: reader.stdout! })[Symbol.asyncIterator]()
  t.equal((await lines.next()).value, 'half', 'the reader has read half')
  const during = await plane(d)
  t.equal(during.passthroughOpens, before.passthroughOpens + 1, 'the open file has a backing file (passthrough)')
  const gets = server.count('GET')
  // Everything that could pull the file from under the reader:
  await run(process.execPath, [DESFS, 'cache', 'evict', big, '--state-dir', d.stateDir])
  await run(process.execPath, [DESFS, 'cache', 'clear', '--yes', '--state-dir', d.stateDir])
  const other = join(dir, 'other.db')
  dbWithout(a.db, other, big)
  renameSync(other, db)
  await run(process.execPath, [DESFS, 'reload', '--state-dir', d.stateDir])
  t.ok(await until(() => / info new tree in service /.test(d.log()), 60_000), 'the new tree (without the file) is in service')
  reader.stdin!.write('go\n')
  t.equal((await lines.next()).value, md5(sourceBytes(a, big)), 'the reader read every byte right')
  t.equal(server.count('GET'), gets, 'without fetching anything again')
  const gone = await run('stat', [join(d.mnt, big)])
  t.not(gone.code, 0, 'the file is gone from the mount once closed')
})

t.test('files opened and closed at once, many at a time, are not left in use (the release comes after the open)', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, fpack: 'never' })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const files = a.manifest.files.filter((f) => !a.manifest.missing.includes(f.rel)).map((f) => join(d.mnt, f.rel))
  for (const f of files) t.equal((await run('cat', [f])).code, 0) // cached whole: the plane answers their opens
  const opensBefore = (await plane(d)).nativeOpens
  // Eight threads open and close the files as fast as they can: the kernel releases each handle
  // right after the plane's answer, often on another worker thread than the one that opened it.
  const churn = await run(
    PYTHON,
    [
      '-c',
      'import os,sys,threading\ndef go():\n for i in range(400):\n  for p in sys.argv[1:]: os.close(os.open(p, os.O_RDONLY))\nts=[threading.Thread(target=go) for _ in range(8)]\n[x.start() for x in ts]\n[x.join() for x in ts]',
      ...files,
    ],
    { timeoutMs: 120_000 },
  )
  t.equal(churn.code, 0, churn.stderr)
  const opens = (await plane(d)).nativeOpens - opensBefore
  t.ok(opens >= 8 * 400, `${opens} opens answered by the plane`)
  const inUse = async () =>
    (JSON.parse((await desfs(['cache', 'stats', '--json', '--state-dir', d.stateDir])).stdout) as { inUse: number }).inUse
  t.ok(await until(async () => (await inUse()) === 0, 10_000), `no file left in use once all are closed (in use: ${await inUse()})`)
})

t.test('kill -9 with 16 readers: no hung mount, and a restart serves the right bytes', async (t) => {
  const a = makeArchive(t, { exposures: 2, ccds: 4, hostile: false, fpack: 'never', largeFileBytes: 32 << 20 })
  const { server, tokenFile } = await startServer(t, a.root, { faults: { rateBytesPerSec: 20 << 20 } })
  const base = tmp(t, 'desfs-kill-')
  const opts = {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    mnt: join(base, 'DESDATA'),
    stateDir: join(base, 'state'),
    cacheDir: join(base, 'cache'),
  }
  const d = await startDaemon(t, opts)
  const files = a.manifest.files.map((f) => f.rel)
  // Half the files cached before, so readers are on both paths when the daemon dies.
  await run(
    'cat',
    files.slice(0, files.length / 2).map((f) => join(d.mnt, f)),
    { binary: true },
  )
  const readers = Array.from({ length: 16 }, (_, i) => {
    const mine = files.filter((_f, k) => k % 16 === i).map((f) => join(d.mnt, f))
    return run('sh', ['-c', 'for i in 1 2 3 4 5 6 7 8; do cat "$@" > /dev/null || exit 1; done', 'reader', ...mine], { timeoutMs: 60_000 })
  })
  await new Promise((r) => setTimeout(r, 1500))
  d.child.kill('SIGKILL')
  const results = await Promise.all(readers)
  t.ok(
    results.every((r) => r.signal === null),
    'every reader ended on its own (none hung until its timeout)',
  )
  const st = await run('stat', [opts.mnt], { timeoutMs: 10_000 })
  t.equal(st.signal, null, 'stat of the mountpoint answers (no hung mount)')
  t.ok(await until(async () => !(await mountedType(opts.mnt)), 10_000), 'the dead mount was removed (watchdog)')
  const d2 = await startDaemon(t, opts)
  const sums = await run(
    'md5sum',
    files.map((f) => join(d2.mnt, f)),
  )
  const bad = files.filter((f, i) => sums.stdout.split('\n')[i]?.slice(0, 32) !== md5(sourceBytes(a, f)))
  t.same(bad, [], 'after the restart every file reads right')
})

t.test(
  "a user who is not root mounts through fusermount3; cached reads use the plane's pread",
  { skip: process.getuid?.() !== 0 && 'needs root to switch to the nobody user' },
  async (t) => {
    if (!hasTool('setpriv') || !hasTool('fusermount3')) return t.fail('setpriv (util-linux) and fusermount3 (fuse3) are needed')
    const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, fpack: 'never', largeFileBytes: 4 << 20 })
    const { server, token } = await startServer(t, a.root)
    const base = tmp(t, 'desfs-user-')
    chmodSync(base, 0o755)
    for (const p of [a.dir]) chmodSync(p, 0o755)
    // fusermount3 opens /dev/fuse as the user: Debian's udev makes it 0666; some sandboxes do not.
    const devMode = statSync('/dev/fuse').mode & 0o777
    if ((devMode & 0o006) !== 0o006) {
      chmodSync('/dev/fuse', 0o666)
      t.teardown(() => chmodSync('/dev/fuse', devMode))
    }
    const home = join(base, 'home')
    mkdirSync(join(home, 'DESDATA'), { recursive: true })
    mkdirSync(join(home, 'tok'), { mode: 0o700 })
    writeFileSync(join(home, 'tok', 'token'), token, { mode: 0o600 })
    for (const p of [home, join(home, 'DESDATA'), join(home, 'tok'), join(home, 'tok', 'token')]) chownSync(p, 65534, 65534)
    chmodSync(home, 0o700)
    const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups', '--']
    if ((await run('setpriv', [...asNobody, 'test', '-r', DESFS])).code !== 0)
      return skipBecause(t, `nobody cannot read ${DESFS} (the checkout is in a private directory)`)
    // A clean environment: the test runner's hooks would load files nobody may read.
    const env = { PATH: process.env.PATH, HOME: home, DESFS_CONFIG: join(home, 'none') }
    const args = [
      DESFS,
      'mount',
      join(home, 'DESDATA'),
      '--foreground',
      '--db',
      a.db,
      '--archive',
      server.archiveUrl,
      '--state-dir',
      join(home, 'state'),
      '--cache-dir',
      join(home, 'cache'),
      '--token-file',
      join(home, 'tok', 'token'),
    ]
    const daemon = spawn('setpriv', [...asNobody, process.execPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    daemon.stdout!.on('data', (b: Buffer) => (out += b))
    daemon.stderr!.on('data', (b: Buffer) => (out += b))
    t.teardown(async () => {
      daemon.kill('SIGTERM')
      await until(() => daemon.exitCode !== null, 15_000)
      if (await mountedType(join(home, 'DESDATA'))) await run('umount', ['-l', join(home, 'DESDATA')])
    })
    t.ok(await until(() => / info mounted /.test(out) || daemon.exitCode !== null, 60_000), `the daemon mounted as nobody:\n${out}`)
    t.equal(await mountedType(join(home, 'DESDATA')), 'fuse.desfs', 'mounted by fusermount3')
    const big = join(home, 'DESDATA', a.manifest.largeFile!)
    const first = await run('setpriv', [...asNobody, 'md5sum', big])
    t.equal(first.stdout.slice(0, 32), md5(sourceBytes(a, a.manifest.largeFile!)), 'nobody reads the right bytes')
    const again = await run('setpriv', [...asNobody, 'dd', `if=${big}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none'])
    t.equal(again.code, 0, 'a cached read again, straight to the plane')
    const st = (await call<{ plane: PlaneStats }>(socketPath(join(home, 'state')), 'GET', '/status')).plane
    t.equal(st.rootMount, false, 'fusermount3 did the mount')
    t.equal(st.passthrough, false, `no passthrough without privileges (${st.passthroughNote})`)
    t.ok(st.nativeReadBytes >= 4 << 20, 'the cached read was served by pread in the plane')
  },
)

/** The addon built again with AddressSanitizer (the same sources, in a temporary directory). */
async function asanAddon(t: Test): Promise<{ addon: string; preload: string } | undefined> {
  const preload = (await run('gcc', ['-print-file-name=libasan.so'])).stdout.trim()
  if (!preload.startsWith('/')) return undefined
  const out = join(tmp(t, 'desfs-asan-'), 'desfs_fuse.node')
  const src = fileURLToPath(new URL('../../fs/native/', import.meta.url))
  const sources = ['binding.c', 'plane.c', 'nodes.c', 'mount.c', 'direct-write.c'].map((f) => join(src, f))
  const cc = await run(
    'gcc',
    [
      '-shared',
      '-fPIC',
      '-g',
      '-O1',
      '-fsanitize=address',
      '-fno-omit-frame-pointer',
      '-std=gnu11',
      '-Wall',
      '-Wextra',
      '-Wno-unused-parameter',
      '-Werror',
      '-I/usr/include/node',
      '-DNAPI_VERSION=8',
      '-DNODE_GYP_MODULE_NAME=desfs_fuse',
      '-pthread',
      ...sources,
      '-o',
      out,
    ],
    { timeoutMs: 120_000 },
  )
  if (cc.code !== 0) throw new Error(`the AddressSanitizer build failed:\n${cc.stderr}`)
  return { addon: out, preload }
}

t.test('requests racing their deadline never touch freed memory (AddressSanitizer build, stress)', async (t) => {
  const asan = await asanAddon(t)
  if (!asan) return t.fail('gcc has no libasan (Debian: libgcc-12-dev brings it)')
  const a = makeArchive(t, { exposures: 1, ccds: 4, hostile: false, fpack: 'never', largeFileBytes: 8 << 20 })
  // Answers come at about the deadline: some in time, some just after it, some after the backstop.
  const { server, tokenFile } = await startServer(t, a.root, { faults: { latencyMs: 900 } })
  const env = {
    ...HOOKS,
    DESFS_TEST_BACKSTOP_MS: '1000',
    DESFS_NATIVE_ADDON: asan.addon,
    LD_PRELOAD: asan.preload,
    ASAN_OPTIONS: 'detect_leaks=0:halt_on_error=1:abort_on_error=1',
  }
  const d = await startDaemon(t, {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    flags: ['--read-timeout', '1s', '--cache-size', '4M'],
    env,
  })
  const files = a.manifest.files.map((f) => f.rel)
  const r = await randomReads(d.mnt, a.root, files, { seed: 5, count: 150, readers: 8, maxLen: 400_000, timeoutMs: 300_000 })
  t.equal(r.wrong, 0, `no wrong bytes (${r.ok} right, ${r.eio} EIO at the deadline)`)
  t.ok(r.eio > 0 && r.ok > 0, 'reads both made their deadline and missed it (the race was on)')
  // The control directory's paths in the plane: a name hidden from a listed root, listings the plane
  // does not keep, symlink replies; all concurrently with the reads' leftovers.
  const q = join(d.mnt, '.desfs')
  const named = files.filter((f) => !a.manifest.missing.includes(f)).slice(0, 8)
  const rounds = await Promise.all(
    Array.from({ length: 4 }, async () => {
      let right = 0
      for (let i = 0; i < 10; i++) {
        await run('ls', ['-a', d.mnt])
        const ls = await run('ls', ['-a', q, join(q, 'recipes')])
        const link = await run(
          'readlink',
          named.map((f) => join(q, 'by-name', basename(f))),
        )
        if (ls.code === 0 && link.stdout === named.map((f) => `../../${f}\n`).join('')) right++
      }
      return right
    }),
  )
  t.ok(
    rounds.every((n) => n > 0),
    `.desfs listed and its links read right under ASan (${rounds.join(', ')} of 10 rounds each)`,
  )
  // A sync writes its blocks around the page cache through the addon (writeDirect): from a cleared
  // cache, so every block is written, under ASan too (without the latency, which is for the reads).
  server.faults = {}
  const env2 = { ...process.env, DESFS_STATE_DIR: d.stateDir, DESFS_CACHE_DIR: d.cacheDir, DESFS_CONFIG: '/nonexistent' }
  // The reads above leave fetches in flight (their readers gave up at the deadline, the slowed
  // requests go on). A cache cleared under them makes their stores fail, and a sync that joins one
  // fails "could not be stored": right, but not what this checks. So they end first.
  const inflight = async () =>
    Number(/^desfs_fetch_inflight_bytes (\S+)/m.exec((await desfs(['metrics'], { env: env2 })).stdout)?.[1] ?? NaN)
  t.ok(await until(async () => (await inflight()) === 0, 60_000), "the reads' fetches ended")
  // And the files they read are released (the kernel's RELEASE comes after its reader is gone): the
  // clear skips files in use, and in this 4 MiB cache those left the sync no room ("could not be
  // stored", 1 in 4 runs under Node 22).
  const inUse = async () => (JSON.parse((await desfs(['cache', 'stats', '--json'], { env: env2 })).stdout) as { inUse: number }).inUse
  t.ok(await until(async () => (await inUse()) === 0, 60_000), 'no file in use any more')
  t.equal((await desfs(['cache', 'clear', '--yes'], { env: env2 })).code, 0, 'the cache cleared')
  const list = join(tmp(t), 'sync.txt')
  const small = a.manifest.files.filter((f) => !a.manifest.missing.includes(f.rel) && f.size < 1 << 20).slice(0, 4)
  writeFileSync(list, small.map((f) => f.rel).join('\n') + '\n')
  const sync = await desfs(['sync', '--list', list], { env: env2, timeoutMs: 120_000 })
  // On failure, what the cache held then (a sync that could not store once in a few CI runs under Node 22).
  const held = sync.code ? (await desfs(['cache', 'stats', '--json'], { env: env2 })).stdout.replace(/\s+/g, ' ') : ''
  t.equal(
    sync.code,
    0,
    `${small.length} files synced under ASan${sync.code ? `: ${sync.stderr.trim()} ${sync.stdout.trim()} cache: ${held}` : ''}`,
  )
  const stats = JSON.parse((await desfs(['cache', 'stats', '--json'], { env: env2 })).stdout) as { directBytes: number }
  t.ok(stats.directBytes > 0, `written around the page cache: ${stats.directBytes} bytes`)
  for (const f of small)
    t.ok(readFileSync(join(d.mnt, f.rel)).equals(sourceBytes(a, f.rel)), `${basename(f.rel)} reads right after the sync`)
  // Listings outlive their nodes (kept by inode number): the kernel forgets every dentry while finds
  // walk the tree, so nodes are freed and made again and take their listings back, concurrently.
  if (process.getuid?.() === 0) {
    const expected = (await run('find', [d.mnt])).stdout.split('\n').length
    let same = 0
    for (let i = 0; i < 5; i++) {
      const [f1, f2] = await Promise.all([
        run('find', [d.mnt]),
        run('find', [d.mnt]),
        Promise.resolve().then(() => writeFileSync('/proc/sys/vm/drop_caches', '2')),
      ])
      if (f1.stdout.split('\n').length === expected && f2.stdout.split('\n').length === expected) same++
    }
    t.equal(same, 5, 'finds racing the kernel forgetting every dentry see the whole tree each time')
  }
  t.equal(d.child.exitCode, null, 'the daemon is alive')
  t.notMatch(d.log(), /AddressSanitizer|ERROR: /, 'AddressSanitizer found nothing')
  t.equal(await d.stop(), 0, 'and it stops cleanly')
  t.notMatch(d.log(), /AddressSanitizer/, 'nothing at exit either')
})

t.test(
  'the control socket refuses another user even when its mode is loosened (SO_PEERCRED)',
  { skip: process.getuid?.() !== 0 && 'needs root to switch to the nobody user' },
  async (t) => {
    const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false, fpack: 'never' })
    const { server, tokenFile } = await startServer(t, a.root)
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    // As if an admin or a bad umask had opened the way: everyone may reach and open the socket.
    // (only the test's own directories: the state dir and the temporary one holding it)
    for (const p of [d.stateDir, dirname(d.stateDir)]) chmodSync(p, 0o755)
    chmodSync(socketPath(d.stateDir), 0o777)
    // The probe is Debian's python3, which any user can run wherever the checkout lives.
    const probe =
      'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ntry:\n s.sendall(b"GET /status HTTP/1.0\\r\\n\\r\\n"); d=s.recv(100)\nexcept OSError as e: d=b""\nprint("status" if d.startswith(b"HTTP") else "refused")'
    const other = await run('setpriv', [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      '--',
      PYTHON,
      '-c',
      probe,
      socketPath(d.stateDir),
    ])
    t.match(other.stdout, /refused/, `another user is refused (${other.stdout.trim()})`)
    t.match(d.log(), /refused a control connection from another user .*uid=65534/, 'and the daemon says so')
    const own = await call<{ pid: number }>(socketPath(d.stateDir), 'GET', '/status')
    t.equal(own.pid, d.child.pid, 'the owner (root) still gets answers')
  },
)

t.test(
  'directories the kernel forgot are listed and looked up again without JavaScript',
  { skip: process.getuid?.() !== 0 && "needs root to drop the kernel's dentries (echo 2 > /proc/sys/vm/drop_caches)" },
  async (t) => {
    const a = makeArchive(t, { exposures: 2, ccds: 2, hostile: false, fpack: 'never' })
    const { server, tokenFile } = await startServer(t, a.root)
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    const deep = a.manifest.files[0]!.rel
    const find = async () => (await run('find', [d.mnt])).stdout.split('\n').filter(Boolean).length
    // Lookups and listings that reached JavaScript (find also asks statfs, which always goes there).
    const dirOps = async () => {
      const o = (await call<{ ops: { ops: Record<string, number> } }>(socketPath(d.stateDir), 'GET', '/status')).ops.ops
      return (o.lookup ?? 0) + (o.readdir ?? 0)
    }
    const settled = async () => {
      // FORGETs of the dropped entries reach the plane after the drop returns: wait until the
      // count of requests JavaScript saw stops moving.
      let last = -1
      for (let i = 0; i < 50; i++) {
        const n = await dirOps()
        if (n === last) return n
        last = n
        await new Promise((r) => setTimeout(r, 100))
      }
      return last
    }
    // The stat first: it learns the file's size, so the listing made by find carries it.
    t.equal((await run('stat', ['-c', '%s', join(d.mnt, deep)])).code, 0, 'a deep file is stat-ed')
    const entries = await find()
    t.ok(entries > a.manifest.files.length, `the first find lists the tree (${entries} entries)`)
    await settled()
    writeFileSync('/proc/sys/vm/drop_caches', '2')
    const before = await settled()
    t.equal(await find(), entries, 'find after the kernel forgot every dentry sees the same tree')
    t.equal((await run('stat', ['-c', '%s', join(d.mnt, deep)])).code, 0, 'the deep file is stat-ed again')
    t.equal(
      (await dirOps()) - before,
      0,
      'no listing or lookup went to JavaScript: the plane kept the listings of the directories it forgot',
    )
  },
)
