// Test harness: temporary dirs, the generated archive and its server, a desfs daemon in a child
// process, and commands run against the mount from child processes (the test process itself never
// touches a mountpoint). Every wait is bounded; everything started is stopped at teardown.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, mkdirSync, existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { generateArchive, type GenerateOptions, type Manifest } from '../bin/demo/generate.js'
import { ArchiveServer, type ArchiveServerOptions } from '../bin/demo/server.js'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { mountedType } from '../fs/mount.js'

export const DESFS = fileURLToPath(new URL('../bin/desfs.js', import.meta.url))
export const PYTHON = '/usr/bin/python3' // Debian's, where python3-fitsio and python3-astropy live

/**
 * What a fixture needs from its owner: a place to register its cleanup. A tap Test is one; the
 * benchmarks use their own (BenchScope in bench/util.ts).
 */
export interface Scope {
  teardown(fn: () => unknown): void
}

export function tmp(t: Scope, prefix = 'desfs-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs a command in a child process, never longer than timeoutMs. `binary` keeps stdout byte-exact (latin1). */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string; input?: string; binary?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        env: opts.env ?? process.env,
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 256 << 20,
        cwd: opts.cwd,
        encoding: opts.binary ? 'latin1' : 'utf8',
      },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, signal: e?.signal ?? null, stdout, stderr })
      },
    )
    if (opts.input !== undefined) child.stdin?.end(opts.input)
  })
}

export function desfs(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return run(process.execPath, [DESFS, ...args], opts)
}

/** True when a program is on PATH. */
export function hasTool(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, name)))
}

/**
 * Ends a test that cannot run here, saying why: tap reports a skip with the reason (a bare
 * `t.plan(0)` would pass the test quietly).
 */
export function skipBecause(t: Test, why: string): void {
  t.skip(why, () => undefined)
}

/**
 * Makes sure a program the test needs is installed: in CI a missing tool fails the test (CI installs
 * them all); on a developer's machine the test is skipped with a note.
 */
export function needTool(t: Test, name: string, pkg: string): boolean {
  if (name.startsWith('/') ? existsSync(name) : hasTool(name)) return true
  if (process.env.CI) t.fail(`${name} is not installed (Debian package ${pkg}); .ci/run installs it`)
  else skipBecause(t, `${name} not installed (apt-get install ${pkg})`)
  return false
}

/**
 * A self-signed certificate for 127.0.0.1 made with openssl in a temp dir of the test (PEM files),
 * or undefined when openssl is missing (the test is skipped, or fails under CI).
 */
export async function localCert(t: Test): Promise<{ keyFile: string; certFile: string } | undefined> {
  if (!needTool(t, 'openssl', 'openssl')) return undefined
  const dir = tmp(t)
  const keyFile = join(dir, 'key.pem')
  const certFile = join(dir, 'cert.pem')
  const r = await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ])
  t.equal(r.code, 0, 'openssl made a certificate for 127.0.0.1')
  return { keyFile, certFile }
}

export function needPythonModule(t: Test, mod: string, pkg: string): boolean {
  if (!existsSync(PYTHON)) return needTool(t, PYTHON, 'python3')
  const r = execFileSyncQuiet(PYTHON, ['-c', `import ${mod}`])
  if (r) return true
  if (process.env.CI) t.fail(`python module ${mod} is not installed (Debian package ${pkg})`)
  else skipBecause(t, `python module ${mod} not installed (apt-get install ${pkg})`)
  return false
}

function execFileSyncQuiet(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 })
    return true
  } catch {
    return false
  }
}

export interface ArchiveFixture {
  dir: string
  root: string
  db: string
  manifest: Manifest
}

export function makeArchive(t: Scope, opts: Omit<GenerateOptions, 'out'> = {}): ArchiveFixture {
  const dir = tmp(t, 'desfs-archive-')
  const manifest = generateArchive({ out: dir, ...opts })
  return { dir, root: join(dir, 'archive'), db: join(dir, 'metadata.db'), manifest }
}

export interface ServerFixture {
  server: ArchiveServer
  token: string
  tokenFile: string
}

export async function startServer(t: Scope, root: string, opts: Partial<ArchiveServerOptions> = {}): Promise<ServerFixture> {
  const token = makeToken()
  const dir = tmp(t, 'desfs-token-')
  const tokenFile = join(dir, 'des_archive_access', 'bearer_token')
  writeTokenFile(tokenFile, token)
  const server = await new ArchiveServer({ root, tokens: [token], redirect: true, ...opts }).start()
  t.teardown(() => server.stop())
  return { server, token, tokenFile }
}

export interface DaemonFixture {
  mnt: string
  stateDir: string
  cacheDir: string
  child: ChildProcess
  /** Everything the daemon logged so far. */
  log: () => string
  /** Stops the daemon (SIGTERM) and waits until it exited and the mount is gone. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
  exited: Promise<number | null>
}

export interface DaemonOptions {
  db: string
  archive: string
  tokenFile?: string
  /** Extra flags for desfs mount. */
  flags?: string[]
  env?: NodeJS.ProcessEnv
  mnt?: string
  stateDir?: string
  cacheDir?: string
  /** Resolve once the mount is up (default) or right after spawning. */
  waitMounted?: boolean
}

async function until(cond: () => Promise<boolean> | boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return cond()
}

export { until }

/** Starts `desfs mount --foreground` in a child process and waits until the mount is up. */
export async function startDaemon(t: Scope, o: DaemonOptions): Promise<DaemonFixture> {
  const base = tmp(t, 'desfs-mnt-')
  const mnt = o.mnt ?? join(base, 'DESDATA')
  const stateDir = o.stateDir ?? join(base, 'state')
  const cacheDir = o.cacheDir ?? join(base, 'cache')
  try {
    mkdirSync(mnt, { recursive: true })
  } catch (err) {
    // A stale mount the daemon must recover answers ENOTCONN, or ECONNABORTED right after the kill.
    if (!['ENOTCONN', 'ECONNABORTED'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
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
    '--state-dir',
    stateDir,
    '--cache-dir',
    cacheDir,
    ...(o.tokenFile ? ['--token-file', o.tokenFile] : []),
    ...(o.flags ?? []),
  ]
  const env = { ...process.env, DESFS_CONFIG: join(base, 'no-config'), ...(o.env ?? {}) }
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  let exitCode: number | null | undefined
  void exited.then((c) => (exitCode = c))
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (exitCode === undefined) child.kill(signal)
    const code = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000).unref())])
    if (exitCode === undefined) child.kill('SIGKILL')
    if ((await mountedType(mnt))?.startsWith('fuse')) await run('fusermount', ['-uz', mnt], { timeoutMs: 10_000 })
    return code
  }
  t.teardown(async () => {
    await stop()
  })
  const fixture: DaemonFixture = { mnt, stateDir, cacheDir, child, log: () => output, stop, exited }
  if (o.waitMounted !== false) {
    // The daemon logs "info mounted" once its own mount is up (a stale one may be there before).
    const up = await until(() => exitCode !== undefined || / info mounted /.test(output), 60_000)
    if (!up || exitCode !== undefined) throw new Error(`daemon did not mount (exit ${exitCode}):\n${output}`)
  }
  return fixture
}

/**
 * kill -9 of the daemon and of its unmount watchdog (as when the OOM killer takes both): the dead
 * mount stays behind, for the tests of stale-mount recovery.
 */
export async function killLeavingStaleMount(d: DaemonFixture): Promise<void> {
  await run('pkill', ['-KILL', '-P', String(d.child.pid), '-f', 'umount -l'])
  d.child.kill('SIGKILL')
  await d.exited
}

/** The generated file's bytes, for comparisons. */
export function sourceBytes(a: ArchiveFixture, rel: string): Buffer {
  return readFileSync(join(a.root, rel))
}

export const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex')

/** md5sum's output as path -> md5. */
export function parseMd5sum(stdout: string): Map<string, string> {
  return new Map(
    stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(34), l.slice(0, 32)]),
  )
}

/** A process's command line, or undefined once it has ended (a zombie counts as ended). */
function liveCmdline(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return undefined
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')
  } catch {
    return undefined
  }
}

/** Pids of running processes whose command line contains every one of `parts`. */
export function processesMatching(...parts: string[]): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      const cmd = liveCmdline(pid)
      return cmd !== undefined && parts.every((p) => cmd.includes(p))
    })
}

/**
 * Pids of running processes whose command line contains `part` and that hold a file under `dir` open
 * (a detached daemon's command line does not name its state dir; its open log does).
 */
export function processesHolding(part: string, dir: string): number[] {
  return processesMatching(part).filter((pid) => {
    try {
      return readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(dir + '/')
        } catch {
          return false
        }
      })
    } catch {
      return false
    }
  })
}

/** True while the process runs (not ended, not a zombie). */
export function processAlive(pid: number): boolean {
  return liveCmdline(pid) !== undefined
}
