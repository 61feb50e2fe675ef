// `npm run bench -- sql [--rows N] [--window S] [--reps N] [--only overhead|cancel|latency]`: what
// `desfs sql` costs, and what it does not cost the mount.
//
// 1. Overhead: `desfs sql -c ...` through the daemon's socket, end to end (CLI start-up included),
//    against a direct better-sqlite3 query in a fresh Node process that writes the same TSV, for 1k
//    and 1M rows, to a file and to /dev/null; also desfs's direct mode (no daemon) and FITS/CSV files.
// 2. Cancel latency: a query process killed on cancel, against terminating a worker thread in the
//    middle of a long native step (the alternative the engine does not use).
// 3. FUSE read latency (p50/p99) from a child process while the daemon is idle, and while it runs a
//    30-second CPU-bound query: 64 KiB preads at random offsets of a cached file, each after
//    posix_fadvise(DONTNEED) so the read reaches the daemon instead of the page cache.
import Database from 'better-sqlite3'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, openSync, closeSync, rmSync, statSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { generateArchive } from '../../bin/demo/generate.js'
import { ArchiveServer } from '../../bin/demo/server.js'
import { SqlEngine } from '../../daemon/sql/sql-engine.js'
import { now, percentile, rssMb, startBenchArchive, table } from './util.js'

const DESFS = fileURLToPath(new URL('../../bin/desfs.js', import.meta.url))
/** The repository: `node -e` resolves better-sqlite3 from the working directory. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const PYTHON = '/usr/bin/python3'
const ENDLESS = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c'

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : dflt
}

/** Runs a command with stdout to a file (or /dev/null); resolves with wall ms and the peak RSS (MB). */
function timedRun(
  cmd: string,
  args: string[],
  out: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ ms: number; rssMb: number; code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const fd = openSync(out, 'w')
    const t0 = now()
    const child = spawn('/usr/bin/time', ['-f', '%M', cmd, ...args], { stdio: ['ignore', fd, 'pipe'], env, cwd: REPO })
    closeSync(fd)
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('exit', (code) => {
      const ms = now() - t0
      const lines = stderr.trim().split('\n')
      resolve({ ms, rssMb: Number(lines.pop()) / 1024, code, stderr: lines.join('\n') })
    })
  })
}

/** The baseline: a Node process that queries with better-sqlite3 and writes TSV, batched like desfs. */
const DIRECT_SCRIPT = `
import Database from 'better-sqlite3'
import { writeSync } from 'node:fs'
const [db, sql] = process.argv.slice(1)
const st = new Database(db, { readonly: true }).prepare(sql).raw(true)
const field = (v) => v === null ? '' : typeof v !== 'string' ? String(v) : /[\\t\\n\\r\\\\]/.test(v) ? v.replace(/\\\\/g, '\\\\\\\\').replace(/\\t/g, '\\\\t').replace(/\\n/g, '\\\\n').replace(/\\r/g, '\\\\r') : v
let buf = st.columns().map((c) => c.name).join('\\t') + '\\n'
for (const row of st.iterate()) {
  let s = ''
  for (let i = 0; i < row.length; i++) s += (i ? '\\t' : '') + field(row[i])
  buf += s + '\\n'
  if (buf.length >= 65536) { writeSync(1, buf); buf = '' }
}
writeSync(1, buf)
`

interface DaemonHandle {
  child: ChildProcess
  mnt: string
  stateDir: string
  stop: () => Promise<void>
}

async function startDaemon(base: string, db: string, archive: string, tokenFile: string): Promise<DaemonHandle> {
  const mnt = join(base, 'DESDATA')
  const stateDir = join(base, 'state')
  mkdirSync(mnt, { recursive: true })
  const child = spawn(
    process.execPath,
    [
      DESFS,
      'mount',
      mnt,
      '--foreground',
      '--db',
      db,
      '--archive',
      archive,
      '--token-file',
      tokenFile,
      '--state-dir',
      stateDir,
      '--cache-dir',
      join(base, 'cache'),
      '--sql-timeout',
      '0',
    ],
    {
      env: { ...process.env, DESFS_CONFIG: join(base, 'no-config') },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let log = ''
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()))
  const exited = new Promise<void>((r) => child.on('exit', () => r()))
  for (let i = 0; i < 1200 && !/ info mounted /.test(log); i++) {
    if (child.exitCode !== null) throw new Error(`daemon exited:\n${log}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  if (!/ info mounted /.test(log)) throw new Error(`daemon did not mount:\n${log}`)
  return {
    child,
    mnt,
    stateDir,
    stop: async () => {
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

function post(sock: string, body: unknown, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body)
    const req = request(
      {
        socketPath: sock,
        method: 'POST',
        path: '/sql',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        signal,
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve())
        res.on('error', () => resolve())
      },
    )
    req.on('error', () => resolve())
    req.end(payload)
  })
}

const READER = `
import os, sys, time, random, json
path, seconds = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
rnd = random.Random(7)
lat = []
end = time.time() + seconds
while time.time() < end:
    off = rnd.randrange(0, size - 65536) & ~4095
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    t0 = time.perf_counter()
    b = os.pread(fd, 65536, off)
    lat.append((time.perf_counter() - t0) * 1000)
    assert len(b) == 65536
    time.sleep(0.002)
print(json.dumps(lat))
`

function readLatencies(file: string, seconds: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', READER, file, String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as number[]) : reject(new Error(`reader failed: ${err}`))))
  })
}

const median = (xs: number[]) => percentile(xs, 50)

interface Ctx {
  base: string
  db: string
  daemon: DaemonHandle
  bigRows: number
  reps: number
  env: NodeJS.ProcessEnv
}

/** 1. End-to-end time of `desfs sql` against the direct baseline, and big results to files. */
async function overhead(c: Ctx): Promise<void> {
  const baseline = ['--input-type=module', '-e', DIRECT_SCRIPT]
  const cases = [
    { name: '1k rows', sql: 'SELECT * FROM Y6A2_BENCH_OBJECTS LIMIT 1000' },
    { name: `${c.bigRows / 1e6}M rows`, sql: 'SELECT * FROM Y6A2_BENCH_OBJECTS' },
  ]
  const rows: (string | number)[][] = [
    ['query', 'to', 'direct ms', 'desfs ms', 'ratio', 'desfs direct-mode ms', 'ratio', 'RSS MB direct/CLI/daemon'],
  ]
  for (const k of cases) {
    for (const to of ['file', '/dev/null']) {
      const out = to === 'file' ? join(c.base, 'out.tsv') : '/dev/null'
      const t: Record<string, number[]> = { direct: [], socket: [], directMode: [] }
      const rss: Record<string, number> = { direct: 0, socket: 0, daemon: 0 }
      // Small results are cheap and noisy: more repetitions.
      const reps = k.name === '1k rows' ? c.reps * 3 : c.reps
      for (let r = 0; r < reps; r++) {
        const d = await timedRun(process.execPath, [...baseline, c.db, k.sql], out)
        if (d.code !== 0) throw new Error(`direct baseline failed: ${d.stderr}`)
        t.direct!.push(d.ms)
        rss.direct = Math.max(rss.direct!, d.rssMb)
        let daemonPeak = 0
        const sampler = setInterval(() => void rssMb(c.daemon.child.pid!).then((m) => (daemonPeak = Math.max(daemonPeak, m))), 50)
        const s = await timedRun(process.execPath, [DESFS, 'sql', '--state-dir', c.daemon.stateDir, '-c', k.sql], out, c.env)
        clearInterval(sampler)
        if (s.code !== 0) throw new Error(`desfs sql failed: ${s.stderr}`)
        t.socket!.push(s.ms)
        rss.socket = Math.max(rss.socket!, s.rssMb)
        rss.daemon = Math.max(rss.daemon!, daemonPeak)
        const m = await timedRun(
          process.execPath,
          [DESFS, 'sql', '--db', c.db, '--state-dir', join(c.base, 'nostate'), '-c', k.sql],
          out,
          c.env,
        )
        if (m.code !== 0) throw new Error(`desfs sql --db failed: ${m.stderr}`)
        t.directMode!.push(m.ms)
      }
      const dm = median(t.direct!)
      rows.push([
        k.name,
        to,
        dm,
        median(t.socket!),
        median(t.socket!) / dm,
        median(t.directMode!),
        median(t.directMode!) / dm,
        `${rss.direct!.toFixed(0)}/${rss.socket!.toFixed(0)}/${rss.daemon!.toFixed(0)}`,
      ])
    }
  }
  console.log(
    `\n1. end-to-end time (median of ${c.reps * 3} for 1k rows, ${c.reps} for the big result), fresh process each time, TSV of the same rows`,
  )
  table(rows)

  const files: (string | number)[][] = [['file', 'desfs ms (median)', 'MB']]
  for (const ext of ['csv', 'json', 'fits']) {
    const ms: number[] = []
    const out = join(c.base, `big.${ext}`)
    for (let r = 0; r < Math.min(c.reps, 2); r++) {
      const s = await timedRun(
        process.execPath,
        [DESFS, 'sql', '--state-dir', c.daemon.stateDir, '-c', `SELECT * FROM Y6A2_BENCH_OBJECTS; > ${out}`],
        '/dev/null',
        c.env,
      )
      if (s.code !== 0) throw new Error(`desfs sql > .${ext} failed: ${s.stderr}`)
      ms.push(s.ms)
    }
    files.push([`.${ext}`, median(ms), statSync(out).size / 1e6])
    rmSync(out)
  }
  console.log(`\n   the ${c.bigRows} rows to files through the daemon`)
  table(files)
}

/** 2. From cancel to the query stopped: a killed query process, and (for comparison) a worker thread. */
async function cancelLatency(c: Ctx): Promise<void> {
  const engine = new SqlEngine({ dbPath: c.db, timeoutMs: 0 })
  const cancels: number[] = []
  for (let r = 0; r < 5; r++) {
    const q = await engine.query(ENDLESS)
    await new Promise((res) => setTimeout(res, 500))
    const t0 = now()
    q.cancel()
    await q.finished
    cancels.push(now() - t0)
  }
  await engine.close()
  const workerMs = await new Promise<number>((resolve) => {
    const wk = new Worker(
      `
      const Database = require(${JSON.stringify(fileURLToPath(new URL('../../../node_modules/better-sqlite3/lib/index.js', import.meta.url)))})
      const { parentPort } = require('node:worker_threads')
      const db = new Database(${JSON.stringify(c.db)}, { readonly: true })
      parentPort.postMessage('start')
      db.prepare('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000000) SELECT count(*) FROM c').get()
    `,
      { eval: true },
    )
    wk.once('message', () => {
      setTimeout(() => {
        const t0 = now()
        void wk.terminate().then(() => resolve(now() - t0))
      }, 500)
    })
  })
  console.log('\n2. cancel latency: from cancel to the query stopped (CPU free)')
  table([
    ['how', 'ms'],
    ['query process, SIGKILL (median of 5)', median(cancels)],
    ['query process, SIGKILL (max of 5)', Math.max(...cancels)],
    ['worker thread terminate() mid-step (not used)', workerMs],
  ])
}

/** 3. FUSE read latency from a child process, the daemon idle and then running a CPU-bound query. */
async function readLatency(c: Ctx, largeFile: string, window: number): Promise<void> {
  const big = join(c.daemon.mnt, largeFile)
  const warm = await timedRun('cat', [big], '/dev/null')
  if (warm.code !== 0) throw new Error('cannot read the large file through the mount')
  const idle = await readLatencies(big, window)
  const ac = new AbortController()
  const query = post(join(c.daemon.stateDir, 'desfs.sock'), { sql: ENDLESS, timeoutMs: (window + 5) * 1000 }, ac.signal)
  await new Promise((r) => setTimeout(r, 300))
  const busy = await readLatencies(big, window)
  ac.abort()
  await query
  const lat = (name: string, xs: number[]) => [name, xs.length, percentile(xs, 50), percentile(xs, 90), percentile(xs, 99), Math.max(...xs)]
  console.log(`\n3. FUSE 64 KiB pread latency in ms (page cache dropped before each read), ${window} s each`)
  table([['daemon', 'reads', 'p50', 'p90', 'p99', 'max'], lat('idle', idle), lat(`running a ${window} s query`, busy)])
}

export async function run(args: string[]): Promise<void> {
  const bigRows = arg(args, 'rows', 1_000_000)
  const reps = arg(args, 'reps', 3)
  const window = arg(args, 'window', 30)
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-sql-'))
  let daemon: DaemonHandle | undefined
  let server: ArchiveServer | undefined
  try {
    console.log(
      `desfs sql benchmark in ${base} (node ${process.version}, ${bigRows} rows, ${reps} repetitions; machine shared, figures are noisy)`,
    )
    const manifest = generateArchive({ out: join(base, 'gen'), largeFileBytes: 64 << 20, hostile: false })
    const db = join(base, 'gen', 'metadata.db')
    // A catalog-like table for the big results: integers, reals, short and long text.
    const w = new Database(db)
    w.exec(
      'CREATE TABLE Y6A2_BENCH_OBJECTS (COADD_OBJECT_ID INTEGER, RA REAL, DEC REAL, TILENAME TEXT, MAG_AUTO_G REAL, FLAGS INTEGER, FILENAME TEXT)',
    )
    const ins = w.prepare('INSERT INTO Y6A2_BENCH_OBJECTS VALUES (?, ?, ?, ?, ?, ?, ?)')
    w.transaction(() => {
      for (let i = 0; i < bigRows; i++)
        ins.run(
          1_000_000_000 + i,
          300 + (i % 3600) / 10,
          -60 + (i % 1200) / 20,
          `DES${String(i % 10000).padStart(4, '0')}-4914`,
          18 + (i % 700) / 100,
          i % 4,
          `D00${229343 + (i % 5000)}_g_c${String(i % 62).padStart(2, '0')}_r4056p01_immasked.fits`,
        )
    })()
    w.close()
    console.log(`DB ${(statSync(db).size / 1e6).toFixed(0)} MB`)

    const archive = await startBenchArchive(base, join(base, 'gen', 'archive'), 'daa')
    server = archive.server
    daemon = await startDaemon(base, db, server.archiveUrl, archive.tokenFile)
    const ctx: Ctx = { base, db, daemon, bigRows, reps, env: { ...process.env, DESFS_CONFIG: join(base, 'no-config') } }
    if (!only || only === 'overhead') await overhead(ctx)
    if (!only || only === 'cancel') await cancelLatency(ctx)
    if (!only || only === 'latency') await readLatency(ctx, manifest.largeFile!, window)
  } finally {
    await daemon?.stop()
    await server?.stop()
    rmSync(base, { recursive: true, force: true })
  }
}
