// Reads one HTTP/1.1 response at a time off a connection (get-pool.ts): the status line and headers,
// then the body framed by Content-Length, chunked transfer coding, or the connection's end. Body
// bytes are handed on as views of the buffers they arrived in, never copied. Anything a server may
// not send (a bad status line, folded or oversized headers, a bad chunk size, conflicting lengths,
// bytes after the end of a response we did not ask for) is an Http1Error, and the connection is not
// used again.

/** Headers end within this many bytes, or the response is refused. */
const MAX_HEAD = 64 * 1024
/** A chunk-size line (with its extensions) or a trailer line is at most this long. */
const MAX_LINE = 8 * 1024

export class Http1Error extends Error {
  readonly code = 'HTTP1_PROTOCOL'
}

export interface Http1Head {
  status: number
  /** By lower-case name; a repeated header is an array (as response-body.ts's parseHeaders gives). */
  headers: Record<string, string | string[]>
}

export interface Http1Events {
  /** The final (non-1xx) status line and headers. */
  head(head: Http1Head): void
  /** A piece of the body; false asks the connection to pause reading (after this read is handled). */
  body(view: Buffer): boolean
  /** The body is complete. `reusable`: the connection may carry another request. */
  end(reusable: boolean): void
}

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'to-close' | 'done'

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const STATUS = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/

export class Http1Response {
  private state: State = 'head'
  private text = ''
  private left = 0
  private keepAlive = false
  private any = false
  /** The body did not ask to pause during this read. */
  private go = true

  constructor(private on: Http1Events) {}

  /** Whether a response is complete (nothing more may arrive before the next request). */
  get done(): boolean {
    return this.state === 'done'
  }

  /** Whether any byte of the response arrived. */
  get started(): boolean {
    return this.any
  }

  /** Takes bytes as they arrive; returns false when the body asked to pause. Throws Http1Error. */
  feed(buf: Buffer): boolean {
    this.go = true
    let at = 0
    if (buf.length) this.any = true
    while (at < buf.length) {
      switch (this.state) {
        case 'head':
          at = this.readHead(buf, at)
          break
        case 'length':
          at = this.counted(buf, at)
          if (this.left === 0) this.finish(this.keepAlive)
          break
        case 'to-close':
          this.left = buf.length - at
          at = this.counted(buf, at)
          break
        case 'chunk-size': {
          const line = this.line(buf, at)
          at = line.at
          if (line.text === undefined) break
          const m = /^([0-9A-Fa-f]{1,12})[ \t]*(;.*)?$/.exec(line.text)
          if (!m) throw new Http1Error(`bad chunk size line ${JSON.stringify(line.text.slice(0, 40))}`)
          this.left = parseInt(m[1]!, 16)
          this.state = this.left === 0 ? 'trailers' : 'chunk-data'
          break
        }
        case 'chunk-data':
          at = this.counted(buf, at)
          if (this.left === 0) this.state = 'chunk-crlf'
          break
        case 'chunk-crlf': {
          const line = this.line(buf, at)
          at = line.at
          if (line.text === undefined) break
          if (line.text !== '') throw new Http1Error('chunk data longer than its size')
          this.state = 'chunk-size'
          break
        }
        case 'trailers': {
          const line = this.line(buf, at)
          at = line.at
          if (line.text === '') this.finish(this.keepAlive)
          break
        }
        case 'done':
          throw new Http1Error(`${buf.length - at} bytes after the end of the response`)
      }
    }
    return this.go
  }

  /** Hands on up to `left` body bytes from `at`; returns where it stopped. */
  private counted(buf: Buffer, at: number): number {
    const n = Math.min(this.left, buf.length - at)
    if (!this.on.body(view(buf, at, n))) this.go = false
    this.left -= n
    return at + n
  }

  /** The connection ended: the end of a body that runs to the close; an Http1Error anywhere else. */
  closed(): void {
    if (this.state === 'to-close') this.finish(false)
    else if (this.state !== 'done')
      throw new Http1Error(this.started ? 'connection closed before the response was complete' : 'connection closed before any answer')
  }

  private finish(reusable: boolean): void {
    this.state = 'done'
    this.on.end(reusable)
  }

  /** Collects a CRLF-ended line across reads; `text` is undefined until the line is whole. */
  private line(buf: Buffer, at: number): { at: number; text?: string } {
    const nl = buf.indexOf(10, at)
    const end = nl < 0 ? buf.length : nl + 1
    this.text += buf.toString('latin1', at, end)
    if (this.text.length > MAX_LINE) throw new Http1Error('a chunk or trailer line is too long')
    if (nl < 0) return { at: end }
    const text = this.text
    this.text = ''
    if (!text.endsWith('\r\n')) throw new Http1Error('a line ends without CR')
    return { at: end, text: text.slice(0, -2) }
  }

  private readHead(buf: Buffer, at: number): number {
    const had = this.text.length
    // The blank line may straddle two reads: look from up to 3 bytes before this read's first.
    this.text += buf.toString('latin1', at, Math.min(buf.length, at + MAX_HEAD))
    const blank = this.text.indexOf('\r\n\r\n', Math.max(0, had - 3))
    if (blank < 0) {
      if (this.text.length >= MAX_HEAD) throw new Http1Error(`headers longer than ${MAX_HEAD} bytes`)
      return buf.length
    }
    const head = this.text.slice(0, blank)
    this.text = ''
    const next = at + blank + 4 - had
    this.parseHead(head)
    return next
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n')
    const m = STATUS.exec(lines[0]!)
    if (!m) throw new Http1Error(`bad status line ${JSON.stringify(lines[0]!.slice(0, 60))}`)
    const status = Number(m[2])
    const headers: Record<string, string | string[]> = {}
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i]!
      const colon = l.indexOf(':')
      const name = l.slice(0, colon)
      if (colon <= 0 || !TOKEN.test(name)) throw new Http1Error(`bad header line ${JSON.stringify(l.slice(0, 60))}`)
      const k = name.toLowerCase()
      const v = l.slice(colon + 1).trim()
      const had = headers[k]
      if (had === undefined) headers[k] = v
      else if (Array.isArray(had)) had.push(v)
      else headers[k] = [had, v]
    }
    if (status < 200) {
      if (status === 101) throw new Http1Error('the server switched protocols')
      return // 1xx: the answer is still to come
    }
    const list = (k: string) => {
      const v = headers[k]
      return (Array.isArray(v) ? v.join(',') : (v ?? '')).toLowerCase()
    }
    const connection = list('connection')
      .split(',')
      .map((s) => s.trim())
    this.keepAlive = m[1] === '1' && !connection.includes('close')
    const te = list('transfer-encoding')
    const cl = headers['content-length']
    this.on.head({ status, headers })
    if (status === 204 || status === 304) this.finish(this.keepAlive)
    else if (te) {
      if (cl !== undefined) this.keepAlive = false // both framings: trust the coding, not the connection
      this.state = /(^|,)\s*chunked\s*$/.test(te) ? 'chunk-size' : 'to-close'
    } else if (cl !== undefined) {
      const values = new Set((Array.isArray(cl) ? cl : [cl]).flatMap((v) => v.split(',').map((s) => s.trim())))
      const only = values.size === 1 ? [...values][0]! : ''
      if (!/^\d{1,15}$/.test(only)) throw new Http1Error(`bad Content-Length ${JSON.stringify(String(cl).slice(0, 40))}`)
      this.left = Number(only)
      this.state = 'length'
      if (this.left === 0) this.finish(this.keepAlive)
    } else this.state = 'to-close'
  }
}

const view = (buf: Buffer, at: number, n: number) => (at === 0 && n === buf.length ? buf : buf.subarray(at, at + n))
