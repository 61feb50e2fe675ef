// `npm run bench -- faults [--quick] [--reads N] [--readers N] [--fault-rate P] [--kills N]
//   [--kill-readers N] [--rot-rounds N] [--flips N] [--daemon-flags "--read-timeout 5s ..."]`
// The reliability suite, against the daemon's public behaviour only (desfs mount, the CLI, the log):
// 1. random reads through a mount while the archive server injects a fault into a fraction of its
//    GETs (reset mid-body, short body, stall, 503, 429): wrong bytes (compared with the source files)
//    and the longest single open or pread;
// 2. kill -9 of the daemon while 16+ readers read through the mount and a slow SQL query runs,
//    repeated: wrong bytes before the kill, whether the dead mount hangs (a stat in a child process
//    with a timeout), processes the daemon started that outlive it, whether a restarted daemon
//    serves every file's bytes right;
// 3. bit rot: bytes flipped in the cache's data files while the daemon is stopped, then every file
//    read through the restarted daemon: flipped blocks vs blocks it reported corrupt (log line and
//    desfs_cache_corrupt_blocks_total), and wrong bytes served.
// Every reader is a child process (test/readers/random_reads.py, cmp, stat): this process never
// reads the mountpoint. Loopback only; every wait is bounded.
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { bigArchive, randomReads, readSet, type ReadResult } from '../cache-helpers.js'
import { desfs, run, startDaemon, startServer, until, type ArchiveFixture, type DaemonFixture, type ServerFixture } from '../helpers.js'
import { MIXED_FAULTS } from '../../bin/demo/server.js'
import { BenchScope, now, report } from './util.js'

interface Options {
  reads: number
  readers: number
  faultRate: number
  kills: number
  killReaders: number
  rotRounds: number
  flips: number
  daemonFlags: string[]
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      reads: { type: 'string' },
      readers: { type: 'string' },
      'fault-rate': { type: 'string' },
      kills: { type: 'string' },
      'kill-readers': { type: 'string' },
      'rot-rounds': { type: 'string' },
      flips: { type: 'string' },
      'daemon-flags': { type: 'string' },
    },
  })
  const q = values.quick === true
  const num = (name: keyof typeof values, full: number, quick: number): number => {
    const v = values[name]
    if (v === undefined) return q ? quick : full
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} takes a number, not '${v}'`)
    return n
  }
  return {
    reads: num('reads', 10_000, 1_000),
    readers: Math.max(1, num('readers', 8, 4)),
    faultRate: num('fault-rate', 0.1, 0.1),
    kills: num('kills', 20, 3),
    killReaders: Math.max(1, num('kill-readers', 16, 16)),
    rotRounds: num('rot-rounds', 4, 1),
    flips: num('flips', 8, 5),
    // The deadlines a careful user would set; the longest syscall is measured against them.
    daemonFlags: (values['daemon-flags'] ?? '--read-timeout 5s --stall-timeout 2s').split(/\s+/).filter(Boolean),
  }
}

const log = (s: string) => process.stderr.write(s + '\n')
const rnd = (n: number) => Math.floor(Math.random() * n)

interface Compared {
  files: number
  wrongFiles: number
  wrongBytes: number
  /** Files cmp could not read to the end (an error, or its timeout). */
  unreadable: number
}

/** Compares each file read through the mount with the source, with cmp in child processes. */
async function compareFiles(mnt: string, a: ArchiveFixture, files: string[]): Promise<Compared> {
  const out: Compared = { files: files.length, wrongFiles: 0, wrongBytes: 0, unreadable: 0 }
  for (const f of files) {
    const mounted = join(mnt, f)
    const source = join(a.root, f)
    const same = await run('cmp', ['-s', '--', mounted, source], { timeoutMs: 120_000 })
    if (same.code === 0) continue
    if (same.code !== 1) {
      out.unreadable++
      continue
    }
    out.wrongFiles++
    // One line per differing byte; a file of the wrong length counts at least one.
    const diff = await run('sh', ['-c', 'cmp -l -- "$1" "$2" 2>/dev/null | wc -l', 'sh', mounted, source], { timeoutMs: 120_000 })
    out.wrongBytes += Math.max(1, Number(diff.stdout.trim()) || 0)
  }
  return out
}

/** 1. Random reads while a fraction of the archive's GETs meet a fault. */
async function readsUnderFaults(scope: BenchScope, a: ArchiveFixture, s: ServerFixture, o: Options): Promise<(string | number)[][]> {
  const { server, tokenFile } = s
  // A cache smaller than the files read, so blocks keep being evicted and fetched again.
  const d = await startDaemon(scope, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--cache-size', '8M', ...o.daemonFlags] })
  const perReader = Math.ceil(o.reads / o.readers)
  log(`reads under faults: ${o.readers} readers x ${perReader} reads, ${Math.round(o.faultRate * 100)}% of GETs faulty ...`)
  server.clearLog()
  const before = { ...server.injected }
  server.faults = { mixRate: o.faultRate }
  const t0 = now()
  let r: ReadResult
  try {
    r = await randomReads(d.mnt, a.root, readSet(a), {
      seed: 1,
      count: perReader,
      readers: o.readers,
      failedReaders: 'count',
      timeoutMs: 120_000 + perReader * 1000,
    })
  } finally {
    server.faults = {}
  }
  const secs = (now() - t0) / 1000
  const gets = server.log.filter((x) => x.method === 'GET' && x.port === 'pool').length
  const injected = MIXED_FAULTS.map((k) => `${k} ${server.injected[k] - before[k]}`).join(', ')
  const faults = MIXED_FAULTS.reduce((n, k) => n + server.injected[k] - before[k], 0)
  await d.stop()
  const errnos =
    Object.entries(r.other)
      .map(([k, v]) => `errno ${k}: ${v}`)
      .join(', ') || 'none'
  return [
    ['reads under faults: reads (ok / EIO / other errno)', `${r.reads} (${r.ok} / ${r.eio} / ${r.reads - r.ok - r.eio - r.wrong})`],
    ['  other errnos', errnos],
    ['  GETs to the archive / faults injected', `${gets} / ${faults} (${((faults / Math.max(1, gets)) * 100).toFixed(1)}%: ${injected})`],
    ['  WRONG BYTES (in reads)', `${r.wrongBytes} (${r.wrong})`],
    ['  longest single syscall (ms)', Math.round(r.maxMs)],
    ['  readers that did not finish', r.failedReaders],
    ['  time (s)', secs],
  ]
}

/**
 * A process as /proc/PID/stat tells it: its parent, its start time (which tells a reused pid apart)
 * and the CPU time it used (clock ticks).
 */
function procStat(pid: number): { ppid: number; start: string; cpu: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ') // fields from the 3rd on (state, ppid, ...)
    return { ppid: Number(f[1]), start: f[19]!, cpu: Number(f[11]) + Number(f[12]) }
  } catch {
    return undefined
  }
}

/** The processes below pid (children, theirs, ...), with their start times. */
function descendants(pid: number): Map<number, string> {
  const children = new Map<number, number[]>()
  const starts = new Map<number, string>()
  for (const name of readdirSync('/proc')) {
    const p = Number(name)
    const st = Number.isInteger(p) ? procStat(p) : undefined
    if (!st) continue
    starts.set(p, st.start)
    children.set(st.ppid, [...(children.get(st.ppid) ?? []), p])
  }
  const out = new Map<number, string>()
  const todo = [...(children.get(pid) ?? [])]
  while (todo.length > 0) {
    const p = todo.pop()!
    if (out.has(p)) continue
    out.set(p, starts.get(p)!)
    todo.push(...(children.get(p) ?? []))
  }
  return out
}

/** CPU ticks used by each process below pid. */
function cpuBelow(pid: number): Map<number, number> {
  return new Map([...descendants(pid).keys()].map((p) => [p, procStat(p)?.cpu ?? 0]))
}

/** Of the processes a dead daemon started, those still alive a few seconds later; they are then killed. */
async function orphansOf(procs: Map<number, string>): Promise<number> {
  const alive = () => [...procs].filter(([p, start]) => procStat(p)?.start === start)
  await until(() => alive().length === 0, 5_000, 100)
  const left = alive()
  for (const [p] of left) process.kill(p, 'SIGKILL')
  return left.length
}

// A query that keeps the daemon's query process busy for many seconds.
const SLOW_SQL = 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000000) SELECT count(*) FROM n'

/** 2. kill -9 during concurrent reads; the dead mount must not hang and a restart must serve right. */
async function killTrials(scope: BenchScope, a: ArchiveFixture, s: ServerFixture, o: Options): Promise<(string | number)[][]> {
  const { server, tokenFile } = s
  const files = readSet(a)
  const flags = ['--cache-size', '12M', ...o.daemonFlags]
  let d: DaemonFixture = await startDaemon(scope, { db: a.db, archive: server.archiveUrl, tokenFile, flags })
  const { mnt, stateDir, cacheDir } = d
  const env = { ...process.env, DESFS_STATE_DIR: stateDir }
  const totals = {
    reads: 0,
    ok: 0,
    wrong: 0,
    wrongBytes: 0,
    failedReaders: 0,
    duringReads: 0,
    hung: 0,
    orphans: 0,
    sqlClientsLeft: 0,
    restartFailed: 0,
    after: { files: 0, wrongFiles: 0, wrongBytes: 0, unreadable: 0 },
  }
  let maxMs = 0
  server.faults = { latencyMs: 2 } // keeps requests in flight when the kill comes
  try {
    for (let i = 0; i < o.kills; i++) {
      server.clearLog()
      let readersDone = false
      const reading = randomReads(mnt, a.root, files, {
        seed: 5000 + i * 100,
        count: 400,
        readers: o.killReaders,
        failedReaders: 'count',
        timeoutMs: 180_000,
      }).finally(() => (readersDone = true))
      // The kill comes at a random moment once reads are under way (the readers take longer than
      // the longest delay; if they end first, the trial says so).
      await until(() => readersDone || server.count('GET') >= 10, 30_000)
      let sqlDone = false
      const cpu0 = cpuBelow(d.child.pid!)
      const sql = desfs(['sql', '-c', SLOW_SQL], { env, timeoutMs: 60_000 }).finally(() => (sqlDone = true))
      // Running once one of the daemon's processes has spent 0.3 s of CPU on it (bounded wait).
      await until(() => sqlDone || [...cpuBelow(d.child.pid!)].some(([p, c]) => c - (cpu0.get(p) ?? 0) >= 30), 10_000, 100)
      await until(() => readersDone, 200 + rnd(3000))
      const cut = !readersDone
      if (cut) totals.duringReads++
      const procs = descendants(d.child.pid!)
      d.child.kill('SIGKILL')
      await d.exited
      const r = await reading
      const orphans = await orphansOf(procs)
      totals.orphans += orphans
      // The client of the query must end too (with an error) once its daemon is gone.
      if (!(await until(() => sqlDone, 10_000))) totals.sqlClientsLeft++
      await sql
      totals.reads += r.reads
      totals.ok += r.ok
      totals.wrong += r.wrong
      totals.wrongBytes += r.wrongBytes
      totals.failedReaders += r.failedReaders
      maxMs = Math.max(maxMs, r.maxMs)
      // A dead FUSE daemon's mount answers ENOTCONN at once; a hung one blocks the stat.
      const st = await run('stat', ['--', mnt], { timeoutMs: 5_000 })
      const hung = st.signal !== null
      if (hung) {
        totals.hung++
        await run('umount', ['-l', mnt], { timeoutMs: 10_000 })
      }
      try {
        d = await startDaemon(scope, { db: a.db, archive: server.archiveUrl, tokenFile, flags, mnt, stateDir, cacheDir })
      } catch (err) {
        totals.restartFailed++
        log(`trial ${i + 1}: the restart failed: ${(err as Error).message.slice(0, 2000)}`)
        throw err
      }
      const c = await compareFiles(mnt, a, files)
      for (const k of ['files', 'wrongFiles', 'wrongBytes', 'unreadable'] as const) totals.after[k] += c[k]
      log(
        `kill trial ${i + 1}/${o.kills}: ${r.reads} reads (${r.wrong} wrong) ${cut ? 'cut by' : 'ended before'} the kill; mount ${hung ? 'HUNG' : 'not hung'}; ${orphans} of ${procs.size} daemon processes outlived it; after restart ${c.wrongFiles} wrong and ${c.unreadable} unreadable of ${c.files} files`,
      )
    }
  } finally {
    server.faults = {}
    await d.stop()
  }
  return [
    [`kill -9 trials (${o.killReaders} readers each): trials / kills during reads`, `${o.kills} / ${totals.duringReads}`],
    ['  reads around the kills (ok)', `${totals.reads} (${totals.ok})`],
    ['  WRONG BYTES (in reads around the kills)', `${totals.wrongBytes} (${totals.wrong} reads)`],
    ['  longest single syscall around the kills (ms)', Math.round(maxMs)],
    ['  readers that did not finish', totals.failedReaders],
    ['  HUNG MOUNTS after the kill', totals.hung],
    ['  ORPHANS: processes of the daemon alive 5 s after the kill', totals.orphans],
    ['  desfs sql clients still waiting 10 s after the kill', totals.sqlClientsLeft],
    ['  restarts that failed', totals.restartFailed],
    [
      '  after restart: WRONG BYTES (files wrong / unreadable of compared)',
      `${totals.after.wrongBytes} (${totals.after.wrongFiles} / ${totals.after.unreadable} of ${totals.after.files})`,
    ],
  ]
}

/** Regular files under dir, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  )
}

/** Flips one random bit in each of `n` distinct random blocks of the cache's data files. */
function flipBlocks(dataDir: string, blockSize: number, n: number): number {
  const blocks: [string, number, number][] = []
  for (const f of filesUnder(dataDir)) {
    const size = statSync(f).size
    for (let idx = 0; idx * blockSize < size; idx++) blocks.push([f, idx, Math.min(blockSize, size - idx * blockSize)])
  }
  let flipped = 0
  for (let k = 0; k < n && blocks.length > 0; k++) {
    const [file, idx, len] = blocks.splice(rnd(blocks.length), 1)[0]!
    const pos = idx * blockSize + rnd(len)
    const fd = openSync(file, 'r+')
    try {
      const b = Buffer.alloc(1)
      readSync(fd, b, 0, 1, pos)
      b[0] = b[0]! ^ (1 << rnd(8))
      writeSync(fd, b, 0, 1, pos)
    } finally {
      closeSync(fd)
    }
    flipped++
  }
  return flipped
}

/** 3. Bit rot in the cache, injected while the daemon is stopped, must be detected on the next read. */
async function bitRot(scope: BenchScope, a: ArchiveFixture, s: ServerFixture, o: Options): Promise<(string | number)[][]> {
  const { server, tokenFile } = s
  const files = a.manifest.files.map((f) => f.rel)
  // A cache that holds every file, so every block of every data file is present.
  const flags = ['--cache-size', '1G', ...o.daemonFlags]
  let d = await startDaemon(scope, { db: a.db, archive: server.archiveUrl, tokenFile, flags })
  const { mnt, stateDir, cacheDir } = d
  const env = { ...process.env, DESFS_STATE_DIR: stateDir }
  const totals = { injected: 0, loggedCorrupt: 0, metricCorrupt: 0, wrongBytes: 0, wrongFiles: 0, unreadable: 0, warmWrong: 0 }
  try {
    const warm = await compareFiles(mnt, a, files) // fills the cache with every block
    totals.warmWrong = warm.wrongFiles + warm.unreadable
    const stats = await desfs(['cache', 'stats', '--json'], { env })
    const blockSize = (JSON.parse(stats.stdout) as { blockSize: number }).blockSize
    for (let round = 0; round < o.rotRounds; round++) {
      await d.stop()
      const flipped = flipBlocks(join(cacheDir, 'data'), blockSize, o.flips)
      totals.injected += flipped
      d = await startDaemon(scope, { db: a.db, archive: server.archiveUrl, tokenFile, flags, mnt, stateDir, cacheDir })
      const c = await compareFiles(mnt, a, files)
      totals.wrongBytes += c.wrongBytes
      totals.wrongFiles += c.wrongFiles
      totals.unreadable += c.unreadable
      const logged = (d.log().match(/cache block failed its checksum/g) ?? []).length
      const metrics = await desfs(['metrics'], { env })
      const metric = Number(/^desfs_cache_corrupt_blocks_total(?:\{\})? (\d+)/m.exec(metrics.stdout)?.[1] ?? NaN)
      totals.loggedCorrupt += logged
      totals.metricCorrupt += metric
      log(
        `bit rot round ${round + 1}/${o.rotRounds}: ${flipped} blocks flipped, ${logged} logged corrupt, metric ${metric}; ${c.wrongFiles} files wrong, ${c.unreadable} unreadable`,
      )
    }
  } finally {
    await d.stop()
  }
  return [
    [
      `bit rot (${o.rotRounds} restarts): blocks flipped / detected (log) / detected (metric)`,
      `${totals.injected} / ${totals.loggedCorrupt} / ${totals.metricCorrupt}`,
    ],
    [
      '  WRONG BYTES served after the flips (files wrong / unreadable)',
      `${totals.wrongBytes} (${totals.wrongFiles} / ${totals.unreadable})`,
    ],
    ['  files wrong or unreadable while filling the cache', totals.warmWrong],
  ]
}

export async function run_(argv: string[]): Promise<void> {
  const o = options(argv)
  const scope = new BenchScope()
  const rows: (string | number)[][] = [['measure', 'result']]
  const t0 = now()
  try {
    log('generating the test archive ...')
    const a = bigArchive(scope)
    const s = await startServer(scope, a.root)
    rows.push(...(await readsUnderFaults(scope, a, s, o)))
    if (o.kills > 0) rows.push(...(await killTrials(scope, a, s, o)))
    if (o.rotRounds > 0 && o.flips > 0) rows.push(...(await bitRot(scope, a, s, o)))
  } finally {
    await scope.close()
  }
  report('faults', `, ${((now() - t0) / 1000).toFixed(0)} s; daemon flags: ${o.daemonFlags.join(' ')}`, rows)
}

export { run_ as run }
