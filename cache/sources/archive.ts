// The dCache WebDAV door as a Source: ranged GETs (always a single `bytes=a-b` range), PROPFIND
// Depth:1 for directory listings with sizes and checksums, HEAD with `Want-Digest: adler32` for
// single files.
import { HttpClient, header, classifyError } from './http-client.js'
import { statusError, webdavRead, type ServerWords } from './http-status.js'
import { PROPFIND_BODY, adler32From, parseMultistatus } from './propfind.js'
import { parseByteCount, shown } from './byte-count.js'
import { SourceError, type ReadOptions, type Source } from './source.js'
import type { FileFacts } from './source.js'

export interface ArchiveSourceOptions {
  /** Archive root URL, without a trailing slash. */
  base: string
  http: HttpClient
  /** What a user whose token was refused (401) should do to get one, for the error message. */
  tokenHint: string
}

/** The source identity (see Source.identity) of the archive at a base URL. */
export function archiveIdentity(base: string): string {
  return `archive ${base}`
}

/** Percent-encodes each segment of an archive-relative path. */
export function encodePath(relPath: string): string {
  return relPath
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .join('/')
}

export class ArchiveSource implements Source {
  readonly name = 'archive'
  readonly authoritative = true
  readonly identity: string
  private base: string
  private basePath: string
  private http: HttpClient
  private words: ServerWords

  constructor(opts: ArchiveSourceOptions) {
    this.base = opts.base
    this.identity = archiveIdentity(opts.base)
    this.basePath = decodeURIComponent(new URL(opts.base).pathname).replace(/\/+$/, '')
    this.http = opts.http
    this.words = { server: 'the archive', tokenHint: opts.tokenHint }
  }

  locate(relPath: string): string {
    return `${this.base}/${encodePath(relPath)}`
  }

  read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    return webdavRead(this.http, this.locate(relPath), start, end, opts, this.words)
  }

  async list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    const rel = encodePath(relDir)
    const url = rel ? `${this.base}/${rel}/` : `${this.base}/`
    const what = `PROPFIND ${url}`
    const res = await this.http.request(
      'PROPFIND',
      url,
      { depth: '1', 'content-type': 'application/xml; charset=utf-8' },
      signal,
      PROPFIND_BODY,
    )
    if (res.status === 405 || res.status === 501) {
      res.body.discard()
      return null
    }
    if (res.status === 404) {
      res.body.discard()
      return new Map()
    }
    if (res.status !== 207) {
      res.body.discard()
      throw statusError(res, what, this.words)
    }
    let xml: string
    try {
      xml = await res.body.text()
    } catch (err) {
      throw classifyError(err, what)
    }
    let entries
    try {
      entries = parseMultistatus(xml)
    } catch (err) {
      throw new SourceError('protocol', `${what}: ${(err as Error).message}`)
    }
    const dirPath = relDir ? `${this.basePath}/${relDir}` : this.basePath
    const out = new Map<string, FileFacts>()
    for (const e of entries) {
      if (e.isDir || e.path === dirPath) continue
      const slash = e.path.lastIndexOf('/')
      if (e.path.slice(0, slash) !== dirPath) continue
      const name = e.path.slice(slash + 1)
      out.set(relDir ? `${relDir}/${name}` : name, e.facts)
    }
    return out
  }

  async stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    const url = this.locate(relPath)
    const res = await this.http.request('HEAD', url, { 'want-digest': 'adler32' }, signal)
    res.body.discard()
    if (res.status === 404) return null
    if (res.status !== 200) throw statusError(res, `HEAD ${url}`, this.words)
    const length = header(res.headers, 'content-length')
    const size = parseByteCount(length)
    if (size === undefined) throw new SourceError('protocol', `HEAD ${url}: Content-Length ${shown(length)} is not a byte count`)
    const lm = header(res.headers, 'last-modified')
    const mtime = lm ? Date.parse(lm) : NaN
    return { size, adler32: adler32From(header(res.headers, 'digest')), mtime: Number.isFinite(mtime) ? mtime : null }
  }

  async close(): Promise<void> {
    await this.http.close()
  }
}
