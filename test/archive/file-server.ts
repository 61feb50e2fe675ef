// A plain HTTP file server on 127.0.0.1 standing in for the web server that publishes the metadata
// DB: GET and HEAD with ETag and Last-Modified, single byte ranges with If-Range, and a fault that
// drops the connection after some bytes for the next N GETs. Logs every request with its range and
// the bytes it sent, so tests can check that a resumed download fetched nothing twice.
import { createServer, type Server } from 'node:http'
import { open, stat } from 'node:fs/promises'
import type { AddressInfo, Socket } from 'node:net'

export interface FileServerRequest {
  method: string
  path: string
  range?: string
  status: number
  bytes: number
}

export class FileServer {
  /** URL path -> local file. */
  readonly files = new Map<string, string>()
  readonly log: FileServerRequest[] = []
  /** Drop the connection after this many body bytes, for the next dropCount GETs. */
  dropAfterBytes = 0
  dropCount = 0
  url = ''
  private server: Server | undefined
  private sockets = new Set<Socket>()

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      void (async () => {
        const path = new URL(req.url ?? '/', 'http://x').pathname
        const rec: FileServerRequest = {
          method: req.method ?? '?',
          path,
          status: 0,
          bytes: 0,
          ...(req.headers.range ? { range: req.headers.range } : {}),
        }
        this.log.push(rec)
        const file = this.files.get(path)
        const st = file ? await stat(file).catch(() => undefined) : undefined
        if (!file || !st) {
          rec.status = 404
          return void res.writeHead(404).end('not found\n')
        }
        const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`
        const lastModified = st.mtime.toUTCString()
        let start = 0
        let end = st.size - 1
        let status = 200
        const ifRange = req.headers['if-range']
        const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
        if (m && (!ifRange || ifRange === etag || ifRange === lastModified)) {
          start = Number(m[1])
          end = m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1
          if (start >= st.size) {
            rec.status = 416
            return void res.writeHead(416, { 'content-range': `bytes */${st.size}` }).end()
          }
          status = 206
          res.setHeader('content-range', `bytes ${start}-${end}/${st.size}`)
        }
        res.setHeader('etag', etag)
        res.setHeader('last-modified', lastModified)
        res.setHeader('accept-ranges', 'bytes')
        res.setHeader('content-length', end - start + 1)
        rec.status = status
        res.writeHead(status)
        if (req.method === 'HEAD') return void res.end()
        const drop = this.dropCount > 0 ? (this.dropCount--, this.dropAfterBytes) : Infinity
        const fh = await open(file, 'r')
        try {
          const buf = Buffer.alloc(64 * 1024)
          let pos = start
          // Settles once the last chunk has left for the socket (write callbacks run in order).
          let flushed: Promise<void> = Promise.resolve()
          while (pos <= end) {
            const n = Math.min(buf.length, end - pos + 1, drop - rec.bytes)
            if (n <= 0) {
              // Cut the connection mid-body with a FIN after the bytes written so far: a reset could
              // discard bytes the client has not read yet, and the byte counts would no longer match.
              await flushed
              return void res.socket?.end()
            }
            const { bytesRead } = await fh.read(buf, 0, n, pos)
            pos += bytesRead
            rec.bytes += bytesRead
            let ok = true
            flushed = new Promise<void>((r) => {
              ok = res.write(Buffer.from(buf.subarray(0, bytesRead)), () => r())
            })
            if (!ok) await new Promise((r) => res.once('drain', r))
          }
          res.end()
        } finally {
          await fh.close()
        }
      })()
    })
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  /** Body bytes sent for one path by GETs. */
  sent(path: string): number {
    return this.log.filter((r) => r.method === 'GET' && r.path === path).reduce((a, r) => a + r.bytes, 0)
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
  }
}
