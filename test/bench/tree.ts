// `npm run bench -- tree [--rows N] [--ten-million] [--local-rows N] [--stat-all] [--keep] [--dir D]`
//
// The tree at archive scale. Generates a synthetic metadata DB in the real DES layout (default 1M
// files; --ten-million for 10M) with every size pre-seeded in the state dir, so the archive is never
// involved, and measures through a real mount, from child processes only:
//   index build time and size; daemon RSS after mount and after find over the whole tree;
//   ls -l of a 10,000-entry directory, cold and again; stat p50/p99 cold and kernel-cached;
//   find -name '*_r_c27_*' over the whole tree; time until a restarted daemon answers.
// The same operations run on a tree of empty files of the same shape on local disk (at most 1M files:
// creating 10M empty files takes too long) and through bindfs (a C FUSE file system) over that local
// tree (the floor any FUSE daemon pays per operation), so the note
// can say where the gap comes from. desfs's own share of a getattr is timed in-process as well.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { generateSynthetic, type SyntheticResult } from '../archive/synthetic.js'
import { Facts } from '../../fs/facts.js'
import { Tree } from '../../fs/tree.js'
import { TreeIndex } from '../../fs/tree-index.js'
import type { Source } from '../../cache/sources/source.js'
import { mountedType } from '../../fs/mount.js'
import { now, percentile, rssMb, table } from './util.js'
import { archiveIdentity } from '../../cache/sources/archive.js'

/** The archive URL the benchmark's daemon is given: nothing listens there (every size is pre-seeded). */
const NO_ARCHIVE = 'http://127.0.0.1:9'

const DESFS = fileURLToPath(new URL('../../bin/desfs.js', import.meta.url))
const SELF = fileURLToPath(import.meta.url)
const PYTHON = '/usr/bin/python3'

interface Args {
  rows: number
  localRows: number
  statAll: boolean
  keep: boolean
  dir: string
}

function parseArgs(argv: string[]): Args {
  const a: Args = { rows: 1_000_000, localRows: 1_000_000, statAll: false, keep: false, dir: '/tmp/desfs-bench-tree' }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    if (k === '--rows') a.rows = Number(argv[++i])
    else if (k === '--ten-million') a.rows = 10_000_000
    else if (k === '--local-rows') a.localRows = Number(argv[++i])
    else if (k === '--stat-all') a.statAll = true
    else if (k === '--keep') a.keep = true
    else if (k === '--dir') a.dir = argv[++i]!
    else throw new Error(`unknown option ${k}`)
  }
  a.localRows = Math.min(a.localRows, a.rows)
  return a
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Runs a command to completion; returns wall time (ms, including the process start) and output. */
export function timedOutput(
  cmd: string,
  args: string[],
  input?: string,
  env?: NodeJS.ProcessEnv,
): Promise<{ ms: number; stdout: string; code: number | null }> {
  return new Promise((resolve) => {
    const t0 = now()
    const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], env: env ?? process.env })
    let stdout = ''
    c.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
    c.on('exit', (code) => resolve({ ms: now() - t0, stdout, code }))
    c.on('error', (e) => resolve({ ms: now() - t0, stdout: `${cmd}: ${e.message}`, code: -1 })) // not installed
    c.stdin!.on('error', () => undefined) // commands that read no input may exit first
    c.stdin!.end(input ?? '')
  })
}

/** Time of a no-op process start, subtracted from command timings. */
export async function spawnCost(): Promise<number> {
  const t: number[] = []
  for (let i = 0; i < 5; i++) t.push((await timedOutput('true', [])).ms)
  return percentile(t, 50)
}

// Times os.stat of each path twice (cold, then kernel-cached), in one Python process.
const STAT_SCRIPT = `
import os, sys, json, time
paths = sys.stdin.read().split('\\0')[:-1]
def run():
    t = []
    for p in paths:
        a = time.perf_counter_ns(); os.stat(p); t.append(time.perf_counter_ns() - a)
    t.sort()
    return [t[len(t)//2] / 1000, t[min(len(t)-1, int(len(t)*0.99))] / 1000, sum(t) / len(t) / 1000]
print(json.dumps({'cold': run(), 'cached': run(), 'n': len(paths)}))
`

export async function statTimes(paths: string[]): Promise<{ cold: number[]; cached: number[]; n: number }> {
  const r = await timedOutput(PYTHON, ['-c', STAT_SCRIPT], paths.map((p) => p + '\0').join(''))
  return JSON.parse(r.stdout) as { cold: number[]; cached: number[]; n: number }
}

/** Every `step`-th valid file of a synthetic DB, as archive-relative paths. */
export function samplePaths(db: string, files: number, count: number): string[] {
  const d = new Database(db, { readonly: true })
  try {
    const step = Math.max(1, Math.floor(files / count))
    return (
      d
        .prepare('SELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE rowid % ? = 1 AND rowid <= ?')
        .raw(true)
        .all(step, files) as [string, string, string | null][]
    ).map(([p, f, c]) => `${p}/${f}${c ?? ''}`)
  } finally {
    d.close()
  }
}

interface Daemon {
  child: ChildProcess
  log: () => string
  stop: () => Promise<void>
}

async function startDaemon(
  mnt: string,
  db: string,
  stateDir: string,
  cacheDir: string,
): Promise<Daemon & { mountedMs: number; answerMs: number }> {
  const t0 = now()
  const child = spawn(
    process.execPath,
    [DESFS, 'mount', mnt, '--foreground', '--db', db, '--archive', NO_ARCHIVE, '--state-dir', stateDir, '--cache-dir', cacheDir],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DESFS_CONFIG: '/nonexistent', DESFS_TOKEN_FILE: '/nonexistent' },
    },
  )
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  let exited = false
  child.on('exit', () => (exited = true))
  const deadline = Date.now() + 30 * 60_000
  let mountedMs = NaN
  let answerMs = NaN
  while (Date.now() < deadline && !exited) {
    if (Number.isNaN(mountedMs) && / info mounted /.test(out)) mountedMs = now() - t0
    if (!Number.isNaN(mountedMs)) {
      const r = await timedOutput('stat', ['-c', '%F', join(mnt, 'OPS')])
      if (r.code === 0) {
        answerMs = now() - t0
        break
      }
    }
    await sleep(20)
  }
  if (Number.isNaN(answerMs)) throw new Error(`daemon did not come up:\n${out}`)
  const stop = async () => {
    if (!exited) child.kill('SIGTERM')
    for (let i = 0; i < 300 && !exited; i++) await sleep(100)
    if (!exited) child.kill('SIGKILL')
    if ((await mountedType(mnt))?.startsWith('fuse')) await timedOutput('fusermount', ['-uz', mnt])
  }
  return { child, log: () => out, stop, mountedMs, answerMs }
}

/** A C FUSE file system (Debian's bindfs, read-only) over the local tree: the per-operation floor. */
async function floorMount(src: string, mnt: string): Promise<{ stop: () => Promise<void> }> {
  await timedOutput('bindfs', ['-r', '-o', 'attr_timeout=86400,entry_timeout=3600', src, mnt])
  return {
    stop: async () => {
      if ((await mountedType(mnt))?.startsWith('fuse')) await timedOutput('umount', ['-l', mnt])
    },
  }
}

/** desfs's own share of a getattr: Tree.statNow in-process on a fresh Tree (empty caches). */
function inProcessLookups(indexFile: string, factsFile: string, paths: string[]): { coldUs: number; warmUs: number } {
  const index = new TreeIndex(indexFile)
  const facts = new Facts(factsFile, archiveIdentity(NO_ARCHIVE))
  const tree = new Tree(index, facts, {} as Source, { deadlineMs: 1000 })
  const time = () => {
    const t0 = now()
    for (const p of paths) if (!tree.statNow('/' + p)) throw new Error(`not resolved: ${p}`)
    return ((now() - t0) * 1000) / paths.length
  }
  const coldUs = time()
  const warmUs = time()
  index.close()
  facts.close()
  return { coldUs, warmUs }
}

function dirSize(dir: string, re: RegExp): number {
  return readdirSync(dir)
    .filter((n) => re.test(n))
    .reduce((a, n) => a + statSync(join(dir, n)).size, 0)
}

const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`
const ms = (x: number) => `${x.toFixed(0)} ms`
const us = (x: number) => `${x.toFixed(1)} µs`

export async function run(argv: string[]): Promise<void> {
  const args = parseArgs(argv)
  const root = args.dir
  rmSync(root, { recursive: true, force: true })
  mkdirSync(root, { recursive: true })
  const say = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`)
  try {
    // 1. Data: the DB with sizes pre-seeded, and the local tree of the same shape.
    const m = {
      dir: join(root, 'mount'),
      db: join(root, 'mount', 'metadata.db'),
      state: join(root, 'mount', 'state'),
      cache: join(root, 'mount', 'cache'),
      mnt: join(root, 'mount', 'DESDATA'),
    }
    for (const d of [m.state, m.cache, m.mnt]) mkdirSync(d, { recursive: true, mode: 0o700 })
    say(`generating ${args.rows.toLocaleString()} rows with sizes pre-seeded`)
    const gen: SyntheticResult = generateSynthetic({
      db: m.db,
      rows: args.rows,
      hostile: true,
      bigDirs: 3,
      facts: join(m.state, 'facts.sqlite'),
      onProgress: (n) => n % 1_000_000 === 0 && say(`  ${n.toLocaleString()} rows`),
    })
    say(
      `  done in ${gen.seconds.toFixed(0)} s: ${gen.files.toLocaleString()} files in ${gen.fileDirs.toLocaleString()} directories (${gen.dirs.toLocaleString()} in all); DB ${mb(statSync(m.db).size)}, facts ${mb(dirSize(m.state, /^facts/))}`,
    )
    const local = { dir: join(root, 'local'), tree: join(root, 'local', 'DESDATA'), db: join(root, 'local', 'metadata.db') }
    say(`creating the local tree: ${args.localRows.toLocaleString()} empty files`)
    mkdirSync(local.tree, { recursive: true })
    const lgen = generateSynthetic({ db: local.db, rows: args.localRows, bigDirs: 3, localTree: local.tree })
    say(`  done in ${lgen.seconds.toFixed(0)} s`)
    const base = await spawnCost()

    // 2. Build and mount.
    say('mounting (building the index)')
    let d = await startDaemon(m.mnt, m.db, m.state, m.cache)
    const built = / tree index built .*seconds=([\d.]+)/.exec(d.log())
    const indexBytes = dirSize(m.state, /^tree-[0-9a-f]{16}\.sqlite$/)
    const rssMount = await rssMb(d.child.pid!)
    say(`  built in ${built?.[1]} s, mounted after ${ms(d.mountedMs)}; index ${mb(indexBytes)}; RSS ${rssMount.toFixed(0)} MB`)

    // 3. ls -l of 10,000-entry directories, each once cold (the median of three), then again.
    const lsl = async (dirs: string[]) => {
      const cold: number[] = []
      const again: number[] = []
      let lines = 0
      for (const dir of dirs) {
        const a = await timedOutput('ls', ['-l', dir])
        lines = a.stdout.split('\n').length - 2
        cold.push(a.ms - base)
        again.push((await timedOutput('ls', ['-l', dir])).ms - base)
      }
      return { cold: percentile(cold, 50), again: percentile(again, 50), all: cold.map((x) => x.toFixed(0)).join('/'), lines }
    }
    const lsMount = await lsl(gen.bigDirs.map((b) => join(m.mnt, b)))
    const lsLocal = await lsl(lgen.bigDirs.map((b) => join(local.tree, b)))
    mkdirSync(join(root, 'floor'))
    const floor = await floorMount(local.tree, join(root, 'floor'))
    const lsFloor = await lsl(lgen.bigDirs.map((b) => join(root, 'floor', b)))
    say(
      `  ls -l ${lsMount.lines} entries, cold: desfs ${lsMount.all} ms, again ${ms(lsMount.again)}; local ${lsLocal.all} ms; bindfs floor ${lsFloor.all} ms`,
    )

    // 4. stat p50/p99 on 5,000 files spread over the tree (each in a directory not visited yet).
    const sample = samplePaths(m.db, gen.files, 5000)
    const stMount = await statTimes(sample.map((p) => join(m.mnt, p)))
    const stLocal = await statTimes(samplePaths(local.db, lgen.files, 5000).map((p) => join(local.tree, p)))
    const stFloor = await statTimes(samplePaths(local.db, lgen.files, 5000).map((p) => join(root, 'floor', p)))
    await floor.stop()
    say(
      `  stat (n=${stMount.n}) desfs cold p50 ${us(stMount.cold[0]!)} p99 ${us(stMount.cold[1]!)}, cached p50 ${us(stMount.cached[0]!)} p99 ${us(stMount.cached[1]!)}`,
    )

    // 5. find -name over the whole tree; RSS after.
    const findName = async (dir: string) => {
      const r = await timedOutput('find', [dir, '-name', '*_r_c27_*'])
      return { ms: r.ms - base, found: r.stdout.split('\n').filter(Boolean).length }
    }
    const fMount = await findName(m.mnt)
    const rssFind = await rssMb(d.child.pid!)
    const fLocal = await findName(local.tree)
    const entries = gen.files + gen.dirs
    const lentries = lgen.files + lgen.dirs
    say(
      `  find: desfs ${ms(fMount.ms)} (${fMount.found} found, ${(entries / (fMount.ms / 1000)).toFixed(0)} entries/s); local ${ms(fLocal.ms)}; RSS after ${rssFind.toFixed(0)} MB`,
    )
    let statAll: { ms: number; rss: number; later: number } | undefined
    if (args.statAll) {
      const r = await timedOutput('find', [m.mnt, '-printf', '%s\\n'])
      statAll = { ms: r.ms - base, rss: await rssMb(d.child.pid!), later: NaN }
      // The memory guard asks the kernel to forget cached names; they go once the walk has ended
      // and the next lookup from the root has come (see fs/memory-guard.ts).
      await timedOutput('stat', [join(m.mnt, 'OPS')])
      await sleep(40_000)
      statAll.later = await rssMb(d.child.pid!)
      say(
        `  find -printf %s (a getattr per entry): ${ms(statAll.ms)}; RSS after ${statAll.rss.toFixed(0)} MB, 40 s later ${statAll.later.toFixed(0)} MB`,
      )
    }

    // 6. desfs's own share of a getattr, in-process.
    const guardFired = (d.log().match(/memory above the limit/g) ?? []).length
    const indexFile = join(
      m.state,
      readdirSync(m.state).find((n) => /^tree-[0-9a-f]{16}\.sqlite$/.test(n))!,
    )
    await d.stop()
    const own = inProcessLookups(indexFile, join(m.state, 'facts.sqlite'), sample)

    // 7. Restart on the existing index.
    d = await startDaemon(m.mnt, m.db, m.state, m.cache)
    const reused = / tree index reused /.test(d.log())
    const rssRestart = await rssMb(d.child.pid!)
    await d.stop()
    say(`  restart: mounted after ${ms(d.mountedMs)}, answering after ${ms(d.answerMs)} (index reused: ${reused})`)

    console.log(
      `\ntree benchmark: ${args.rows.toLocaleString()} rows (${gen.fileDirs.toLocaleString()} file directories), local tree ${args.localRows.toLocaleString()} files; process start (${base.toFixed(1)} ms) subtracted from command timings`,
    )
    const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(1)}x` : '-')
    table([
      ['measure', 'desfs', 'local disk', 'desfs/local', 'bindfs floor', 'target'],
      ['index build', `${built?.[1] ?? '?'} s`, '-', '-', '-', '≤ 180 s'],
      ['index size', mb(indexBytes), '-', '-', '-', ''],
      ['daemon RSS after mount', `${rssMount.toFixed(0)} MB`, '-', '-', '-', '≤ 250 MB'],
      ['daemon RSS after find', `${rssFind.toFixed(0)} MB`, '-', '-', '-', '≤ 250 MB'],
      ...(statAll
        ? [
            ['find -printf %s (a getattr each)', ms(statAll.ms), '-', '-', '-', ''],
            ['daemon RSS after that', `${statAll.rss.toFixed(0)} MB`, '-', '-', '-', ''],
            ['daemon RSS 40 s later', `${statAll.later.toFixed(0)} MB`, '-', '-', '-', ''],
          ]
        : []),
      [
        `ls -l ${lsMount.lines} entries, cold (median of 3)`,
        ms(lsMount.cold),
        ms(lsLocal.cold),
        ratio(lsMount.cold, lsLocal.cold),
        ms(lsFloor.cold),
        '≤ 150 ms',
      ],
      [
        `ls -l ${lsMount.lines} entries, again`,
        ms(lsMount.again),
        ms(lsLocal.again),
        ratio(lsMount.again, lsLocal.again),
        ms(lsFloor.again),
        '',
      ],
      ['stat p50 cold', us(stMount.cold[0]!), us(stLocal.cold[0]!), ratio(stMount.cold[0]!, stLocal.cold[0]!), us(stFloor.cold[0]!), ''],
      [
        'stat p99 cold',
        us(stMount.cold[1]!),
        us(stLocal.cold[1]!),
        ratio(stMount.cold[1]!, stLocal.cold[1]!),
        us(stFloor.cold[1]!),
        '≤ 300 µs',
      ],
      [
        'stat p50 cached',
        us(stMount.cached[0]!),
        us(stLocal.cached[0]!),
        ratio(stMount.cached[0]!, stLocal.cached[0]!),
        us(stFloor.cached[0]!),
        '',
      ],
      [
        'stat p99 cached',
        us(stMount.cached[1]!),
        us(stLocal.cached[1]!),
        ratio(stMount.cached[1]!, stLocal.cached[1]!),
        us(stFloor.cached[1]!),
        '≤ 10 µs',
      ],
      [
        `find -name over ${entries.toLocaleString()} / ${lentries.toLocaleString()} entries`,
        ms(fMount.ms),
        ms(fLocal.ms),
        ratio(fMount.ms / entries, fLocal.ms / lentries),
        '-',
        '',
      ],
      ['find entries/s', (entries / (fMount.ms / 1000)).toFixed(0), (lentries / (fLocal.ms / 1000)).toFixed(0), '-', '-', ''],
      ['find matches', String(fMount.found), String(fLocal.found), '-', '-', `${gen.rC27} / ${lgen.rC27}`],
      ['getattr in-process (Tree.statNow) cold', us(own.coldUs), '-', '-', '-', ''],
      ['getattr in-process (Tree.statNow) again', us(own.warmUs), '-', '-', '-', ''],
      ['restart: until mounted', ms(d.mountedMs), '-', '-', '-', ''],
      ['restart: until the mount answers', ms(d.answerMs), '-', '-', '-', '≤ 2000 ms'],
      ['daemon RSS after restart', `${rssRestart.toFixed(0)} MB`, '-', '-', '-', ''],
      ['memory guard fired (first daemon)', String(guardFired), '-', '-', '-', ''],
    ])
  } finally {
    if (!args.keep) rmSync(root, { recursive: true, force: true })
    else console.log(`data kept in ${root}`)
  }
}

if (process.argv[1] === SELF && process.argv[2] === '--help')
  console.log('npm run bench -- tree [--rows N | --ten-million] [--local-rows N] [--stat-all] [--keep] [--dir D]')
