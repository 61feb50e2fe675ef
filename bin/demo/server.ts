// An archive server that behaves like a dCache WebDAV door, for `desfs demo` (hence shipped under bin/)
// and for the tests and benchmarks, which import it from here:
// - GET with a single `bytes=a-b` range -> 206 + Content-Range; unsatisfiable -> 416 (no
//   Content-Range, like dCache); no Range -> 200;
// - HEAD, and GET, with `Want-Digest: adler32` -> `Digest: adler32=<8 hex>`;
// - PROPFIND Depth 0/1 -> 207 multistatus shaped like dCache's (d: prefix, the dCache Checksums
//   property in its own namespace, files' resourcetype under a 404 propstat);
// - bearer tokens: 401 without one, with an unknown one, or with an expired JWT;
// - optionally a redirect of GETs to a second "pool" port with a one-time id, as dCache does;
// - optionally TLS;
// - fault injection (latency, 5xx, reset or short or stalled bodies, 404s) switchable at run time,
//   in-process or over `POST /_desfs/faults`;
// - a request log (method, path, range, status, bytes) for tests to count what a mount asked for.
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttps } from 'node:https'
import { open, readdir, stat } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import type { AddressInfo, Socket } from 'node:net'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { adler32Fast } from '../../cache/adler32.js'
import { jwtClaims } from '../../daemon/token/token.js'

export const ARCHIVE_BASE = '/des/persistent/DESDM_ARCHIVE'

export interface Faults {
  /** Added before answering each request, ms. */
  latencyMs?: number
  /** Answer this many of the next GETs with 503 (counts down). */
  fail5xx?: number
  /** Probability (0..1) that a GET answers 503. */
  fail5xxRate?: number
  /** Reset the connection after this many body bytes, for the next `resetCount` GETs. */
  resetAfterBytes?: number
  resetCount?: number
  /** Close the body early (correct headers, fewer bytes) for the next `shortCount` GETs. */
  shortCount?: number
  /** Stop sending after this many bytes (connection kept open) for the next `stallCount` GETs. */
  stallAfterBytes?: number
  stallCount?: number
  /** Archive-relative paths answered with 404. */
  notFound?: string[]
  /** Answer this many of the next GETs with 429 Too Many Requests and a Retry-After. */
  fail429?: number
  /** Retry-After sent with the 429s, seconds. */
  retryAfterSec?: number
  /** Answer this many of the next requests with 401 regardless of the token. */
  fail401?: number
  /** Throttle each GET body to about this many bytes per second. */
  rateBytesPerSec?: number
  /** PROPFIND answered with 405 (listing unsupported), forcing HEAD per file. */
  noPropfind?: boolean
  /**
   * Probability (0..1) that a GET meets one fault, picked at random among MIXED_FAULTS: a reset at a
   * random point of the body, a short body, a stall, a 503 or a 429 (counted in `injected`).
   */
  mixRate?: number
}

/** The faults `mixRate` picks from. */
export const MIXED_FAULTS = ['reset', 'short', 'stall', '503', '429'] as const
export type MixedFault = (typeof MIXED_FAULTS)[number]

export interface RequestRecord {
  method: string
  /** Archive-relative path. */
  path: string
  range?: string
  status: number
  bytes: number
  port: 'door' | 'pool'
  /** jti of the bearer token that was accepted. */
  tokenId?: string
}

export interface ArchiveServerOptions {
  /** Directory whose files are the archive. */
  root: string
  /** Accepted bearer tokens; none (and no acceptIssuer) means no token is required. */
  tokens?: string[]
  /** Also accept any unexpired JWT with this iss (tokens from a test OpenID provider). */
  acceptIssuer?: string
  /** Redirect GETs to a pool port (dCache's default behaviour). */
  redirect?: boolean
  /** Status used for the redirect (dCache sends 302; its docs say 307). */
  redirectStatus?: 302 | 307
  tls?: { key: string | Buffer; cert: string | Buffer }
  faults?: Faults
  host?: string
}

/** Resolves when a response can take more data (at once if it can now, or when it closes). */
export function drained(res: ServerResponse): Promise<void> {
  // A response queued behind another on a kept-alive connection has no socket of its own yet and is
  // not told when the client goes away: watch the request's socket too.
  const sock = res.req.socket
  if (!res.writableNeedDrain || sock.destroyed) return Promise.resolve()
  return new Promise<void>((r) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      sock.off('close', done)
      r()
    }
    res.on('drain', done).on('close', done)
    sock.on('close', done)
  })
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Milton (dCache's WebDAV library) keeps only A-Z a-z 0-9 - _ . * and percent-encodes the rest, uppercase. */
function miltonEncode(name: string): string {
  return [...Buffer.from(name, 'utf8')]
    .map((b) =>
      /[A-Za-z0-9\-_.*]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('')
}

export class ArchiveServer {
  readonly opts: ArchiveServerOptions
  faults: Faults
  tokens: Set<string> | undefined
  readonly log: RequestRecord[] = []
  /** Bodies being sent now (the log holds a request once it has ended). */
  readonly sending = new Set<RequestRecord>()
  /** How many GETs met each fault `mixRate` picked. */
  readonly injected: Record<MixedFault, number> = { reset: 0, short: 0, stall: 0, '503': 0, '429': 0 }
  private door: Server | undefined
  private pool: Server | undefined
  private sockets = new Set<Socket>()
  private uuids = new Map<string, string>()
  private digests = new Map<string, string>()
  doorUrl = ''
  poolUrl = ''

  constructor(opts: ArchiveServerOptions) {
    this.opts = opts
    this.faults = { ...(opts.faults ?? {}) }
    this.tokens = opts.tokens ? new Set(opts.tokens) : undefined
  }

  /** The archive URL to give desfs (door origin + base path). */
  get archiveUrl(): string {
    return this.doorUrl + ARCHIVE_BASE
  }

  async start(port = 0): Promise<this> {
    const host = this.opts.host ?? '127.0.0.1'
    const make = (handler: (req: IncomingMessage, res: ServerResponse) => void) =>
      this.opts.tls ? createHttps({ key: this.opts.tls.key, cert: this.opts.tls.cert }, handler) : createHttp(handler)
    const scheme = this.opts.tls ? 'https' : 'http'
    const listen = (s: Server, p: number) =>
      new Promise<number>((resolve, reject) => {
        s.on('connection', (sock: Socket) => {
          this.sockets.add(sock)
          sock.on('close', () => this.sockets.delete(sock))
        })
        s.once('error', reject)
        s.listen(p, host, () => resolve((s.address() as AddressInfo).port))
      })
    this.door = make((req, res) => this.serve(req, res, 'door'))
    this.doorUrl = `${scheme}://${host}:${await listen(this.door, port)}`
    if (this.opts.redirect) {
      this.pool = make((req, res) => this.serve(req, res, 'pool'))
      this.poolUrl = `${scheme}://${host}:${await listen(this.pool, 0)}`
    }
    return this
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await Promise.all([this.door, this.pool].filter((s): s is Server => !!s).map((s) => new Promise<void>((r) => s.close(() => r()))))
  }

  /** Requests of one method (and optionally one path) so far. */
  count(method: string, path?: string): number {
    return this.log.filter((r) => r.method === method && (path === undefined || r.path === path)).length
  }

  bytesSent(): number {
    return this.log.reduce((a, r) => a + r.bytes, 0)
  }

  clearLog(): void {
    this.log.length = 0
  }

  private record(r: RequestRecord): void {
    this.log.push(r)
    if (this.log.length > 200_000) this.log.splice(0, 100_000)
  }

  private async adler(rel: string, file: string): Promise<string> {
    let d = this.digests.get(rel)
    if (!d) {
      let a = 1
      for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) a = adler32Fast(chunk as Buffer, a)
      d = a.toString(16).padStart(8, '0')
      this.digests.set(rel, d)
    }
    return d
  }

  private authorized(req: IncomingMessage, rec: RequestRecord): boolean {
    if (this.faults.fail401 && this.faults.fail401 > 0) {
      this.faults.fail401--
      return false
    }
    if (!this.tokens && !this.opts.acceptIssuer) return true
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')
    const claims = m ? jwtClaims(m[1]!) : undefined
    if (!m || !(this.tokens?.has(m[1]!) || (this.opts.acceptIssuer && claims?.iss === this.opts.acceptIssuer))) return false
    const exp = claims?.exp
    if (typeof exp === 'number' && exp * 1000 <= Date.now()) return false
    if (typeof claims?.jti === 'string') rec.tokenId = claims.jti
    return true
  }

  /**
   * A client may give up on a request at any point (a lookup's deadline aborts its PROPFIND while the
   * body is still being read): the request stream then errors ('aborted'), which ends that request
   * only, never the server's process.
   */
  private serve(req: IncomingMessage, res: ServerResponse, port: 'door' | 'pool'): void {
    this.handle(req, res, port).catch(() => res.destroy())
  }

  private async handle(req: IncomingMessage, res: ServerResponse, port: 'door' | 'pool'): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    if (req.method === 'POST' && url.pathname === '/_desfs/faults') return this.setFaultsFromRequest(req, res)
    const rec: RequestRecord = { method: req.method ?? '?', path: '', status: 0, bytes: 0, port }
    if (req.headers.range) rec.range = req.headers.range
    res.on('finish', () => this.record(rec))
    res.on('close', () => {
      if (!res.writableFinished) this.record(rec)
    })
    if (this.faults.latencyMs) await new Promise((r) => setTimeout(r, this.faults.latencyMs))
    let decoded: string
    try {
      decoded = decodeURIComponent(url.pathname)
    } catch {
      return this.answer(res, rec, 400, 'Bad path')
    }
    if (!decoded.startsWith(ARCHIVE_BASE)) return this.answer(res, rec, 404, `Path not found: ${decoded}`)
    const rel = decoded.slice(ARCHIVE_BASE.length).replace(/^\/+/, '').replace(/\/+$/, '')
    rec.path = rel
    if (rel.split('/').includes('..')) return this.answer(res, rec, 400, 'Bad path')

    if (port === 'pool') {
      const uuid = url.searchParams.get('dcache-http-uuid') ?? ''
      if (this.uuids.get(uuid) !== rel) return this.answer(res, rec, 400, 'Request is no longer valid. Please resubmit to door.')
      this.uuids.delete(uuid)
    } else if (!this.authorized(req, rec)) {
      res.setHeader('www-authenticate', 'Basic realm="desfs test archive"')
      return this.answer(res, rec, 401, `You are not unauthorised for ${req.method} on path ${decoded}`)
    }
    if (this.faults.notFound?.includes(rel)) return this.answer(res, rec, 404, `Path not found: ${decoded}`)

    const file = join(this.opts.root, rel)
    let st
    try {
      st = await stat(file)
    } catch {
      return this.answer(res, rec, 404, `Path not found: ${decoded}`)
    }

    switch (req.method) {
      case 'PROPFIND':
        if (this.faults.noPropfind) return this.answer(res, rec, 405, 'Method not allowed')
        return this.propfind(req, res, rec, decoded, rel, file, st.isDirectory())
      case 'HEAD':
        if (st.isDirectory()) return this.answer(res, rec, 200, '')
        res.setHeader('content-length', st.size)
        res.setHeader('last-modified', st.mtime.toUTCString())
        res.setHeader('accept-ranges', 'bytes')
        if (/adler32/i.test(String(req.headers['want-digest'] ?? ''))) res.setHeader('digest', `adler32=${await this.adler(rel, file)}`)
        rec.status = 200
        res.writeHead(200)
        return void res.end()
      case 'GET':
        if (st.isDirectory()) return this.answer(res, rec, 405, 'Use PROPFIND')
        if (port === 'door' && this.opts.redirect) {
          const uuid = randomUUID()
          this.uuids.set(uuid, rel)
          res.setHeader(
            'location',
            `${this.poolUrl}${url.pathname}?dcache-http-uuid=${uuid}&dcache-http-ref=${encodeURIComponent(this.doorUrl)}`,
          )
          return this.answer(res, rec, this.opts.redirectStatus ?? 302, '')
        }
        return this.get(req, res, rec, rel, file, st.size)
      default:
        return this.answer(res, rec, 405, 'Method not allowed')
    }
  }

  private answer(res: ServerResponse, rec: RequestRecord, status: number, body: string): void {
    rec.status = status
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body ? body + '\n' : '') })
    res.end(body ? body + '\n' : '')
  }

  private async get(req: IncomingMessage, res: ServerResponse, rec: RequestRecord, rel: string, file: string, size: number): Promise<void> {
    const f = this.faults
    let mixed: MixedFault | undefined
    if (f.mixRate && Math.random() < f.mixRate) {
      mixed = MIXED_FAULTS[Math.floor(Math.random() * MIXED_FAULTS.length)]!
      this.injected[mixed]++
    }
    if (mixed === '429' || (f.fail429 && f.fail429 > 0)) {
      if (mixed !== '429') f.fail429!--
      res.setHeader('retry-after', String(f.retryAfterSec ?? 1))
      return this.answer(res, rec, 429, 'Too many requests. Please slow down.')
    }
    if (mixed === '503' || (f.fail5xx && f.fail5xx > 0) || (f.fail5xxRate && Math.random() < f.fail5xxRate)) {
      if (mixed !== '503' && f.fail5xx) f.fail5xx--
      return this.answer(res, rec, 503, 'Server is busy. Please try again later.')
    }
    let start = 0
    let end = size - 1
    let status = 200
    const range = req.headers.range
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range)
      if (!m || Number(m[1]) > size - 1) return this.answer(res, rec, 416, '')
      start = Number(m[1])
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1
      if (end < start) return this.answer(res, rec, 416, '')
      status = 206
      res.setHeader('content-range', `bytes ${start}-${end}/${size}`)
    }
    if (/adler32/i.test(String(req.headers['want-digest'] ?? ''))) res.setHeader('digest', `adler32=${await this.adler(rel, file)}`)
    res.setHeader('accept-ranges', 'bytes')
    res.setHeader('content-length', end - start + 1)
    rec.status = status
    res.writeHead(status)

    // Which fault applies to this body, if any.
    let cutAt = Infinity
    let mode: 'reset' | 'short' | 'stall' | undefined
    if (mixed === 'reset' || mixed === 'short' || mixed === 'stall') {
      mode = mixed
      cutAt = Math.floor(Math.random() * (end - start + 1))
    } else if (f.resetCount && f.resetCount > 0) {
      f.resetCount--
      mode = 'reset'
      cutAt = f.resetAfterBytes ?? 1000
    } else if (f.shortCount && f.shortCount > 0) {
      f.shortCount--
      mode = 'short'
      cutAt = Math.max(0, Math.floor((end - start + 1) / 2))
    } else if (f.stallCount && f.stallCount > 0) {
      f.stallCount--
      mode = 'stall'
      cutAt = f.stallAfterBytes ?? 1000
    }

    const fh = await open(file, 'r')
    this.sending.add(rec)
    try {
      let pos = start
      const chunk = Buffer.allocUnsafe(256 * 1024)
      const t0 = Date.now()
      while (pos <= end) {
        if (res.destroyed || req.socket.destroyed) return
        const sent = pos - start
        if (sent >= cutAt) {
          if (mode === 'reset') return void res.socket?.destroy()
          if (mode === 'short') return void res.socket?.end()
          if (mode === 'stall') return // keep the connection open, send nothing more
        }
        const n = Math.min(chunk.length, end - pos + 1, cutAt - sent)
        const { bytesRead } = await fh.read(chunk, 0, n, pos)
        if (bytesRead === 0) break
        pos += bytesRead
        rec.bytes += bytesRead
        res.write(Buffer.from(chunk.subarray(0, bytesRead)))
        if (f.rateBytesPerSec) {
          const due = t0 + ((pos - start) / f.rateBytesPerSec) * 1000
          const wait = due - Date.now()
          if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        }
        // Asked now rather than from write()'s answer: a 'drain' during the rate wait is not missed.
        await drained(res)
      }
      res.end()
    } finally {
      this.sending.delete(rec)
      await fh.close()
    }
  }

  private async propfind(
    req: IncomingMessage,
    res: ServerResponse,
    rec: RequestRecord,
    decoded: string,
    rel: string,
    file: string,
    isDir: boolean,
  ): Promise<void> {
    for await (const _ of req) {
      /* drain the request body */
    }
    const depth = req.headers.depth === '0' ? 0 : 1
    const entries: { href: string; isDir: boolean; size: number; mtime: Date; rel: string; file: string }[] = []
    const hrefSelf = decoded.endsWith('/') || !isDir ? req.url!.split('?')[0]! : req.url!.split('?')[0]! + '/'
    const st = await stat(file)
    entries.push({ href: hrefSelf, isDir, size: st.size, mtime: st.mtime, rel, file })
    if (isDir && depth === 1) {
      const base = hrefSelf.endsWith('/') ? hrefSelf : hrefSelf + '/'
      for (const name of await readdir(file)) {
        const childFile = join(file, name)
        const cst = await stat(childFile)
        entries.push({
          href: base + miltonEncode(name) + (cst.isDirectory() ? '/' : ''),
          isDir: cst.isDirectory(),
          size: cst.size,
          mtime: cst.mtime,
          rel: rel ? `${rel}/${name}` : name,
          file: childFile,
        })
      }
    }
    let xml =
      '<?xml version="1.0" encoding="utf-8" ?>\n<d:multistatus xmlns:cal="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/" xmlns:card="urn:ietf:params:xml:ns:carddav" xmlns:ns1="http://www.dcache.org/2013/webdav" xmlns:d="DAV:">'
    for (const e of entries) {
      xml += `<d:response><d:href>${xmlEscape(e.href)}</d:href><d:propstat><d:prop>`
      if (e.isDir) xml += '<d:resourcetype><d:collection/></d:resourcetype>'
      else xml += `<d:getcontentlength>${e.size}</d:getcontentlength>`
      xml += `<d:getlastmodified>${e.mtime.toUTCString()}</d:getlastmodified>`
      if (!e.isDir) xml += `<ns1:Checksums>adler32=${await this.adler(e.rel, e.file)}</ns1:Checksums>`
      xml += '</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>'
      xml += `<d:propstat><d:prop>${e.isDir ? '<d:getcontentlength/><ns1:Checksums/>' : '<d:resourcetype/>'}</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>`
    }
    xml += '</d:multistatus>'
    rec.status = 207
    rec.bytes = Buffer.byteLength(xml)
    res.writeHead(207, { 'content-type': 'application/xml; charset=utf-8', dav: '1, 2' })
    res.end(xml)
  }

  private async setFaultsFromRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { faults?: Faults; tokens?: string[] }
      if (body.faults) this.faults = body.faults
      if (body.tokens) this.tokens = new Set(body.tokens)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: true }))
    } catch (err) {
      res.writeHead(400)
      res.end((err as Error).message)
    }
  }
}
