// A small S3-compatible server for tests and benchmarks, serving a directory as a bucket (path-style
// URLs, http://127.0.0.1:PORT/BUCKET/KEY, keys = PREFIX/relative path): GET with a single Range,
// HEAD, ListObjectsV2 (prefix, delimiter '/', continuation tokens), SigV4 checking of the
// Authorization header when credentials are configured (403 SignatureDoesNotMatch otherwise), a
// request log, and a few faults (503 SlowDown bursts, latency).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { open, readdir, stat } from 'node:fs/promises'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { createHash, createHmac } from 'node:crypto'
import { drained } from '../../bin/demo/server.js'

export interface AwsCredentials {
  accessKeyId: string
  secretAccessKey: string
}

/** RFC 3986 percent-encoding, as SigV4 encodes a query. */
function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

/**
 * The SigV4 canonical request of a request as S3 received it: written here, apart from the signer
 * desfs uses (the AWS SDK's), so that the server checks signatures the way S3 does, not the way the
 * client made them.
 */
function canonicalRequest(method: string, url: URL, headers: Record<string, string>, payloadHash: string): string {
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [rfc3986(k), rfc3986(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&')
  const names = Object.keys(headers)
    .map((h) => h.toLowerCase())
    .sort()
  const lower: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v.trim().replace(/\s+/g, ' ')
  // S3 takes the path as sent (percent-encoded once), without encoding it again.
  return [method, url.pathname || '/', query, names.map((n) => `${n}:${lower[n]}\n`).join(''), names.join(';'), payloadHash].join('\n')
}

export interface S3ServerOptions {
  root: string
  bucket: string
  prefix?: string
  credentials?: AwsCredentials
  region?: string
}

export interface S3Faults {
  latencyMs?: number
  /** Answer this many of the next GETs with 503 SlowDown. */
  slowDown?: number
}

export interface S3Record {
  method: string
  key: string
  range?: string
  status: number
  bytes: number
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export class S3Server {
  readonly opts: S3ServerOptions
  faults: S3Faults = {}
  readonly log: S3Record[] = []
  private server: Server | undefined
  private sockets = new Set<Socket>()
  endpoint = ''

  constructor(opts: S3ServerOptions) {
    this.opts = opts
  }

  /** The s3:// URL desfs should be given. */
  get url(): string {
    return `s3://${this.opts.bucket}${this.opts.prefix ? '/' + this.opts.prefix : ''}`
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res))
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()))
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
  }

  count(method: string): number {
    return this.log.filter((r) => r.method === method).length
  }

  private error(res: ServerResponse, rec: S3Record, status: number, code: string, message: string): void {
    rec.status = status
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }

  /** Checks a SigV4 Authorization header the way S3 does (same canonical request, same key derivation). */
  private signatureOk(req: IncomingMessage, url: URL): boolean {
    const creds = this.opts.credentials
    if (!creds) return true
    const m =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$/.exec(
        req.headers.authorization ?? '',
      )
    if (!m || m[1] !== creds.accessKeyId) return false
    const headers: Record<string, string> = {}
    for (const h of m[4]!.split(';')) headers[h] = String(req.headers[h] ?? '')
    const date = headers['x-amz-date'] ?? ''
    const text = canonicalRequest(req.method!, url, headers, String(req.headers['x-amz-content-sha256'] ?? ''))
    const scope = `${m[2]}/${m[3]}/s3/aws4_request`
    const toSign = ['AWS4-HMAC-SHA256', date, scope, createHash('sha256').update(text).digest('hex')].join('\n')
    const hmac = (k: Buffer | string, s: string) => createHmac('sha256', k).update(s).digest()
    const key = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, m[2]!), m[3]!), 's3'), 'aws4_request')
    return createHmac('sha256', key).update(toSign).digest('hex') === m[5]
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    url.host = String(req.headers.host ?? '')
    const rec: S3Record = { method: req.method ?? '?', key: '', status: 0, bytes: 0 }
    if (req.headers.range) rec.range = req.headers.range
    res.on('close', () => this.log.push(rec))
    if (this.faults.latencyMs) await new Promise((r) => setTimeout(r, this.faults.latencyMs))
    const segs = url.pathname.split('/').slice(1)
    if (segs[0] !== this.opts.bucket) return this.error(res, rec, 404, 'NoSuchBucket', 'The specified bucket does not exist')
    if (!this.signatureOk(req, url))
      return this.error(
        res,
        rec,
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided.',
      )
    const key = segs.slice(1).map(decodeURIComponent).join('/')
    rec.key = key
    if (req.method === 'GET' && key === '' && url.searchParams.get('list-type') === '2') return this.list(res, rec, url)
    const pfx = this.opts.prefix ? this.opts.prefix + '/' : ''
    if (!key.startsWith(pfx) || key.split('/').includes('..'))
      return this.error(res, rec, 404, 'NoSuchKey', 'The specified key does not exist.')
    const file = join(this.opts.root, key.slice(pfx.length))
    const st = await stat(file).catch(() => undefined)
    if (!st?.isFile()) return this.error(res, rec, 404, 'NoSuchKey', 'The specified key does not exist.')
    const common = {
      'last-modified': st.mtime.toUTCString(),
      etag: `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
      'accept-ranges': 'bytes',
    }
    if (req.method === 'HEAD') {
      rec.status = 200
      res.writeHead(200, { ...common, 'content-length': st.size })
      return void res.end()
    }
    if (req.method !== 'GET')
      return this.error(res, rec, 405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.')
    if (this.faults.slowDown && this.faults.slowDown > 0) {
      this.faults.slowDown--
      res.setHeader('retry-after', '0')
      return this.error(res, rec, 503, 'SlowDown', 'Please reduce your request rate.')
    }
    let start = 0
    let end = st.size - 1
    let status = 200
    const headers: Record<string, string | number> = { ...common }
    if (req.headers.range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range)
      if (!m || Number(m[1]) >= st.size) return this.error(res, rec, 416, 'InvalidRange', 'The requested range is not satisfiable')
      start = Number(m[1])
      end = m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1
      status = 206
      headers['content-range'] = `bytes ${start}-${end}/${st.size}`
    }
    headers['content-length'] = end - start + 1
    rec.status = status
    res.writeHead(status, headers)
    const fh = await open(file, 'r')
    try {
      const buf = Buffer.allocUnsafe(256 * 1024)
      for (let pos = start; pos <= end && !res.destroyed;) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos + 1), pos)
        if (bytesRead === 0) break
        pos += bytesRead
        rec.bytes += bytesRead
        res.write(Buffer.from(buf.subarray(0, bytesRead)))
        await drained(res)
      }
      res.end()
    } finally {
      await fh.close()
    }
  }

  private async list(res: ServerResponse, rec: S3Record, url: URL): Promise<void> {
    const prefix = url.searchParams.get('prefix') ?? ''
    const delimiter = url.searchParams.get('delimiter')
    const maxKeys = Math.min(1000, Number(url.searchParams.get('max-keys') ?? 1000))
    const after = url.searchParams.get('continuation-token')
      ? Buffer.from(url.searchParams.get('continuation-token')!, 'base64url').toString()
      : ''
    const pfx = this.opts.prefix ? this.opts.prefix + '/' : ''
    const objects: { key: string; size: number; mtime: Date }[] = []
    const prefixes = new Set<string>()
    const walk = async (dir: string, keyBase: string): Promise<void> => {
      const names = await readdir(dir, { withFileTypes: true }).catch(() => [])
      for (const d of names) {
        const key = keyBase + d.name
        if (d.isDirectory()) {
          if (delimiter === '/' && (key + '/').startsWith(prefix) && key.length >= prefix.length) prefixes.add(key + '/')
          else if ((key + '/').startsWith(prefix) || prefix.startsWith(key + '/')) await walk(join(dir, d.name), key + '/')
        } else if (key.startsWith(prefix)) {
          const st = await stat(join(dir, d.name))
          objects.push({ key, size: st.size, mtime: st.mtime })
        }
      }
    }
    if (prefix.startsWith(pfx) || pfx.startsWith(prefix)) {
      // Start at the deepest directory the prefix names, so a delimited listing is one readdir.
      const rel = prefix.startsWith(pfx) ? prefix.slice(pfx.length) : ''
      const dirRel = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/') + 1) : ''
      await walk(join(this.opts.root, dirRel), pfx + dirRel)
    }
    const all = [...objects.map((o) => ({ k: o.key, o })), ...[...prefixes].map((p) => ({ k: p, o: undefined }))]
      .sort((a, b) => (a.k < b.k ? -1 : 1))
      .filter((x) => x.k > after)
    const page = all.slice(0, maxKeys)
    const truncated = all.length > maxKeys
    let xml = `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${this.opts.bucket}</Name><Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys><IsTruncated>${truncated}</IsTruncated>`
    if (truncated) xml += `<NextContinuationToken>${Buffer.from(page[page.length - 1]!.k).toString('base64url')}</NextContinuationToken>`
    for (const x of page) {
      if (x.o)
        xml += `<Contents><Key>${xmlEscape(x.o.key)}</Key><LastModified>${x.o.mtime.toISOString()}</LastModified><ETag>"x"</ETag><Size>${x.o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`
      else xml += `<CommonPrefixes><Prefix>${xmlEscape(x.k)}</Prefix></CommonPrefixes>`
    }
    xml += '</ListBucketResult>'
    rec.status = 200
    res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) })
    res.end(xml)
  }
}
