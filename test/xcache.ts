// A real XRootD site cache for the tests and the site bench: an xrootd ORIGIN serving an archive
// directory over xroot, and an XCache (xrootd with the proxy storage plugin and the proxy file cache)
// in front of it, answering HTTP with byte ranges and PROPFIND, both on 127.0.0.1 in a temporary
// directory, as `nobody` (xrootd refuses to run as root).
//
// Layout of the temporary directory (it and everything in it made here, so opened to `nobody`):
//   export/            the origin's oss.localroot
//     archive -> ROOT  the archive's tree, so the site URL (.../archive) holds it at the same relative paths
//     probe            a file of our own, read to see that the chain answers without caching archive bytes
//   origin/, cache/    each server's config, log (origin/NAME/log) and admin dir
//   cache/data/        the XCache's data: each cached file at its path (archive/REL), its blocks at their
//                      own offsets, beside a REL.cinfo file saying which blocks are there
//
// Bytes served by the origin are counted from its own trace: `ofs.trace read` logs one
// `ofs_read: LEN@OFFSET fn=PATH` line per read the XCache asks of it (clamped to the file's size, as
// a read past the end returns less).
import { spawn, type ChildProcess } from 'node:child_process'
import { get as httpGet } from 'node:http'
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join, relative, resolve, sep } from 'node:path'
import { freePort } from './archive/nginx.js'

export const XROOTD = '/usr/bin/xrootd'
const PLUGIN_DIR = '/usr/lib/x86_64-linux-gnu'
/** The plugins the XCache loads (Debian's xrootd-server-plugins). */
const PLUGINS = ['libXrdPss-5.so', 'libXrdPfc-5.so', 'libXrdHttp-5.so']
/** The user xrootd runs as. */
const RUN_AS = 'nobody'
/** Where, under the site URL and under the origin's root, the archive's tree is. */
export const SITE_PREFIX = 'archive'

/** Why the XCache cannot run here, or undefined when it can. */
export function xcacheMissing(): string | undefined {
  if (!existsSync(XROOTD)) return `${XROOTD} is not installed (apt-get install xrootd-server)`
  for (const p of PLUGINS)
    if (!existsSync(join(PLUGIN_DIR, p))) return `${join(PLUGIN_DIR, p)} is not installed (apt-get install xrootd-server-plugins)`
  if (userInfo().uid !== 0) return 'the XCache fixture runs xrootd as nobody, which needs root'
  return undefined
}

/** One read the origin served. */
export interface OriginRead {
  /** Path relative to the archive's root. */
  path: string
  offset: number
  length: number
}

/** What the origin served of one file: bytes sent, and how many distinct bytes they cover. */
export interface FileCoverage {
  bytes: number
  distinct: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Distinct bytes covered by a set of [offset, offset+length) intervals. */
export function coveredBytes(reads: { offset: number; length: number }[]): number {
  const sorted = reads
    .filter((r) => r.length > 0)
    .map((r) => [r.offset, r.offset + r.length] as const)
    .sort((a, b) => a[0] - b[0])
  let total = 0
  let end = -1
  for (const [s, e] of sorted) {
    if (e <= end) continue
    total += e - Math.max(s, end)
    end = e
  }
  return total
}

/** Parses the origin's `ofs_read: LEN@OFFSET fn=/archive/REL` trace lines into reads of archive paths. */
export function parseOriginReads(log: string, prefix = SITE_PREFIX): OriginRead[] {
  const out: OriginRead[] = []
  const want = `/${prefix}/`
  for (const m of log.matchAll(/ ofs_read: (\d+)@(\d+) fn=(\S+)/g)) {
    const fn = m[3]!
    if (!fn.startsWith(want)) continue
    out.push({ path: fn.slice(want.length), offset: Number(m[2]), length: Number(m[1]) })
  }
  return out
}

interface Server {
  name: 'origin' | 'cache'
  child: ChildProcess
  exited: Promise<void>
  output: string
}

export class XCache {
  readonly root: string
  readonly dir: string
  /** The XCache's HTTP endpoint holding the archive's tree at the same relative paths (no trailing slash). */
  url = ''
  originPort = 0
  cachePort = 0
  httpPort = 0
  private origin?: Server
  private cache?: Server
  /** Origin log length at the end of start(), so the probe's reads are not counted. */
  private logStart = 0

  /** `root`: the archive directory (the same one the test's dCache-like server serves). */
  constructor(
    root: string,
    private readonly opts: { ramGb?: number } = {},
  ) {
    this.root = resolve(root)
    this.dir = mkdtempSync(join(tmpdir(), 'desfs-xcache-'))
  }

  /** The XCache data file holding `rel`'s cached blocks (at their own offsets), and its .cinfo beside it. */
  cachedFile(rel: string): string {
    return join(this.dir, 'cache', 'data', SITE_PREFIX, rel)
  }

  /** Every read the origin served since start() (the probe excluded), in order. */
  originReads(): OriginRead[] {
    const file = join(this.dir, 'origin', 'origin', 'log')
    if (!existsSync(file)) return []
    const log = readFileSync(file).subarray(this.logStart).toString('latin1')
    return parseOriginReads(log).map((r) => ({ ...r, length: Math.max(0, Math.min(r.length, this.sizeOf(r.path) - r.offset)) }))
  }

  /** Bytes the origin served since start(). */
  originBytes(): number {
    return this.originReads().reduce((a, r) => a + r.length, 0)
  }

  /** Per archive path: bytes the origin served and the distinct bytes they cover (equal: no byte twice). */
  originCoverage(): Map<string, FileCoverage> {
    const byFile = new Map<string, OriginRead[]>()
    for (const r of this.originReads()) byFile.set(r.path, [...(byFile.get(r.path) ?? []), r])
    return new Map([...byFile].map(([p, rs]) => [p, { bytes: rs.reduce((a, r) => a + r.length, 0), distinct: coveredBytes(rs) }]))
  }

  private sizeOf(rel: string): number {
    try {
      return statSync(join(this.root, rel)).size
    } catch {
      return Number.MAX_SAFE_INTEGER
    }
  }

  /** Config and log of both servers, for failure messages. */
  errors(): string {
    const parts: string[] = []
    for (const s of [this.origin, this.cache]) if (s) parts.push(`--- ${s.name} output:\n${s.output}`)
    for (const n of ['origin', 'cache'] as const) {
      const log = join(this.dir, n, n, 'log')
      if (existsSync(log)) parts.push(`--- ${n} log (tail):\n${readFileSync(log, 'utf8').split('\n').slice(-40).join('\n')}`)
    }
    return parts.join('\n')
  }

  async start(): Promise<this> {
    const missing = xcacheMissing()
    if (missing) throw new Error(missing)
    this.prepareDirs()
    // A port is free when asked but could be taken before xrootd binds it: try a few times.
    for (let attempt = 0; attempt < 5; attempt++) {
      this.originPort = await freePort()
      this.cachePort = await freePort()
      this.httpPort = await freePort()
      while (this.cachePort === this.originPort) this.cachePort = await freePort()
      while (this.httpPort === this.originPort || this.httpPort === this.cachePort) this.httpPort = await freePort()
      this.writeConfigs()
      this.origin = this.spawnServer('origin')
      this.cache = this.spawnServer('cache')
      this.url = `http://127.0.0.1:${this.httpPort}/${SITE_PREFIX}`
      if (await this.waitReady()) {
        this.logStart = this.originLogSize()
        return this
      }
      const why = this.errors()
      await this.stopServers()
      if (!/Address already in use/i.test(why)) throw new Error(`XCache did not answer a ranged GET within 20 s:\n${why}`)
    }
    throw new Error(`XCache did not start (ports taken):\n${this.errors()}`)
  }

  /** Process ids of both servers (for checks that none is left running). */
  pids(): number[] {
    return [this.origin, this.cache].flatMap((s) => (s?.child.pid ? [s.child.pid] : []))
  }

  /**
   * Freezes the origin (SIGSTOP): the XCache's misses hang, so a read through it stops mid-body, an
   * event a test can wait for before the next fault. resumeOrigin() undoes it; stop() does too.
   */
  pauseOrigin(): void {
    if (this.origin?.child.pid) process.kill(this.origin.child.pid, 'SIGSTOP')
  }

  resumeOrigin(): void {
    if (this.origin?.child.pid && this.origin.child.exitCode === null) process.kill(this.origin.child.pid, 'SIGCONT')
  }

  /** Stops the XCache only (the origin keeps running): the site cache going down under a reader. */
  async stopCache(): Promise<void> {
    if (this.cache) await stopServer(this.cache)
  }

  /** Stops both servers (SIGTERM, then SIGKILL after 10 s) and removes the temporary directory. */
  async stop(): Promise<void> {
    await this.stopServers()
    rmSync(this.dir, { recursive: true, force: true })
  }

  private async stopServers(): Promise<void> {
    await Promise.all([this.cache, this.origin].filter((s): s is Server => !!s).map(stopServer))
  }

  private originLogSize(): number {
    const file = join(this.dir, 'origin', 'origin', 'log')
    return existsSync(file) ? statSync(file).size : 0
  }

  /**
   * Opens the archive to `nobody` (read and traverse) and makes our own directories nobody's. The
   * archive must be under the temporary directory, and only directories from the first one below it
   * down to the archive get o+x (the test made them; a shared parent is never touched).
   */
  private prepareDirs(): void {
    const base = resolve(tmpdir())
    const rel = relative(base, this.root)
    if (rel === '' || rel.startsWith('..') || rel.startsWith(sep))
      throw new Error(`XCache: the archive ${this.root} must be inside ${base} (a test's temporary directory)`)
    let d = base
    for (const part of rel.split(sep)) {
      d = join(d, part)
      chmodSync(d, statSync(d).mode | 0o005)
    }
    openTree(this.root)
    chmodSync(this.dir, 0o755)
    const { uid, gid } = nobodyIds()
    for (const sub of ['export', 'origin', 'cache', 'cache/data']) mkdirSync(join(this.dir, sub), { recursive: true })
    symlinkSync(this.root, join(this.dir, 'export', SITE_PREFIX))
    writeFileSync(join(this.dir, 'export', 'probe'), 'desfs xcache probe\n')
    chmodSync(join(this.dir, 'export', 'probe'), 0o644)
    for (const sub of ['origin', 'cache', 'cache/data']) chownSync(join(this.dir, sub), uid, gid)
  }

  private writeConfigs(): void {
    // xrootd has no listen address: it binds every interface, so only loopback clients are let in.
    const common = (name: string) => [
      `xrd.allow host localhost`,
      `all.export /`,
      `all.adminpath ${join(this.dir, name, 'admin')}`,
      `all.pidpath ${join(this.dir, name, 'admin')}`,
    ]
    const origin = [
      `xrd.port ${this.originPort}`,
      ...common('origin'),
      `oss.localroot ${join(this.dir, 'export')}`,
      // one `ofs_read: LEN@OFF fn=PATH` line per read: how the bytes served are counted
      `ofs.trace read open`,
    ]
    const cache = [
      `xrd.port ${this.cachePort}`,
      ...common('cache'),
      `ofs.osslib libXrdPss.so`,
      `pss.cachelib libXrdPfc.so`,
      `pss.origin 127.0.0.1:${this.originPort}`,
      `oss.localroot ${join(this.dir, 'cache', 'data')}`,
      `pfc.ram ${this.opts.ramGb ?? 1}g`,
      `xrd.protocol XrdHttp:${this.httpPort} libXrdHttp.so`,
    ]
    writeFileSync(join(this.dir, 'origin', 'xrootd.cfg'), origin.join('\n') + '\n')
    writeFileSync(join(this.dir, 'cache', 'xrootd.cfg'), cache.join('\n') + '\n')
  }

  private spawnServer(name: 'origin' | 'cache'): Server {
    const d = join(this.dir, name)
    // -l log (xrootd puts it in d/NAME/log), -n NAME, -R drop to nobody. xrootd stays in the foreground.
    const child = spawn(XROOTD, ['-R', RUN_AS, '-c', join(d, 'xrootd.cfg'), '-l', join(d, 'log'), '-n', name], {
      cwd: d,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const s: Server = { name, child, output: '', exited: new Promise((r) => child.once('exit', () => r())) }
    child.stdout!.on('data', (b: Buffer) => (s.output += b))
    child.stderr!.on('data', (b: Buffer) => (s.output += b))
    return s
  }

  /** Waits (20 s at most) until a ranged GET of the probe through the XCache's HTTP port answers 206 with its bytes. */
  private async waitReady(): Promise<boolean> {
    const end = Date.now() + 20_000
    while (Date.now() < end) {
      if (this.origin!.child.exitCode !== null || this.cache!.child.exitCode !== null) return false
      // Only the probe: bare connects would fill the servers' logs with "handshake not received".
      const r = await rangedGet(this.httpPort, '/probe', 0, 5).catch(() => undefined)
      if (r?.status === 206 && r.body.toString() === 'desfs ') return true
      await sleep(100)
    }
    return false
  }
}

/**
 * GET of bytes [first, last] with a `Range` header spelt so (node:http keeps the case): XrdHttp 5.5
 * matches header names case-sensitively and answers a lower-case `range:` with the whole file (200).
 */
export function rangedGet(port: number, path: string, first: number, last: number): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path, headers: { Range: `bytes=${first}-${last}` }, timeout: 3000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

async function stopServer(s: Server): Promise<void> {
  const c = s.child
  if (c.exitCode !== null || c.signalCode !== null) return
  c.kill('SIGCONT') // a paused server would not act on SIGTERM
  c.kill('SIGTERM')
  if (await Promise.race([s.exited.then(() => true), sleep(10_000).then(() => false)])) return
  c.kill('SIGKILL')
  await Promise.race([s.exited, sleep(10_000)])
}

/** o+r on files and o+rx on directories under `dir` (a tree the test generated). */
function openTree(dir: string): void {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e)
    const st = lstatSync(p)
    if (st.isSymbolicLink()) continue
    if (st.isDirectory()) {
      if ((st.mode & 0o005) !== 0o005) chmodSync(p, st.mode | 0o005)
      openTree(p)
    } else if ((st.mode & 0o004) === 0) chmodSync(p, st.mode | 0o004)
  }
}

function nobodyIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${RUN_AS}:`))
  if (!line) throw new Error(`XCache: no user ${RUN_AS} in /etc/passwd`)
  const f = line.split(':')
  return { uid: Number(f[2]), gid: Number(f[3]) }
}

/** Starts an XCache over `root` for a test (or a BenchScope) and stops it at teardown. */
export async function startXCache(t: { teardown(fn: () => unknown): void }, root: string, opts: { ramGb?: number } = {}): Promise<XCache> {
  const x = new XCache(root, opts)
  t.teardown(() => x.stop())
  try {
    return await x.start()
  } catch (err) {
    await x.stop()
    throw err
  }
}
