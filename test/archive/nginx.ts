// A lean archive server for benchmarks and tests: Debian's nginx (nginx-light) with the dav-ext
// module (libnginx-mod-http-dav-ext) serving a directory at the archive's base path on 127.0.0.1,
// with byte ranges, HEAD, PROPFIND Depth 0/1 and, optionally, one accepted bearer token. Unlike the
// node server (server.ts) it costs almost no CPU, so a benchmark's baseline is not held back by the
// server competing for the cores. What it does not do that dCache does: no `Digest` header for
// `Want-Digest: adler32` and no Checksums property in PROPFIND (checksums are unknown to desfs), no
// redirect to a pool port, no fault injection. nginx runs in the foreground (`daemon off`) with its
// config, pid, logs and temp dirs in a private temp dir, and is stopped by stop().
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection, createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { ARCHIVE_BASE } from '../../bin/demo/server.js'

export const NGINX = '/usr/sbin/nginx'
export const DAV_EXT_MODULE = '/usr/lib/nginx/modules/ngx_http_dav_ext_module.so'

export interface NginxArchiveOptions {
  /** Directory whose files are the archive. */
  root: string
  /** The one accepted bearer token; without it no token is required (and any is ignored). */
  token?: string
  /** Log every request (method, path, range, status, body bytes) so tests can count them. */
  accessLog?: boolean
  /** nginx worker processes (default 1: one core serves loopback at several GB/s). */
  workers?: number
}

export interface NginxRequest {
  method: string
  /** Archive-relative path (decoded). */
  path: string
  range?: string
  status: number
  bytes: number
}

/** Why nginx cannot serve here (a sentence naming the package to install), or undefined when it can. */
export function nginxMissing(): string | undefined {
  if (!existsSync(NGINX)) return `${NGINX} is not installed (apt-get install nginx-light)`
  if (!existsSync(DAV_EXT_MODULE)) return `${DAV_EXT_MODULE} is not installed (apt-get install libnginx-mod-http-dav-ext)`
  return undefined
}

/** A port nobody listens on right now (nginx cannot be given port 0). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port
      s.close(() => res(port))
    })
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((res) => {
    const c = createConnection({ host: '127.0.0.1', port })
    c.once('connect', () => {
      c.destroy()
      res(true)
    })
    c.once('error', () => res(false))
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class NginxArchive {
  readonly opts: NginxArchiveOptions
  readonly dir: string
  doorUrl = ''
  private child: ChildProcess | undefined
  private exited: Promise<number | null> | undefined
  private output = ''

  constructor(opts: NginxArchiveOptions) {
    this.opts = opts
    this.dir = mkdtempSync(join(tmpdir(), 'desfs-nginx-'))
  }

  /** The archive URL to give desfs (origin + base path). */
  get archiveUrl(): string {
    return this.doorUrl + ARCHIVE_BASE
  }

  private config(port: number): string {
    const d = this.dir
    const root = resolve(this.opts.root)
    if (/[\s;"'{}$\\]/.test(root + d)) throw new Error(`nginx config: unsupported character in ${root} or ${d}`)
    if (this.opts.token !== undefined && !/^[A-Za-z0-9._~+/=-]+$/.test(this.opts.token))
      throw new Error('nginx config: the token has characters a bearer token cannot have')
    return [
      `load_module ${DAV_EXT_MODULE};`,
      'daemon off;',
      // As root, nginx's workers would run as nobody, who cannot enter a private temp dir.
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      `worker_processes ${this.opts.workers ?? 1};`,
      `pid ${d}/nginx.pid;`,
      `error_log ${d}/error.log warn;`,
      'events { worker_connections 1024; }',
      'http {',
      this.opts.accessLog
        ? `  log_format desfs '$request_method $request_uri "$http_range" $status $body_bytes_sent'; access_log ${d}/access.log desfs;`
        : '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${d}/${k};`),
      '  default_type application/octet-stream;',
      '  sendfile on; tcp_nopush on; keepalive_requests 100000; keepalive_timeout 120s;',
      '  server {',
      `    listen 127.0.0.1:${port};`,
      ...(this.opts.token !== undefined ? [`    if ($http_authorization != "Bearer ${this.opts.token}") { return 401; }`] : []),
      `    location ${ARCHIVE_BASE}/ {`,
      `      alias ${root}/;`,
      '      dav_ext_methods PROPFIND OPTIONS;',
      '    }',
      '  }',
      '}',
      '',
    ].join('\n')
  }

  async start(): Promise<this> {
    const missing = nginxMissing()
    if (missing) throw new Error(missing)
    mkdirSync(join(this.dir, 'logs'), { recursive: true })
    // The port is free when asked but could be taken before nginx binds it: try a few.
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort()
      const conf = join(this.dir, 'nginx.conf')
      writeFileSync(conf, this.config(port))
      this.output = ''
      const child = spawn(NGINX, ['-p', this.dir, '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
      child.stdout!.on('data', (b: Buffer) => (this.output += b))
      child.stderr!.on('data', (b: Buffer) => (this.output += b))
      let code: number | null | undefined
      this.exited = new Promise((r) =>
        child.once('exit', (c) => {
          code = c
          r(c)
        }),
      )
      this.child = child
      for (let i = 0; i < 200 && code === undefined; i++) {
        if (await canConnect(port)) {
          this.doorUrl = `http://127.0.0.1:${port}`
          return this
        }
        await sleep(25)
      }
      if (code === undefined) {
        await this.stop()
        throw new Error(`nginx did not answer on 127.0.0.1:${port} within 5 s:\n${this.errors()}`)
      }
      if (!/Address already in use/.test(this.errors())) break
    }
    throw new Error(`nginx did not start:\n${this.errors()}`)
  }

  /** What nginx wrote to stderr and its error log. */
  errors(): string {
    const log = join(this.dir, 'error.log')
    return this.output + (existsSync(log) ? readFileSync(log, 'utf8') : '')
  }

  /** The requests so far (needs accessLog). nginx writes each line when its request ends. */
  log(): NginxRequest[] {
    const file = join(this.dir, 'access.log')
    if (!this.opts.accessLog) throw new Error('NginxArchive: log() needs accessLog: true')
    if (!existsSync(file)) return []
    const out: NginxRequest[] = []
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^(\S+) (\S+) "([^"]*)" (\d+) (\d+)$/.exec(line)
      if (!m) continue
      let path = m[2]!.split('?')[0]!
      try {
        path = decodeURIComponent(path)
      } catch {
        /* kept as sent */
      }
      path = path.startsWith(ARCHIVE_BASE) ? path.slice(ARCHIVE_BASE.length).replace(/^\/+/, '').replace(/\/+$/, '') : path
      out.push({ method: m[1]!, path, range: m[3] === '-' ? undefined : m[3], status: Number(m[4]), bytes: Number(m[5]) })
    }
    return out
  }

  /** Body bytes sent so far (needs accessLog). */
  bytesSent(): number {
    return this.log().reduce((a, r) => a + r.bytes, 0)
  }

  /** Stops nginx (SIGTERM, then SIGKILL after 10 s) and removes its temp dir. */
  async stop(): Promise<void> {
    const child = this.child
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const done = await Promise.race([this.exited!.then(() => true), sleep(10_000).then(() => false)])
      if (!done) {
        child.kill('SIGKILL')
        await this.exited
      }
    }
    this.child = undefined
    rmSync(this.dir, { recursive: true, force: true })
  }
}
