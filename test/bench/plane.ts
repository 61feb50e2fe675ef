// `npm run bench -- plane [MEASURE ...] [options]`  (MEASURE: cached readers ls stat find cold sync;
// none means all)
//
// The FUSE plane against baselines measured side by side in one run (issue 10's benchmarks): each
// measure runs --reps times, alternating desfs and its baseline (the order flips each repetition), and
// reports the medians, their ratio and the issue's target:
//   cached   first pass over a fully cached file with the page cache dropped: `cat` through the mount
//            (passthrough) vs `cat` of the cache's own data file; and through a mount without
//            passthrough (the plane's pread) vs the same file through Debian's bindfs (a C FUSE
//            passthrough file system; default single-threaded);
//   readers  N concurrent `cat`s of N cached files (page cache dropped): aggregate rate vs one reader;
//   ls       `ls -l` of a directory of --entries files, kernel caches dropped, sizes known, vs local;
//   stat     cold os.stat p99 over --stat-files files spread over the tree (python3), vs local;
//   find     `find -name` over a synthetic tree of --rows files, kernel caches dropped, vs local;
//            these three on the tree fixture of `bench -- tree` (sizes pre-seeded, no archive), each
//            with echo 3 (everything, so local disk and the daemon's index are read again) and echo 2
//            (dentries and inodes only) before every run, then a wait until the daemon is idle;
//   cold     cold sequential `cat` (desfs cache cleared) vs `curl` of the same URL to /dev/null and
//            to a file, against the node test server and against nginx-light + dav-ext
//            (test/archive/nginx.ts), which also shows what desfs makes of a server without checksums;
//   sync     `desfs sync --list` of --sync-files x --sync-mb vs `curl --parallel` to files, both servers.
// Every command runs in a child process (the bench never touches a mountpoint itself). Dropping caches
// needs root (echo 3 > /proc/sys/vm/drop_caches); without it the table says so.
import { execFileSync } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { loadavg, release, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ArchiveServer } from '../../bin/demo/server.js'
import { NginxArchive, nginxMissing } from '../archive/nginx.js'
import { generateSynthetic } from '../archive/synthetic.js'
import { makeToken, writeTokenFile } from '../../bin/demo/token.js'
import { cacheKey } from '../../cache/block-store.js'
import { mountedType } from '../../fs/mount.js'
import { DESFS } from '../helpers.js'
import { curlParallel, desfsSync, relPath, writeFileTable, writeRandomFiles, type FileRow } from './sync.js'
import { samplePaths, spawnCost, statTimes, timedOutput } from './tree.js'
import { dropCaches, isRoot, mbps, median, now, option, startBenchDaemon, table, timedRun, waitIdle, type BenchDaemon } from './util.js'

const MEASURES = ['cached', 'readers', 'ls', 'stat', 'find', 'cold', 'sync'] as const
type Measure = (typeof MEASURES)[number]

const USAGE = `npm run bench -- plane [${MEASURES.join('|')} ...] [--reps 3] [--size-mb 256] [--readers 4] [--entries 10000] [--stat-files 5000] [--rows 200000 | --million] [--sync-files 100] [--sync-mb 10] [--parallel 50] [--servers node,nginx] [--settle-ms 300]`

interface Args {
  measures: Set<Measure>
  reps: number
  sizeMb: number
  readers: number
  entries: number
  statFiles: number
  rows: number
  syncFiles: number
  syncMb: number
  parallel: number
  settleMs: number
  servers: ('node' | 'nginx')[]
}

function parseArgs(argv: string[]): Args {
  const values = new Set([
    'settle-ms',
    'reps',
    'size-mb',
    'readers',
    'entries',
    'stat-files',
    'rows',
    'sync-files',
    'sync-mb',
    'parallel',
    'servers',
  ])
  const measures = new Set<Measure>()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--million') continue
    if (a.startsWith('--')) {
      if (!values.has(a.slice(2))) throw new Error(`unknown option ${a}; usage: ${USAGE}`)
      if (argv[i + 1] === undefined) throw new Error(`${a} needs a value; usage: ${USAGE}`)
      i++
      continue
    }
    if (!(MEASURES as readonly string[]).includes(a)) throw new Error(`unknown measure ${a}; usage: ${USAGE}`)
    measures.add(a as Measure)
  }
  const num = (name: string, def: number, min: number) => {
    const v = Number(option(argv, name, String(def)))
    if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be a number of at least ${min}`)
    return v
  }
  const servers = option(argv, 'servers', 'node,nginx')
    .split(',')
    .map((s) => {
      if (s !== 'node' && s !== 'nginx') throw new Error(`--servers takes node and/or nginx, not ${s}`)
      return s
    })
  const rows = argv.includes('--million') ? 1_000_000 : num('rows', 200_000, 1000)
  const entries = num('entries', 10_000, 10)
  // The synthetic layout puts 15% of the rows in tiles, where the big directory is.
  if (Math.floor(rows * 0.15) < entries + 20)
    throw new Error(
      `--rows ${rows} is too few for a directory of ${entries} entries: give at least --rows ${Math.ceil((entries + 20) / 0.15)}`,
    )
  return {
    measures: measures.size ? measures : new Set(MEASURES),
    reps: num('reps', 3, 1),
    sizeMb: num('size-mb', 256, 1),
    readers: num('readers', 4, 2),
    entries,
    statFiles: num('stat-files', 5000, 10),
    rows,
    syncFiles: num('sync-files', 100, 1),
    syncMb: num('sync-mb', 10, 1),
    parallel: num('parallel', 50, 1),
    settleMs: num('settle-ms', 300, 0),
    servers,
  }
}

/** One row of the result table, with the raw figures and how they were taken. */
interface Result {
  measure: string
  desfs: string
  baseline: string
  /** desfs relative to the baseline, in the direction the target is stated. */
  ratio: number
  target: string
  met: boolean | undefined
  how: string
  runs: string
}

const say = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`)
const f0 = (x: number) => x.toFixed(0)
const list = (xs: number[], fmt = f0) => xs.map(fmt).join('/')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const cacheNote = () => (isRoot ? '' : ' (NOT dropped: not root)')

/** Runs `fns` once per repetition, the order reversed every other repetition; returns each one's values. */
async function alternate(reps: number, fns: (() => Promise<number>)[]): Promise<number[][]> {
  const out = fns.map(() => [] as number[])
  for (let r = 0; r < reps; r++) {
    const order = fns.map((_, i) => i)
    if (r % 2 === 1) order.reverse()
    for (const i of order) out[i]!.push(await fns[i]!())
  }
  return out
}

/** `cat` of files in parallel child processes after dropping caches; the time until the last one ends. */
async function coldCat(files: string[]): Promise<number> {
  dropCaches()
  const t0 = now()
  await Promise.all(files.map((f) => timedRun('cat', [f])))
  return now() - t0
}

/** What `desfs status` says about the FUSE plane (passthrough, native reads), if anything. */
async function planeInfo(env: NodeJS.ProcessEnv): Promise<string> {
  const r = await timedOutput(process.execPath, [DESFS, 'status'], undefined, env)
  // Paths are left out of the match: the bench's own temp dir is named after it.
  const lines = r.stdout.split('\n').filter((l) => /passthrough|\bpread\b|native|\bplane\b/i.test(l.replace(/\/\S*/g, '')))
  return lines.length
    ? lines.map((l) => l.trim()).join('; ')
    : 'desfs status names no FUSE plane (fuse-native: no passthrough, every read through JavaScript)'
}

/** Waits until the daemon has every one of these files complete in its cache (bounded). */
async function waitCached(d: BenchDaemon, rels: string[], bytes: number): Promise<void> {
  const end = Date.now() + 300_000
  for (;;) {
    const r = await timedOutput(process.execPath, [DESFS, 'cache', 'ls', '--json'], undefined, d.env)
    if (r.code === 0) {
      const entries = JSON.parse(r.stdout) as { path: string; cached: number; size: number }[]
      const done = rels.filter((rel) => entries.some((e) => e.path.endsWith(rel) && e.cached === bytes))
      if (done.length === rels.length) return
    }
    if (Date.now() > end) throw new Error(`files not complete in the cache after 300 s: ${r.stdout.slice(0, 500)}`)
    await sleep(200)
  }
}

/** The local file with the same bytes as a cached one: the cache's own data file when this layout has it. */
function cacheDataFile(d: BenchDaemon, rel: string, bytes: number, fallback: string): { file: string; what: string } {
  const key = cacheKey(rel)
  const file = join(d.cacheDir, 'data', key.slice(0, 2), key)
  if (existsSync(file) && statSync(file).size === bytes) return { file, what: "the cache's own data file" }
  return { file: fallback, what: 'the archive copy on the same disk (no cache data file found)' }
}

async function bindfsMount(src: string, mnt: string): Promise<() => Promise<void>> {
  mkdirSync(mnt, { recursive: true })
  await timedRun('bindfs', ['-o', 'ro', src, mnt])
  for (let i = 0; i < 100 && !(await mountedType(mnt))?.startsWith('fuse'); i++) await sleep(50)
  if (!(await mountedType(mnt))?.startsWith('fuse')) throw new Error(`bindfs did not mount ${mnt}`)
  return async () => void (await timedRun('fusermount', ['-u', mnt]).catch(() => timedRun('fusermount', ['-uz', mnt])))
}

interface Servers {
  list: { name: 'node' | 'nginx'; archiveUrl: string; bytesSent: () => number }[]
  token: string
  tokenFile: string
  stop: () => Promise<void>
  notes: string[]
}

async function startServers(root: string, base: string, which: Args['servers']): Promise<Servers> {
  const token = makeToken({}, 86400)
  const tokenFile = join(base, 'tok', 'bearer_token')
  writeTokenFile(tokenFile, token)
  const s: Servers = { list: [], token, tokenFile, notes: [], stop: async () => undefined }
  const stops: (() => Promise<void>)[] = []
  if (which.includes('node')) {
    const node = await new ArchiveServer({ root, tokens: [token], redirect: true }).start()
    stops.push(() => node.stop())
    s.list.push({ name: 'node', archiveUrl: node.archiveUrl, bytesSent: () => node.bytesSent() })
  }
  if (which.includes('nginx')) {
    const missing = nginxMissing()
    if (missing) s.notes.push(`nginx measures skipped: ${missing}`)
    else {
      const ngx = await new NginxArchive({ root, token, accessLog: true }).start()
      stops.push(() => ngx.stop())
      s.list.push({ name: 'nginx', archiveUrl: ngx.archiveUrl, bytesSent: () => ngx.bytesSent() })
    }
  }
  s.stop = async () => {
    for (const st of stops) await st()
  }
  return s
}

/** cached + readers: one daemon, files cached through the mount, then read with the page cache dropped. */
async function measureCached(
  a: Args,
  base: string,
  db: string,
  root: string,
  big: string[],
  bytes: number,
  srv: Servers,
  out: Result[],
  notes: string[],
): Promise<void> {
  const need = a.measures.has('readers') ? big : big.slice(0, 1)
  const flags = ['--cache-size', `${Math.ceil((need.length * bytes * 1.5) / 1e6) + 100}M`]
  // State and cache outside the daemon's own directory (removed when it stops): a second daemon,
  // without passthrough, serves the same cache afterwards (measureAgainstBindfs).
  const dirs = { stateDir: join(base, 'cached-state'), cacheDir: join(base, 'cached-cache') }
  const d = await startBenchDaemon(base, { db, archive: srv.list[0]!.archiveUrl, tokenFile: srv.tokenFile, flags, ...dirs })
  let local: { file: string; what: string } | undefined
  try {
    notes.push(`plane: ${await planeInfo(d.env)}`)
    say(`filling the cache: ${need.length} x ${f0(bytes / 1e6)} MB through the mount`)
    for (const rel of need) await timedRun('cat', [join(d.mnt, rel)])
    await waitCached(d, need, bytes)
    const locals = need.map((rel) => cacheDataFile(d, rel, bytes, join(root, rel)))
    local = locals[0]!
    if (a.measures.has('cached')) {
      say('first pass from the cache, page cache dropped: local / desfs (passthrough)')
      const [l, f] = await alternate(a.reps, [() => coldCat([local!.file]), () => coldCat([join(d.mnt, need[0]!)])])
      const [ml, mf] = [median(l!), median(f!)]
      out.push({
        measure: `1st pass from cache ${f0(bytes / 1e6)} MB vs local cat (MB/s)`,
        desfs: f0(mbps(bytes, mf)),
        baseline: f0(mbps(bytes, ml)),
        ratio: ml / mf,
        target: '≥ 0.9x (passthrough)',
        met: ml / mf >= 0.9,
        how: `cat FILE > /dev/null in a child, page cache dropped before each${cacheNote()}; baseline: ${local.what}`,
        runs: `desfs ${list(f!.map((x) => mbps(bytes, x)))}, local ${list(l!.map((x) => mbps(bytes, x)))} MB/s`,
      })
    }
    if (a.measures.has('readers')) {
      say(`${need.length} concurrent readers vs one, page cache dropped: desfs and local`)
      const files = need.map((rel) => join(d.mnt, rel))
      const [one, all, lone, lall] = await alternate(a.reps, [
        () => coldCat(files.slice(0, 1)),
        () => coldCat(files),
        () => coldCat([locals[0]!.file]),
        () => coldCat(locals.map((l) => l.file)),
      ])
      const rate1 = mbps(bytes, median(one!))
      const rateN = mbps(need.length * bytes, median(all!))
      const lrate1 = mbps(bytes, median(lone!))
      const lrateN = mbps(need.length * bytes, median(lall!))
      out.push({
        measure: `${need.length} readers of cached files vs 1 (MB/s, aggregate)`,
        desfs: f0(rateN),
        baseline: f0(rate1),
        ratio: rateN / rate1,
        target: '≥ 1.5x',
        met: rateN / rate1 >= 1.5,
        how: `${need.length} cats of ${f0(bytes / 1e6)} MB files at once vs one cat, page cache dropped before each${cacheNote()}; the same on local files gives ${(lrateN / lrate1).toFixed(2)}x (${f0(lrateN)} vs ${f0(lrate1)} MB/s: what the disk allows)`,
        runs: `1 reader ${list(one!.map((x) => mbps(bytes, x)))}, ${need.length} readers ${list(all!.map((x) => mbps(need.length * bytes, x)))} MB/s`,
      })
    }
  } finally {
    await d.stop()
  }
  if (a.measures.has('cached')) await measureAgainstBindfs(a, d, db, srv, flags, need[0]!, local!, bytes, out)
}

/**
 * The same first pass without passthrough (the plane's pread path: a daemon on the same cache with
 * --passthrough false) vs bindfs over the cache's data file, the issue's C FUSE baseline.
 */
async function measureAgainstBindfs(
  a: Args,
  was: BenchDaemon,
  db: string,
  srv: Servers,
  flags: string[],
  rel: string,
  local: { file: string; what: string },
  bytes: number,
  out: Result[],
): Promise<void> {
  const d = await startBenchDaemon(runDir(was), {
    db,
    archive: srv.list[0]!.archiveUrl,
    tokenFile: srv.tokenFile,
    flags: [...flags, '--passthrough', 'false'],
    stateDir: was.stateDir,
    cacheDir: was.cacheDir,
  })
  const bindfsDir = join(runDir(was), 'bindfs')
  const stopBindfs = await bindfsMount(dirname(local.file), bindfsDir)
  try {
    say('first pass from the cache without passthrough, page cache dropped: desfs (pread) / bindfs')
    // Once untimed: a restarted daemon checks each block the first time it is read (then the plane serves it).
    await timedRun('cat', [join(d.mnt, rel)])
    const viaBindfs = join(bindfsDir, local.file.slice(dirname(local.file).length + 1))
    const [f, b] = await alternate(a.reps, [() => coldCat([join(d.mnt, rel)]), () => coldCat([viaBindfs])])
    const [mf, mb] = [median(f!), median(b!)]
    out.push({
      measure: `1st pass from cache ${f0(bytes / 1e6)} MB, no passthrough, vs bindfs (MB/s)`,
      desfs: f0(mbps(bytes, mf)),
      baseline: f0(mbps(bytes, mb)),
      ratio: mb / mf,
      target: '≥ 1.0x (no passthrough)',
      met: mb / mf >= 1.0,
      how: `cat FILE > /dev/null in a child, page cache dropped before each${cacheNote()}; desfs mounted again on the same cache with --passthrough false (the plane's pread), the file read once before (a restarted daemon checks each block on its first read); bindfs -o ro (libfuse 3, default options) over the directory of ${local.what}`,
      runs: `desfs ${list(f!.map((x) => mbps(bytes, x)))}, bindfs ${list(b!.map((x) => mbps(bytes, x)))} MB/s`,
    })
  } finally {
    await stopBindfs()
    await d.stop()
  }
}

/** The directory a bench daemon was made in (its own, under the run's base). */
const runDir = (d: BenchDaemon): string => dirname(d.dir)

/** cold: a cold cat through the mount vs curl of the same URL, for each server. */
async function measureCold(
  a: Args,
  base: string,
  db: string,
  root: string,
  rel: string,
  bytes: number,
  srv: Servers,
  out: Result[],
  notes: string[],
): Promise<void> {
  for (const s of srv.list) {
    const d = await startBenchDaemon(base, { db, archive: s.archiveUrl, tokenFile: srv.tokenFile })
    try {
      const file = join(d.mnt, rel)
      const seen = await timedOutput('stat', ['-c', '%s', file]) // learns the directory outside the timing
      if (seen.code !== 0 || Number(seen.stdout.trim()) !== bytes)
        notes.push(`${s.name}: the mount shows size ${seen.stdout.trim() || '(stat failed)'} for a file of ${bytes} bytes`)
      const warmSource = () => timedRun('cat', [join(root, rel)])
      let notCold = 0
      say(`cold read vs curl, ${s.name} server`)
      const curl = async (to: string) => {
        await warmSource()
        execFileSync('sync')
        try {
          return await timedRun('curl', ['-sS', '-f', '-L', '-o', to, '-H', `Authorization: Bearer ${srv.token}`, `${s.archiveUrl}/${rel}`])
        } finally {
          if (to !== '/dev/null') rmSync(to, { force: true })
        }
      }
      const [c, f, cf] = await alternate(a.reps, [
        () => curl('/dev/null'),
        async () => {
          await timedRun(process.execPath, [DESFS, 'cache', 'clear', '--yes'], { env: d.env })
          await timedRun('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'])
          dropCaches()
          await warmSource()
          const sent = s.bytesSent()
          const ms = await timedRun('cat', [file])
          if (s.bytesSent() - sent < bytes * 0.99) notCold++
          return ms
        },
        () => curl(join(base, 'curl-out')),
      ])
      const [mc, mf, mcf] = [median(c!), median(f!), median(cf!)]
      const how = `desfs: cache cleared (desfs cache clear), page cache dropped, cat in a child (desfs also writes its cache file); the server's file in the page cache for all${notCold ? `; WARNING: ${notCold} desfs runs fetched less than the file (not cold)` : ''}`
      out.push({
        measure: `cold cat ${f0(bytes / 1e6)} MB vs curl -o /dev/null, ${s.name} server (MB/s)`,
        desfs: f0(mbps(bytes, mf)),
        baseline: f0(mbps(bytes, mc)),
        ratio: mc / mf,
        target: '≥ 0.9x',
        met: mc / mf >= 0.9,
        how: `${how}; curl -L -o /dev/null of the same URL`,
        runs: `desfs ${list(f!.map((x) => mbps(bytes, x)))}, curl ${list(c!.map((x) => mbps(bytes, x)))} MB/s`,
      })
      out.push({
        measure: `cold cat ${f0(bytes / 1e6)} MB vs curl -o file, ${s.name} server (MB/s)`,
        desfs: f0(mbps(bytes, mf)),
        baseline: f0(mbps(bytes, mcf)),
        ratio: mcf / mf,
        target: '≥ 0.9x',
        met: mcf / mf >= 0.9,
        how: `${how}; curl -L -o FILE on the same disk (dirty pages synced before)`,
        runs: `curl to a file ${list(cf!.map((x) => mbps(bytes, x)))} MB/s`,
      })
      // What the mount knows about the file from this server, and whether the bytes are right.
      const xattr = await timedOutput('sh', [
        '-c',
        'getfattr --absolute-names --only-values -n user.desfs.adler32 "$1" 2>/dev/null',
        'sh',
        file,
      ])
      const same = await timedOutput('cmp', [file, join(root, rel)])
      notes.push(
        `${s.name}: size from PROPFIND ${Number(seen.stdout.trim()) === bytes ? 'right' : 'WRONG'}; adler32 ${xattr.code === 0 && xattr.stdout ? `known (${xattr.stdout.trim()})` : 'unknown (no Digest / Checksums from this server)'}; bytes read through the mount ${same.code === 0 ? 'identical to the archive' : 'DIFFER from the archive'}`,
      )
    } finally {
      await d.stop()
    }
  }
}

/** sync: desfs sync --list vs curl --parallel to files, for each server. */
async function measureSync(a: Args, base: string, db: string, root: string, rows: FileRow[], srv: Servers, out: Result[]): Promise<void> {
  const rels = rows.map(relPath)
  const total = rels.length * a.syncMb * 1e6
  for (const s of srv.list) {
    say(`sync of ${rels.length} x ${a.syncMb} MB vs curl --parallel ${a.parallel}, ${s.name} server`)
    let failure = ''
    const cpu: string[] = []
    const prepare = async () => {
      await timedRun(
        'cat',
        rels.map((r) => join(root, r)),
      ) // the server's files in the page cache
      execFileSync('sync')
    }
    const [c, f] = await alternate(a.reps, [
      async () => {
        const outDir = mkdtempSync(join(base, 'curl-'))
        try {
          await prepare()
          return await curlParallel({
            archiveUrl: s.archiveUrl,
            token: srv.token,
            rels,
            parallel: a.parallel,
            config: join(outDir, 'curl.conf'),
            outDir: join(outDir, 'out'),
          })
        } finally {
          rmSync(outDir, { recursive: true, force: true })
        }
      },
      async () => {
        const dir = mkdtempSync(join(base, 'sync-'))
        try {
          await prepare()
          return await desfsSync({
            dir,
            db,
            archiveUrl: s.archiveUrl,
            tokenFile: srv.tokenFile,
            rels,
            totalBytes: total,
            onCpu: (user, sys) => cpu.push(`${user.toFixed(2)}+${sys.toFixed(2)}`),
          })
        } catch (err) {
          failure = (err as Error).message.split('\n')[0]!.slice(0, 300)
          return NaN
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      },
    ])
    const [mc, mf] = [median(c!), median(f!.filter((x) => !Number.isNaN(x)))]
    out.push({
      measure: `sync ${rels.length} x ${a.syncMb} MB vs curl --parallel, ${s.name} server (MB/s)`,
      desfs: failure && Number.isNaN(mf) ? 'FAILED' : f0(mbps(total, mf)),
      baseline: f0(mbps(total, mc)),
      ratio: mc / mf,
      target: '≥ 0.9x',
      met: Number.isNaN(mf) ? false : mc / mf >= 0.9,
      how: `desfs sync --list on a fresh mount (cold cache; fetched, checked, stored, pinned; mount and umount outside the timing) vs curl --parallel --parallel-max ${a.parallel} to files on the same disk; server files in the page cache, dirty pages synced before each${failure ? `; desfs sync FAILED: ${failure}` : ''}`,
      runs: `desfs ${list(f!.map((x) => mbps(total, x)))}, curl ${list(c!.map((x) => mbps(total, x)))} MB/s; the daemon's CPU during each sync (user+system s): ${cpu.join(', ')}`,
    })
  }
}

/** ls, stat, find: a synthetic tree with sizes pre-seeded (no archive involved) vs the same tree on local disk. */
async function measureTree(a: Args, base: string, out: Result[]): Promise<void> {
  const dir = join(base, 'tree')
  const m = { db: join(dir, 'metadata.db'), state: join(dir, 'state'), cache: join(dir, 'cache') }
  for (const p of [m.state, m.cache]) mkdirSync(p, { recursive: true, mode: 0o700 })
  say(`generating ${a.rows.toLocaleString()} rows with sizes pre-seeded, and the same tree of empty files on local disk`)
  const gen = generateSynthetic({ db: m.db, rows: a.rows, bigDir: a.entries, bigDirs: 1, facts: join(m.state, 'facts.sqlite') })
  const local = { tree: join(dir, 'local'), db: join(dir, 'local.db') }
  const lgen = generateSynthetic({ db: local.db, rows: a.rows, bigDir: a.entries, bigDirs: 1, localTree: local.tree })
  say(`  ${gen.files.toLocaleString()} files in ${gen.dirs.toLocaleString()} directories`)
  const d = await startBenchDaemon(base, { db: m.db, archive: 'http://127.0.0.1:9', stateDir: m.state, cacheDir: m.cache })
  try {
    // The mount is up before the tree index is; wait until it answers.
    const end = Date.now() + 600_000
    while ((await timedOutput('stat', ['-c', '%F', join(d.mnt, 'OPS')])).code !== 0) {
      if (Date.now() > end) throw new Error(`the mount did not answer within 600 s:\n${d.log()}`)
      await sleep(200)
    }
    const spawn0 = await spawnCost()
    const entries = gen.files + gen.dirs
    const procNote = `process start (${spawn0.toFixed(1)} ms) subtracted`
    // Two meanings of "cold": echo 3 drops everything, so local disk and the daemon's index are read
    // from disk again; echo 2 drops the kernel's dentries and inodes (every FUSE entry and attribute)
    // but keeps cached file data and metadata blocks, as on a machine where both have been used.
    const levels = [3, 2] as const
    const what = { 3: 'all caches dropped (echo 3)', 2: 'dentries+inodes dropped (echo 2)' }
    // Dropping dentries makes the kernel send the daemon a FORGET for each: wait until the daemon is
    // idle again, so the timing that follows measures the lookups, not the tail of that burst.
    const settled: number[] = []
    const settle = async (level: 2 | 3) => {
      if (dropCaches(level)) settled.push(await waitIdle(d.child.pid!, a.settleMs))
    }
    const how = (l: 2 | 3) => {
      const waited = settled.length ? f0(median(settled.splice(0))) : '-'
      return `kernel caches dropped before each (echo ${l} > /proc/sys/vm/drop_caches${l === 2 ? ': dentries and inodes, page cache kept' : ': page cache, dentries, inodes'}, then until the daemon had used no CPU for ${a.settleMs} ms: ${waited} ms median)${cacheNote()}`
    }

    if (a.measures.has('ls')) {
      const dirs = [join(d.mnt, gen.bigDirs[0]!), join(local.tree, lgen.bigDirs[0]!)]
      const lines = new Map<string, number>()
      for (const p of dirs) await timedOutput('ls', ['-l', p]) // sizes known, daemon warm
      for (const level of levels) {
        const lsl = async (p: string) => {
          await settle(level)
          const r = await timedOutput('ls', ['-l', p])
          if (r.code !== 0) throw new Error(`ls -l ${p} failed`)
          lines.set(p, r.stdout.split('\n').length - 2)
          return r.ms - spawn0
        }
        say(`ls -l of ${a.entries} entries, ${what[level]}`)
        const [f, l] = await alternate(a.reps, [() => lsl(dirs[0]!), () => lsl(dirs[1]!)])
        const [mf, ml] = [median(f!), median(l!)]
        out.push({
          measure: `ls -l ${lines.get(dirs[0]!)} entries, ${what[level]} (ms)`,
          desfs: f0(mf),
          baseline: f0(ml),
          ratio: mf / ml,
          target: '≤ 2x',
          met: mf / ml <= 2,
          how: `ls -l in a child, listed once before, ${how(level)}; local: empty files of the same names (${lines.get(dirs[1]!)} lines); ${procNote}`,
          runs: `desfs ${list(f!)}, local ${list(l!)} ms`,
        })
      }
    }

    if (a.measures.has('stat')) {
      const paths = [
        samplePaths(m.db, gen.files, a.statFiles).map((p) => join(d.mnt, p)),
        samplePaths(local.db, lgen.files, a.statFiles).map((p) => join(local.tree, p)),
      ]
      for (const level of levels) {
        say(`stat of ${paths[0]!.length} files, ${what[level]}`)
        const p50 = [[] as number[], [] as number[]]
        const [f, l] = await alternate(
          a.reps,
          [0, 1].map((i) => async () => {
            await settle(level)
            const r = await statTimes(paths[i]!)
            p50[i]!.push(r.cold[0]!)
            return r.cold[1]!
          }),
        )
        const [mf, ml] = [median(f!), median(l!)]
        out.push({
          measure: `stat p99, ${what[level]} (µs)`,
          desfs: f0(mf),
          baseline: f0(ml),
          ratio: mf / ml,
          target: '≤ 300 µs',
          met: mf <= 300,
          how: `python3 os.stat of ${paths[0]!.length} files spread over the tree, each call timed (perf_counter_ns), ${how(level)}; p50 desfs ${f0(median(p50[0]!))} µs, local ${f0(median(p50[1]!))} µs; ratio is desfs/local, the target absolute`,
          runs: `p99 desfs ${list(f!)}, local ${list(l!)} µs`,
        })
      }
    }

    if (a.measures.has('find')) {
      const roots = [d.mnt, local.tree]
      const found = [0, 0]
      for (const level of levels) {
        say(`find -name over ${entries.toLocaleString()} entries, ${what[level]}`)
        const [f, l] = await alternate(
          a.reps,
          [0, 1].map((i) => async () => {
            await settle(level)
            const r = await timedOutput('find', [roots[i]!, '-name', '*_r_c27_*'])
            found[i] = r.stdout.split('\n').filter(Boolean).length
            return r.ms - spawn0
          }),
        )
        const [mf, ml] = [median(f!), median(l!)]
        out.push({
          measure: `find -name over ${entries.toLocaleString()} entries, ${what[level]} (ms)`,
          desfs: f0(mf),
          baseline: f0(ml),
          ratio: mf / ml,
          target: '≤ 2.5x',
          met: mf / ml <= 2.5,
          how: `find ROOT -name '*_r_c27_*' in a child, ${how(level)}; found ${found[0]} / ${found[1]} (expected ${gen.rC27}); ${procNote}; the issue's target is for 1M entries (--million)`,
          runs: `desfs ${list(f!)}, local ${list(l!)} ms`,
        })
      }
    }
  } finally {
    await d.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function run(argv: string[]): Promise<void> {
  if (argv.includes('--help')) return void console.log(USAGE)
  let a: Args
  try {
    a = parseArgs(argv)
  } catch (err) {
    console.error(`plane: ${(err as Error).message}`)
    process.exitCode = 2
    return
  }
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-plane-'))
  const out: Result[] = []
  const notes: string[] = []
  const t0 = now()
  if (!isRoot) notes.push('not root: caches cannot be dropped (echo 3 > /proc/sys/vm/drop_caches), so "cold" rows are warm')
  try {
    const files = a.measures.has('cached') || a.measures.has('readers') || a.measures.has('cold')
    if (files || a.measures.has('sync')) {
      const root = join(base, 'archive')
      const bytes = Math.round((a.sizeMb * 1e6) / 4) * 4
      const nBig = a.measures.has('readers') ? a.readers : 1
      say(
        `generating the archive: ${files ? `${nBig} x ${f0(bytes / 1e6)} MB` : ''}${files && a.measures.has('sync') ? ' and ' : ''}${a.measures.has('sync') ? `${a.syncFiles} x ${a.syncMb} MB` : ''}`,
      )
      const big = files ? writeRandomFiles(root, nBig, bytes, { firstExposure: 400000 }) : []
      const small = a.measures.has('sync') ? writeRandomFiles(root, a.syncFiles, a.syncMb * 1e6, { firstExposure: 300000 }) : []
      const db = join(base, 'metadata.db')
      writeFileTable(db, [...big, ...small])
      const srv = await startServers(root, base, a.servers)
      notes.push(...srv.notes)
      if (!srv.list.length) throw new Error(`no archive server to measure against: ${srv.notes.join('; ')}`)
      try {
        if (a.measures.has('cached') || a.measures.has('readers'))
          await measureCached(a, base, db, root, big.map(relPath), bytes, srv, out, notes)
        if (a.measures.has('cold')) await measureCold(a, base, db, root, relPath(big[0]!), bytes, srv, out, notes)
        if (a.measures.has('sync')) await measureSync(a, base, db, root, small, srv, out)
      } finally {
        await srv.stop()
      }
      rmSync(root, { recursive: true, force: true })
    }
    if (a.measures.has('ls') || a.measures.has('stat') || a.measures.has('find')) await measureTree(a, base, out)
  } finally {
    rmSync(base, { recursive: true, force: true })
  }

  const kernel = release()
  console.log(
    `\nplane benchmark (${new Date().toISOString()}, kernel ${kernel}, node ${process.version}, ${isRoot ? 'root' : 'not root'}, load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}, ${((now() - t0) / 60000).toFixed(1)} min)`,
  )
  console.log(
    `median of ${a.reps} runs, desfs and baseline alternating; ratio = desfs/baseline: of rates for MB/s rows (higher is better), of times for ms and µs rows (lower is better)\n`,
  )
  const fmt = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : '-')
  table([
    ['measure', 'desfs', 'baseline', 'ratio', 'target', 'met'],
    ...out.map((r) => [r.measure, r.desfs, r.baseline, fmt(r.ratio), r.target, r.met === undefined ? '-' : r.met ? 'yes' : 'NO']),
  ])
  console.log('\nhow each was measured, and every run:')
  for (const r of out) console.log(`- ${r.measure}: ${r.how}. Runs: ${r.runs}.`)
  if (notes.length) console.log('\nnotes:\n' + notes.map((n) => `- ${n}`).join('\n'))
  if (process.env.DESFS_BENCH_OUT)
    appendFileSync(
      process.env.DESFS_BENCH_OUT,
      JSON.stringify({ bench: 'plane', at: new Date().toISOString(), results: out, notes }) + '\n',
    )
}
