// A small HTTP client for the archive: keep-alive pools per origin (GETs, which carry the bytes, over
// connections of our own in get-pool.ts; PROPFIND and HEAD over undici), deadlines on connect,
// headers and body, redirects followed by hand (dCache sends GETs from its door to a pool with a 307
// and a one-time id: the method and Range are kept, the bearer token is sent only to the archive's own
// origin), and 401 answered by re-reading the token once.
import { readFileSync } from 'node:fs'
import { Pool, errors as undiciErrors, type Dispatcher } from 'undici'
import { SourceError, type ReadOptions } from './source.js'
import { parseByteCount } from './byte-count.js'
import { dispatch, type ResponseBody } from './response-body.js'
import { GetPool } from './get-pool.js'

export interface HttpClientOptions {
  /** Origin that receives the Authorization header (the archive door); none for signed requests. */
  trustedOrigin?: string
  authorization?: () => string | undefined
  /** Called after a 401; resolves when the token has been re-read. */
  reloadToken?: () => Promise<void>
  connectTimeoutMs: number
  /** Deadline for the response headers. */
  headersTimeoutMs: number
  /** A body that delivers no byte for this long is a failure. */
  stallTimeoutMs: number
  caFile?: string | undefined
  /** Parallel connections per origin. */
  connections?: number
}

export interface HttpResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: ResponseBody
  /** The URL that finally answered (after redirects). */
  url: string
}

const REDIRECTS = new Set([301, 302, 303, 307, 308])
const MAX_REDIRECTS = 5

/** The Retry-After of a response (seconds or an HTTP date), ms; undefined when absent. */
export function retryAfterMs(res: HttpResponse): number | undefined {
  const v = header(res.headers, 'retry-after')
  if (!v) return undefined
  const secs = Number(v)
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000)
  const at = Date.parse(v)
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined
}

/**
 * Delivers bytes [start, end) of a 200 or 206 answer to a ranged GET: a 206 must name exactly that
 * range; a server that ignores Range answers 200 with the whole file, and we skip to our range. A
 * body that ends early is a failure (after the bytes it did bring were delivered).
 */
export async function readRangeBody(
  res: HttpResponse,
  start: number,
  end: number,
  what: string,
  onData: (chunk: Buffer) => void,
): Promise<void> {
  let skip = 0
  if (res.status === 206) {
    const cr = header(res.headers, 'content-range')
    const m = cr ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr) : null
    if (!m || parseByteCount(m[1]) !== start || parseByteCount(m[2]) !== end - 1) {
      res.body.discard()
      throw new SourceError('range', `${what}: answered Content-Range ${cr ?? '(none)'}`)
    }
  } else skip = start
  let want = end - start
  try {
    await res.body.each((raw) => {
      let chunk = raw
      if (skip > 0) {
        if (chunk.length <= skip) {
          skip -= chunk.length
          return true
        }
        chunk = chunk.subarray(skip)
        skip = 0
      }
      if (chunk.length > want) chunk = chunk.subarray(0, want)
      want -= chunk.length
      onData(chunk)
      return want > 0
    })
  } catch (err) {
    throw classifyError(err, what)
  } finally {
    if (want > 0 || skip > 0) res.body.destroy()
    else res.body.discard()
  }
  if (want > 0) throw new SourceError('protocol', `${what}: body ended ${want} bytes short`)
}

/**
 * One ranged GET of bytes [start, end) of `url`, delivered through opts.onData; any answer but 200
 * or 206 becomes the error `onStatus` makes of it. The archive, a site cache and S3 read this way.
 */
export async function getRange(
  send: (headers: Record<string, string>) => Promise<HttpResponse>,
  start: number,
  end: number,
  what: string,
  opts: ReadOptions,
  onStatus: (res: HttpResponse) => SourceError,
): Promise<void> {
  if (end <= start) return
  // Spelt `Range`: XRootD 5.5's HTTP plugin (XCache) matches the name case-sensitively and answers a
  // lower-case `range` with the whole file from byte 0.
  const res = await send({ Range: `bytes=${start}-${end - 1}` })
  if (res.status !== 200 && res.status !== 206) {
    res.body.discard()
    throw onStatus(res)
  }
  await readRangeBody(res, start, end, what, opts.onData)
}

export function header(h: HttpResponse['headers'], name: string): string | undefined {
  const v = h[name]
  return Array.isArray(v) ? v[0] : v
}

/** Maps a thrown undici/network error to a SourceError with a reason a person can read. */
export function classifyError(err: unknown, what: string): SourceError {
  if (err instanceof SourceError) return err
  const e = err as NodeJS.ErrnoException & { code?: string; name?: string }
  if (e?.name === 'AbortError' || e?.code === 'ABORT_ERR' || e instanceof undiciErrors.RequestAbortedError)
    return new SourceError('timeout', `${what}: aborted (deadline passed)`)
  switch (e?.code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new SourceError('unreachable', `${what}: connect timed out`)
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new SourceError('timeout', `${what}: no response headers in time`)
    case 'UND_ERR_BODY_TIMEOUT':
      return new SourceError('timeout', `${what}: body stalled`)
    case 'ECONNREFUSED':
      return new SourceError('unreachable', `${what}: connection refused (is the server reachable?)`)
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new SourceError('unreachable', `${what}: no route to the server (network down?)`)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new SourceError('unreachable', `${what}: host not found (check the URL and DNS)`)
    case 'HTTP1_PROTOCOL': // get-pool.ts: an answer HTTP/1.1 does not allow
      return new SourceError('protocol', `${what}: ${e.message}`)
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'EPIPE':
      return new SourceError('network', `${what}: connection reset`)
    default:
      // UNABLE_TO_VERIFY_LEAF_SIGNATURE: a server that leaves out its intermediate certificate.
      if (e?.code && /CERT|SSL|TLS|SELF_SIGNED|LEAF_SIGNATURE/.test(e.code))
        return new SourceError('network', `${what}: TLS error ${e.code} (set --ca-file / DESFS_CA_FILE to the archive's CA bundle)`)
      return new SourceError('network', `${what}: ${e?.message ?? String(err)}`)
  }
}

export class HttpClient {
  private pools = new Map<string, Pool>()
  private getPools = new Map<string, GetPool>()
  private opts: HttpClientOptions
  private ca: Buffer | undefined

  constructor(opts: HttpClientOptions) {
    this.opts = opts
    if (opts.caFile) this.ca = readFileSync(opts.caFile)
  }

  private pool(origin: string): Pool {
    let p = this.pools.get(origin)
    if (!p) {
      p = new Pool(origin, {
        connections: this.opts.connections ?? 16,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: this.opts.headersTimeoutMs,
        bodyTimeout: this.opts.stallTimeoutMs,
        connect: { timeout: this.opts.connectTimeoutMs, ...(this.ca ? { ca: this.ca } : {}) },
      })
      this.pools.set(origin, p)
    }
    return p
  }

  /** GETs carry the archive's bytes: they go over connections of our own (get-pool.ts). */
  private getPool(origin: string): GetPool {
    let p = this.getPools.get(origin)
    if (!p) {
      p = new GetPool(origin, {
        connections: this.opts.connections ?? 16,
        connectTimeoutMs: this.opts.connectTimeoutMs,
        headersTimeoutMs: this.opts.headersTimeoutMs,
        stallTimeoutMs: this.opts.stallTimeoutMs,
        ca: this.ca,
      })
      this.getPools.set(origin, p)
    }
    return p
  }

  /**
   * Sends a request, following redirects and retrying once after a 401 with a re-read token.
   * The caller owns the returned body and must consume or destroy it.
   */
  async request(method: string, url: string, headers: Record<string, string>, signal?: AbortSignal, body?: string): Promise<HttpResponse> {
    let retriedAuth = false
    for (;;) {
      const res = await this.follow(method, url, headers, signal, body)
      if (res.status === 401 && !retriedAuth && this.opts.reloadToken) {
        retriedAuth = true
        res.body.discard()
        await this.opts.reloadToken()
        continue
      }
      return res
    }
  }

  private async follow(
    method: string,
    url: string,
    headers: Record<string, string>,
    signal?: AbortSignal,
    body?: string,
  ): Promise<HttpResponse> {
    let current = new URL(url)
    let m = method
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const h: Record<string, string> = { ...headers }
      const auth = current.origin === this.opts.trustedOrigin ? this.opts.authorization?.() : undefined
      if (auth) h.authorization = auth
      let res
      try {
        const path = current.pathname + current.search
        res =
          m === 'GET'
            ? await this.getPool(current.origin).get(path, h, signal)
            : await dispatch(
                this.pool(current.origin),
                { method: m as Dispatcher.HttpMethod, path, headers: h, body: m === 'PROPFIND' ? body : undefined },
                signal,
              )
      } catch (err) {
        throw classifyError(err, `${m} ${current.href}`)
      }
      const location = header(res.headers, 'location')
      if (REDIRECTS.has(res.status) && location) {
        res.body.discard()
        current = new URL(location, current)
        if (res.status === 303) m = 'GET'
        continue
      }
      return { ...res, url: current.href }
    }
    throw new SourceError('protocol', `${method} ${url}: more than ${MAX_REDIRECTS} redirects`)
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values(), ...this.getPools.values()].map((p) => p.close().catch(() => undefined)))
    this.pools.clear()
    this.getPools.clear()
  }
}
