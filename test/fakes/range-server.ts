// A small HTTP server on loopback that serves files from memory with byte ranges, as the archive's
// door or a site cache answers a ranged GET, and records every request with its headers (so a test
// can tell which token went where). A test may make it misbehave: answer a status, cut the body
// short, or name the wrong range.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Recorded {
  method: string
  path: string
  headers: IncomingHttpHeaders
}

/**
 * What the next requests get instead of the bytes: an HTTP status, a body cut short, a 206 naming
 * another range, or a body that stops after its first bytes and never ends (a stalled server).
 */
export type Fault = number | 'short' | 'wrong-range' | 'stall' | undefined

export class RangeServer {
  readonly log: Recorded[] = []
  fault: Fault
  /** When set, requests without `Authorization: Bearer <this>` get 401. */
  requireToken: string | undefined
  private server: Server | undefined
  private port = 0

  /** `files`: bytes by path under the server's root ('/des/a.fits'). */
  constructor(private files: Map<string, Buffer>) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
      this.log.push({ method: req.method ?? '', path, headers: req.headers })
      const body = this.files.get(path)
      if (typeof this.fault === 'number') return void res.writeHead(this.fault).end()
      if (this.requireToken && req.headers.authorization !== `Bearer ${this.requireToken}`) return void res.writeHead(401).end()
      if (!body) return void res.writeHead(404).end()
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
      const start = m ? Number(m[1]) : 0
      const end = m ? Math.min(Number(m[2]) + 1, body.length) : body.length
      if (req.method === 'HEAD') return void res.writeHead(200, { 'content-length': body.length }).end()
      const slice = body.subarray(start, end)
      const named = this.fault === 'wrong-range' ? `bytes ${start + 1}-${end}/${body.length}` : `bytes ${start}-${end - 1}/${body.length}`
      const headers = m ? { 'content-range': named, 'content-length': slice.length } : { 'content-length': slice.length }
      res.writeHead(m ? 206 : 200, headers)
      if (this.fault === 'stall') return void res.write(slice.subarray(0, 10))
      if (this.fault === 'short') {
        // Half the body, then the connection is cut.
        res.write(slice.subarray(0, slice.length >> 1), () => res.destroy())
        return
      }
      res.end(slice)
    })
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
    return this
  }

  async stop(): Promise<void> {
    if (!this.server) return
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server!.close(() => resolve()))
    this.server = undefined
  }
}
