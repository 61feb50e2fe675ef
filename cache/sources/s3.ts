// An S3 bucket holding a copy of the archive (the same relative paths under a prefix): ranged GETs,
// ListObjectsV2 for directory listings with sizes, HEAD for single files. Requests are signed with
// the AWS SDK's SigV4 signer when its credential chain finds credentials (s3-signer.ts), and sent
// anonymously otherwise (public buckets). AWS endpoints are addressed virtual-host style; any other endpoint path style.
import { XMLParser } from 'fast-xml-parser'
import { HttpClient, classifyError, getRange, header, retryAfterMs, type HttpResponse } from './http-client.js'
import { encodePath } from './archive.js'
import { adler32From } from './propfind.js'
import { S3Signer, uriEncode } from './s3-signer.js'
import { parseByteCount, shown } from './byte-count.js'
import { SourceError, type ReadOptions, type Source } from './source.js'
import { parseS3Url } from './s3-url.js'
import type { FileFacts } from './source.js'

export interface S3SourceOptions {
  /** s3://bucket/prefix */
  url: string
  /** https://s3.REGION.amazonaws.com by default. */
  endpoint?: string | undefined
  region: string
  /** Signs requests (with the AWS SDK's credential chain, or what a test gives it). */
  signer: S3Signer
  http: HttpClient
}

const parser = new XMLParser({ parseTagValue: false, isArray: (name) => name === 'Contents' || name === 'CommonPrefixes' })

export class S3Source implements Source {
  readonly name = 's3'
  readonly authoritative = true
  readonly identity: string
  private bucket: string
  private prefix: string
  private signer: S3Signer
  private http: HttpClient
  /** Origin plus the path up to the bucket ('' for virtual-host style). */
  private base: string

  constructor(opts: S3SourceOptions) {
    const { bucket, prefix } = parseS3Url(opts.url)
    this.bucket = bucket
    this.prefix = prefix
    this.signer = opts.signer
    this.http = opts.http
    const endpoint = (opts.endpoint || `https://s3.${opts.region}.amazonaws.com`).replace(/\/+$/, '')
    const u = new URL(endpoint)
    if (/(^|\.)amazonaws\.com$/.test(u.hostname) && !bucket.includes('.')) this.base = `${u.protocol}//${bucket}.${u.host}`
    else this.base = `${endpoint}/${bucket}`
    this.identity = `s3 ${this.base}/${prefix}`
  }

  private key(relPath: string): string {
    return this.prefix ? `${this.prefix}/${relPath}` : relPath
  }

  locate(relPath: string): string {
    return `s3://${this.bucket}/${this.key(relPath)}`
  }

  private objectUrl(relPath: string): URL {
    return new URL(`${this.base}/${encodePath(this.key(relPath))}`)
  }

  private async send(method: 'GET' | 'HEAD', url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<HttpResponse> {
    const h = { ...(await this.signer.sign(method, url, headers)) }
    delete h.host // undici sets it; it was signed with the same value
    return this.http.request(method, url.href, h, signal)
  }

  private statusError(res: HttpResponse, what: string): SourceError {
    const s = res.status
    if (s === 403)
      return new SourceError(
        'forbidden',
        `${what}: HTTP 403 from S3 (check AWS_PROFILE / AWS_ACCESS_KEY_ID, or that the bucket is public)`,
        s,
      )
    if (s === 404) return new SourceError('not_found', `${what}: HTTP 404, not in the bucket`, s)
    if (s === 416) return new SourceError('range', `${what}: HTTP 416, range not satisfiable`, s)
    if (s === 429 || s === 503) return new SourceError('throttled', `${what}: HTTP ${s}, S3 asks us to slow down`, s, retryAfterMs(res))
    if (s >= 500) return new SourceError('server', `${what}: HTTP ${s} from S3`, s, retryAfterMs(res))
    return new SourceError('protocol', `${what}: unexpected HTTP ${s}`, s)
  }

  async read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    const url = this.objectUrl(relPath)
    const what = `GET ${this.locate(relPath)} bytes=${start}-${end - 1}`
    await getRange(
      (h) => this.send('GET', url, h, opts.signal),
      start,
      end,
      what,
      opts,
      (res) => this.statusError(res, what),
    )
  }

  async list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    const dirKey = this.key(relDir)
    const prefix = dirKey ? `${dirKey}/` : ''
    const out = new Map<string, FileFacts>()
    let token: string | undefined
    for (let page = 0; page < 1000; page++) {
      const url = new URL(`${this.base}/`)
      url.searchParams.set('list-type', '2')
      url.searchParams.set('prefix', prefix)
      url.searchParams.set('delimiter', '/')
      if (token) url.searchParams.set('continuation-token', token)
      // SigV4 wants the query encoded its way; URLSearchParams encodes spaces as '+'.
      url.search = [...url.searchParams.entries()].map(([k, v]) => `${uriEncode(k)}=${uriEncode(v)}`).join('&')
      const what = `LIST s3://${this.bucket}/${prefix}`
      const res = await this.send('GET', url, {}, signal)
      if (res.status !== 200) {
        res.body.discard()
        throw this.statusError(res, what)
      }
      let doc: {
        ListBucketResult?: {
          Contents?: { Key: string; Size: string; LastModified?: string }[]
          IsTruncated?: string
          NextContinuationToken?: string
        }
      }
      try {
        doc = parser.parse(await res.body.text()) as typeof doc
      } catch (err) {
        throw classifyError(err, what)
      }
      const r = doc.ListBucketResult
      if (!r) throw new SourceError('protocol', `${what}: not a ListBucketResult`)
      for (const c of r.Contents ?? []) {
        const name = String(c.Key).slice(prefix.length)
        if (!name || name.includes('/')) continue
        const mtime = c.LastModified ? Date.parse(c.LastModified) : NaN
        const size = parseByteCount(c.Size === undefined ? undefined : String(c.Size))
        if (size === undefined)
          throw new SourceError(
            'protocol',
            `${what}: Size ${shown(c.Size === undefined ? undefined : String(c.Size))} of ${c.Key} is not a byte count`,
          )
        out.set(relDir ? `${relDir}/${name}` : name, { size, adler32: null, mtime: Number.isFinite(mtime) ? mtime : null })
      }
      if (r.IsTruncated !== 'true' || !r.NextContinuationToken) break
      token = r.NextContinuationToken
    }
    return out
  }

  async stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    const url = this.objectUrl(relPath)
    const res = await this.send('HEAD', url, {}, signal)
    res.body.discard()
    if (res.status === 404) return null
    if (res.status !== 200) throw this.statusError(res, `HEAD ${this.locate(relPath)}`)
    const length = header(res.headers, 'content-length')
    const size = parseByteCount(length)
    if (size === undefined)
      throw new SourceError('protocol', `HEAD ${this.locate(relPath)}: Content-Length ${shown(length)} is not a byte count`)
    const lm = header(res.headers, 'last-modified')
    const mtime = lm ? Date.parse(lm) : NaN
    // A copy made by desfs's tools (or anyone careful) may carry the archive's checksum as metadata.
    return {
      size,
      adler32: adler32From(header(res.headers, 'x-amz-meta-adler32')?.replace(/^/, 'adler32=')),
      mtime: Number.isFinite(mtime) ? mtime : null,
    }
  }

  async close(): Promise<void> {
    await this.http.close()
  }
}
