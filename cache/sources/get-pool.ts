// GETs to one origin over HTTP/1.1 connections of our own, kept alive and reused. Everything else
// (PROPFIND, HEAD, S3's other calls) goes through undici (http-client.ts); GETs carry the bytes.
//
// Why not undici for them: it reads each socket into a fresh 64 KiB buffer and runs every read
// through its llhttp parser and handler chain. On this 2-core box that was the JavaScript thread's
// largest cost in a sync or a cold read after the garbage collector. Here each connection reads
// straight into 1 MiB slabs (Node's `onread`; slabs.ts, which also reuses them), and the body is
// handed on as views of them, exactly as it arrived, never copied.
import { connect as netConnect, isIP, type OnReadOpts, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { ResponseBody, type RawResponse } from './response-body.js'
import { Http1Response } from './http1-response.js'
import { MIN_READ, SLAB_BYTES, slabs } from './slabs.js'

export interface GetPoolOptions {
  /** Connections at most; more requests wait for one. */
  connections: number
  connectTimeoutMs: number
  /** No byte of the answer for this long after sending the request is a failure. */
  headersTimeoutMs: number
  /** A body that delivers no byte for this long is a failure. */
  stallTimeoutMs: number
  /** CA bundle to trust instead of the system's (https only). */
  ca?: Buffer | undefined
  /** An idle connection is closed after this long. */
  idleMs?: number
}

/** An error with the code classifyError (http-client.ts) knows: undici's names, so one mapping serves both. */
function coded(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const BAD_VALUE = /[\r\n\0]/

/** One GET waiting for, or on, a connection. */
class Exchange {
  answered = false
  /** Not to be tried again: tried once more already (a kept-alive connection closed under it), aborted, or past a deadline. */
  retried = false
  conn: Connection | undefined
  readonly body = new ResponseBody()
  constructor(
    readonly request: string,
    readonly resolve: (res: RawResponse) => void,
    readonly reject: (err: Error) => void,
    readonly done: () => void,
  ) {}

  /** Ends the exchange with an error: before the answer, the promise; after it, the body. */
  fail(err: Error): void {
    this.done()
    if (this.answered) this.body.fail(err)
    else this.reject(err)
  }
}

class Connection {
  readonly socket: Socket
  private slab = slabs.take()
  private used = 0
  private response: Http1Response | undefined
  private reusable = false
  ex: Exchange | undefined
  /** Responses completed on it. */
  served = 0
  connected = false
  closed = false

  constructor(
    private pool: GetPool,
    url: URL,
    opts: GetPoolOptions,
  ) {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
    const secure = url.protocol === 'https:'
    const port = Number(url.port) || (secure ? 443 : 80)
    const onread: OnReadOpts = { buffer: this.nextBuffer, callback: this.onRead }
    // tls.connect passes `onread` on to its socket (Node 20 and 22), though @types/node leaves it out.
    const tlsOpts: ConnectionOptions & { onread: OnReadOpts } = {
      host,
      port,
      onread,
      ALPNProtocols: ['http/1.1'],
      ...(isIP(host) ? {} : { servername: host }),
      ...(opts.ca ? { ca: opts.ca } : {}),
    }
    this.socket = secure ? tlsConnect(tlsOpts) : netConnect({ host, port, onread, noDelay: true })
    this.socket.setTimeout(opts.connectTimeoutMs)
    this.socket.once(secure ? 'secureConnect' : 'connect', () => {
      this.connected = true
      this.socket.setNoDelay(true)
      if (this.ex) this.send(this.ex)
    })
    this.socket.on('timeout', () => this.onTimeout())
    this.socket.on('error', (err) => this.onEnd(err))
    this.socket.on('close', () => {
      this.onEnd()
      slabs.seal(this.slab) // no read lands in it any more
    })
  }

  /** Where the next read lands: the rest of the slab, or a new slab. */
  private nextBuffer = (): Buffer => {
    if (SLAB_BYTES - this.used < MIN_READ) {
      slabs.seal(this.slab)
      this.slab = slabs.take()
      this.used = 0
    }
    return this.slab.subarray(this.used)
  }

  private onRead = (n: number, into: Uint8Array): boolean => {
    const buf = into as Buffer // the slab view nextBuffer gave
    this.used += n
    const res = this.response
    if (!res || !this.ex) {
      this.socket.destroy(coded('HTTP1_PROTOCOL', 'the server sent bytes nobody asked for'))
      return false
    }
    let go: boolean
    try {
      go = res.feed(buf.subarray(0, n))
    } catch (err) {
      this.socket.destroy(coded('HTTP1_PROTOCOL', `the server broke HTTP/1.1: ${(err as Error).message}`))
      return false
    }
    if (res.done) this.complete()
    else if (!go) this.socket.setTimeout(0) // paused until the body is read: no stall meanwhile
    return go || res.done
  }

  /** Starts an exchange on this connection (at once when connected, or once it is). */
  start(ex: Exchange): void {
    this.ex = ex
    ex.conn = this
    if (this.connected) this.send(ex)
  }

  private send(ex: Exchange): void {
    this.reusable = false
    this.response = new Http1Response({
      head: ({ status, headers }) => {
        ex.answered = true
        ex.body.resume = () => {
          if (this.ex !== ex) return
          this.socket.setTimeout(this.pool.opts.stallTimeoutMs)
          this.socket.resume()
        }
        ex.body.abort = (err) => {
          if (this.ex === ex) this.socket.destroy(err)
        }
        this.socket.setTimeout(this.pool.opts.stallTimeoutMs)
        ex.resolve({ status, headers, body: ex.body })
      },
      body: (view) => {
        slabs.lend(view)
        return ex.body.push(view)
      },
      end: (reusable) => {
        this.reusable = reusable
        ex.body.end()
      },
    })
    this.socket.setTimeout(this.pool.opts.headersTimeoutMs)
    this.socket.write(ex.request)
  }

  /** The response ended: the connection goes back to the pool, or is closed. */
  private complete(): void {
    const ex = this.ex!
    ex.done()
    this.ex = undefined
    this.response = undefined
    this.served++
    if (this.reusable) this.pool.idle(this)
    else this.socket.destroy()
  }

  private onTimeout(): void {
    const ex = this.ex
    if (!ex) return void this.socket.destroy()
    ex.retried = true // a deadline that passed is not a stale connection: not tried again here
    const why = !this.connected
      ? coded('UND_ERR_CONNECT_TIMEOUT', 'connect timed out')
      : ex.answered
        ? coded('UND_ERR_BODY_TIMEOUT', 'body stalled')
        : coded('UND_ERR_HEADERS_TIMEOUT', 'no response headers in time')
    this.socket.destroy(why)
  }

  /** The socket failed or closed: the exchange on it ends (or is tried once more), and the pool forgets it. */
  private onEnd(err?: Error): void {
    const ex = this.ex
    const res = this.response
    if (ex && res && !err) {
      try {
        res.closed() // a body that runs to the close ends here
        if (res.done) this.complete()
      } catch (e) {
        err = coded('UND_ERR_SOCKET', `other side closed: ${(e as Error).message}`)
      }
    }
    if (this.ex) {
      const failed = this.ex
      this.ex = undefined
      this.response = undefined
      // A kept-alive connection the server had closed before it read our request: GET is idempotent.
      if (!failed.answered && !failed.retried && this.served > 0 && !res?.started) {
        failed.retried = true
        this.pool.retry(failed)
      } else failed.fail(err ?? coded('UND_ERR_SOCKET', 'other side closed'))
    }
    if (!this.closed) {
      this.closed = true
      this.pool.gone(this)
    }
  }

  destroy(err: Error): void {
    this.socket.destroy(err)
  }
}

export class GetPool {
  private idleConns: Connection[] = []
  private waiting: Exchange[] = []
  private live = 0
  private closing = false
  private origin: URL

  constructor(
    origin: string,
    readonly opts: GetPoolOptions,
  ) {
    this.origin = new URL(origin)
  }

  /**
   * Sends `GET path` and resolves with the status, headers and a body read as it arrives (the
   * caller must read, discard or destroy it). `signal` aborts it at any point.
   */
  get(path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<RawResponse> {
    if (/[\s\0]/.test(path) || !path.startsWith('/')) return Promise.reject(new TypeError(`bad request path ${JSON.stringify(path)}`))
    let request = `GET ${path} HTTP/1.1\r\nhost: ${this.origin.host}\r\n`
    for (const [k, v] of Object.entries(headers)) {
      if (!HEADER_NAME.test(k) || BAD_VALUE.test(v)) return Promise.reject(new TypeError(`bad request header ${JSON.stringify(k)}`))
      request += `${k}: ${v}\r\n`
    }
    request += '\r\n'
    if (signal?.aborted) return Promise.reject(abortReason(signal))
    return new Promise<RawResponse>((resolve, reject) => {
      const onAbort = () => {
        const reason = abortReason(signal!)
        const i = this.waiting.indexOf(ex)
        ex.retried = true
        if (i >= 0) {
          this.waiting.splice(i, 1)
          ex.fail(reason)
        } else ex.conn?.destroy(reason)
      }
      const ex = new Exchange(request, resolve, reject, () => signal?.removeEventListener('abort', onAbort))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.run(ex)
    })
  }

  private run(ex: Exchange): void {
    const conn = this.idleConns.pop()
    if (conn) {
      conn.socket.ref()
      conn.start(ex)
    } else if (this.live < this.opts.connections) this.open(ex)
    else this.waiting.push(ex)
  }

  private open(ex: Exchange): void {
    this.live++
    new Connection(this, this.origin, this.opts).start(ex)
  }

  /** A kept-alive connection failed before any answer: the exchange goes on a fresh one (gone() frees the old one's place). */
  retry(ex: Exchange): void {
    this.open(ex)
  }

  /** A connection finished a response and may carry another. */
  idle(conn: Connection): void {
    if (this.closing) return void conn.socket.destroy()
    const next = this.waiting.shift()
    if (next) return conn.start(next)
    conn.socket.setTimeout(this.opts.idleMs ?? 30_000)
    conn.socket.unref()
    this.idleConns.push(conn)
  }

  /** A connection closed: its place goes to the next waiting request. */
  gone(conn: Connection): void {
    this.live--
    const i = this.idleConns.indexOf(conn)
    if (i >= 0) this.idleConns.splice(i, 1)
    const next = this.waiting.shift()
    if (next) this.open(next)
  }

  /** Closes every connection; waiting requests fail. */
  async close(): Promise<void> {
    this.closing = true
    for (const ex of this.waiting.splice(0)) ex.fail(coded('UND_ERR_DESTROYED', 'the client is closed'))
    for (const c of this.idleConns.splice(0)) c.socket.destroy()
  }
}

function abortReason(signal: AbortSignal): Error {
  const r = signal.reason as unknown
  return r instanceof Error ? r : Object.assign(new Error('aborted'), { name: 'AbortError' })
}
