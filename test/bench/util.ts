// Small helpers shared by the benchmarks: wall-clock timing, percentiles, printing a table, dropping
// the kernel's caches, timing a command in a child process, the archive and its files to read, and a
// desfs daemon to measure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { ArchiveServer } from '../../bin/demo/server.js'
import { makeToken, writeTokenFile } from '../../bin/demo/token.js'
import { DESFS } from '../helpers.js'

export function now(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = now()
  const value = await fn()
  return { ms: now() - t0, value }
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!
}

export function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000)
}

/** Prints rows as an aligned table. */
export function table(rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(c < 10 ? 3 : 1)) : c)))
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  for (const r of cells) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '))
}

/** Resident set size of a process in MB, from /proc. */
export async function rssMb(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises')
  const text = await readFile(`/proc/${pid}/status`, 'utf8')
  const m = /VmRSS:\s+(\d+) kB/.exec(text)
  return m ? Number(m[1]) / 1024 : NaN
}

export function median(values: number[]): number {
  return percentile(values, 50)
}

/** The value of `--name VALUE` in a bench's arguments, or def. */
export function option(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def
}

export const isRoot = process.getuid?.() === 0

/**
 * Drops the kernel's caches (echo LEVEL > /proc/sys/vm/drop_caches): 3 the page cache, dentries and
 * inodes; 2 dentries and inodes only (file data and the disk's metadata blocks stay cached). False when
 * not root.
 */
export function dropCaches(level: 2 | 3 = 3): boolean {
  if (!isRoot) return false
  execFileSync('sync')
  writeFileSync('/proc/sys/vm/drop_caches', String(level))
  return true
}

/**
 * Runs a command in a child process with its output thrown away (never piped through node: `cat F`
 * is `cat F > /dev/null`), returning wall milliseconds including the process start. Throws with the
 * command's stderr when it fails.
 */
export async function timedRun(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<number> {
  const t0 = now()
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: opts.env ?? process.env })
  let err = ''
  child.stderr!.on('data', (d: Buffer) => (err += d))
  // A tool that is not installed fails with 'error' and no 'exit': a clear error, not a crash.
  const code = await new Promise<number | string | null>((r) => {
    child.once('exit', r)
    child.once('error', (e: NodeJS.ErrnoException) => r(e.code === 'ENOENT' ? `${cmd} is not installed` : e.message))
  })
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${code}): ${err.slice(0, 500)}`)
  return now() - t0
}

export interface BenchDaemon {
  mnt: string
  dir: string
  stateDir: string
  cacheDir: string
  child: ChildProcess
  /** Environment that points desfs commands (status, cache, sync) at this daemon. */
  env: NodeJS.ProcessEnv
  log: () => string
  stop: () => Promise<void>
}

/**
 * Starts `desfs mount --foreground` in a child process in a new directory under `base` (mnt, state,
 * cache), waits until the mount is up, and returns how to stop it (SIGTERM, then SIGKILL and a lazy
 * unmount if it hangs; the directory is removed).
 */
export async function startBenchDaemon(
  base: string,
  o: {
    db: string
    archive: string
    tokenFile?: string
    blockSize?: string
    flags?: string[]
    env?: NodeJS.ProcessEnv
    stateDir?: string
    cacheDir?: string
  },
): Promise<BenchDaemon> {
  const dir = mkdtempSync(join(base, 'd-'))
  const mnt = join(dir, 'mnt')
  mkdirSync(mnt)
  const stateDir = o.stateDir ?? join(dir, 'state')
  const cacheDir = o.cacheDir ?? join(dir, 'cache')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DESFS_CONFIG: join(dir, 'none'),
    DESFS_STATE_DIR: stateDir,
    DESFS_CACHE_DIR: cacheDir,
    ...(o.blockSize ? { DESFS_BLOCK_SIZE: o.blockSize } : {}),
    ...(o.tokenFile ? {} : { DESFS_TOKEN_FILE: join(dir, 'no-token') }),
    ...(o.env ?? {}),
  }
  const args = [
    DESFS,
    'mount',
    mnt,
    '--foreground',
    '--db',
    o.db,
    '--archive',
    o.archive,
    ...(o.tokenFile ? ['--token-file', o.tokenFile] : []),
    '--state-dir',
    stateDir,
    '--cache-dir',
    cacheDir,
    '--cache-size',
    '2G',
    '--log-level',
    'warn',
    ...(o.flags ?? []),
  ]
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d))
  child.stderr!.on('data', (d: Buffer) => (out += d))
  const t0 = Date.now()
  const { mountedType } = await import('../../fs/mount.js')
  while (!(await mountedType(mnt))?.startsWith('fuse')) {
    if (Date.now() - t0 > 600_000 || child.exitCode !== null) throw new Error(`daemon did not mount:\n${out}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  await new Promise((r) => setTimeout(r, 300))
  return {
    mnt,
    dir,
    stateDir,
    cacheDir,
    child,
    env,
    log: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        if (!(await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 30_000))]))) {
          child.kill('SIGKILL')
          await exited
        }
      }
      if ((await mountedType(mnt))?.startsWith('fuse')) await timedRun('fusermount', ['-uz', mnt]).catch(() => undefined)
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** CPU time (clock ticks, 1/100 s on Linux) a process has used so far, user and system, from /proc; NaN once it is gone. */
export function cpuTime(pid: number): { user: number; sys: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from the 3rd (state) on
    return { user: Number(f[11]), sys: Number(f[12]) } // utime, stime: fields 14 and 15
  } catch {
    return { user: NaN, sys: NaN }
  }
}

/** CPU time (user + system, clock ticks) a process has used so far; NaN once it is gone. */
export function cpuTicks(pid: number): number {
  const t = cpuTime(pid)
  return t.user + t.sys
}

/**
 * Waits until a process has used no CPU for `quietMs` (it has worked off what it was sent, e.g. a
 * burst of FORGETs after the kernel dropped its dentries), at most `maxMs`. Returns the ms waited.
 */
export async function waitIdle(pid: number, quietMs = 300, maxMs = 15_000): Promise<number> {
  const t0 = now()
  let last = cpuTicks(pid)
  let quietSince = now()
  while (now() - t0 < maxMs && !Number.isNaN(last)) {
    await new Promise((r) => setTimeout(r, 50))
    const t = cpuTicks(pid)
    if (t !== last) {
      last = t
      quietSince = now()
    } else if (now() - quietSince >= quietMs) break
  }
  return now() - t0
}

/**
 * Owns the fixtures of a benchmark (test/helpers.ts's startServer, startDaemon, tmp ... take one as
 * a tap Test would be): close() runs their cleanups, the last registered first.
 */
export class BenchScope {
  private cleanups: (() => unknown)[] = []
  teardown(fn: () => unknown): void {
    this.cleanups.push(fn)
  }
  async close(): Promise<void> {
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn()
      } catch (err) {
        process.stderr.write(`cleanup failed: ${(err as Error).message}\n`)
      }
    }
  }
}

/** A bench's archive: the dCache-like server over `root`, and a day-long token written under `base`. */
export async function startBenchArchive(
  base: string,
  root: string,
  tokenDir = 'tok',
): Promise<{ server: ArchiveServer; token: string; tokenFile: string }> {
  const token = makeToken({}, 86400)
  const tokenFile = join(base, tokenDir, 'bearer_token')
  writeTokenFile(tokenFile, token)
  const server = await new ArchiveServer({ root, tokens: [token], redirect: true }).start()
  return { server, token, tokenFile }
}

/**
 * Adds `n` files to an archive and to its metadata DB (one transaction): `write(i)` writes file i
 * into the archive and gives its directory and name. Returns the archive paths.
 */
export function addBenchFiles(db: string, n: number, firstId: number, write: (i: number) => [dir: string, name: string]): string[] {
  const sql = new Database(db)
  const ins = sql.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, NULL, ?)')
  const out: string[] = []
  try {
    sql.transaction(() => {
      for (let i = 0; i < n; i++) {
        const [dir, name] = write(i)
        ins.run(name, dir, firstId + i)
        out.push(`${dir}/${name}`)
      }
    })()
  } finally {
    sql.close()
  }
  return out
}

/**
 * Prints a benchmark's table under one line saying when, on what and under which load it ran (and
 * `notes`), and appends the rows to $DESFS_BENCH_OUT when set.
 */
export function report(name: string, notes: string, rows: (string | number)[][]): void {
  console.log(
    `${name} benchmark (${new Date().toISOString()}, node ${process.version}, load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}${notes})`,
  )
  table(rows)
  if (process.env.DESFS_BENCH_OUT) appendFileSync(process.env.DESFS_BENCH_OUT, JSON.stringify(rows) + '\n')
}
