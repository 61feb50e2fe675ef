// What an HTTP status from a WebDAV server (the archive's dCache door, a site's XCache) means for a
// read, as a SourceError whose message says what to do, and the ranged GET both answer alike. Both
// speak the same HTTP; only who answered and how to fix a refused token differ.
import { getRange, retryAfterMs, type HttpClient, type HttpResponse } from './http-client.js'
import { SourceError, type ReadOptions } from './source.js'

export interface ServerWords {
  /** Who answered, for messages: 'the archive', 'the site cache'. */
  server: string
  /** What a user whose token was refused (401) should do. */
  tokenHint: string
}

/** Turns a non-success status into a SourceError whose message says what to do. */
export function statusError(res: HttpResponse, what: string, words: ServerWords): SourceError {
  const s = res.status
  if (s === 401)
    return new SourceError('auth', `${what}: HTTP 401, the bearer token is missing, expired or rejected: ${words.tokenHint}`, s)
  if (s === 403)
    return new SourceError(
      'forbidden',
      `${what}: HTTP 403, this token is not permitted to read it (check the token's scopes and your DES membership)`,
      s,
    )
  if (s === 404) return new SourceError('not_found', `${what}: HTTP 404, not in ${words.server}`, s)
  if (s === 416) return new SourceError('range', `${what}: HTTP 416, range not satisfiable`, s)
  if (s === 429) return new SourceError('throttled', `${what}: HTTP 429, ${words.server} asks us to slow down`, s, retryAfterMs(res))
  if (s >= 500) return new SourceError('server', `${what}: HTTP ${s} from ${words.server}`, s, retryAfterMs(res))
  return new SourceError('protocol', `${what}: unexpected HTTP ${s}`, s)
}

/** Bytes [start, end) of the file at `url` with one ranged GET, failures worded for `words.server`. */
export function webdavRead(
  http: HttpClient,
  url: string,
  start: number,
  end: number,
  opts: ReadOptions,
  words: ServerWords,
): Promise<void> {
  const what = `GET ${url} bytes=${start}-${end - 1}`
  return getRange(
    (h) => http.request('GET', url, h, opts.signal),
    start,
    end,
    what,
    opts,
    (res) => statusError(res, what, words),
  )
}
