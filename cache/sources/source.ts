// What every place we can read archive files from (the dCache WebDAV door, S3, a local mirror)
// offers the cache: ranged reads, directory listings with sizes, and single-file facts.

/** What a source tells of one file. */
export interface FileFacts {
  /** Bytes, or MISSING (fs/facts.ts) when the archive listing did not have the file. */
  size: number
  adler32: string | null
  /** Milliseconds since the epoch, or null. */
  mtime: number | null
}

export type SourceErrorKind =
  | 'auth' // 401: token missing, expired or rejected
  | 'forbidden' // 403: token valid but not allowed
  | 'not_found' // 404
  | 'range' // 416 or a Content-Range that does not match the request
  | 'server' // 5xx
  | 'throttled' // 429 or S3 SlowDown: retry after the time the server asks for
  | 'unreachable' // could not connect at all: refused, host not found, connect timeout
  | 'network' // connection reset, TLS, other transport failures
  | 'timeout' // connect, headers, stalled or too-slow body
  | 'protocol' // a response we cannot use (short body, bad XML, unexpected status)
  | 'local' // the source's local side failed (mirror directory unreadable)
  | 'cancelled' // everyone who wanted the bytes gave up (a cancelled sync): not an error of the source

export class SourceError extends Error {
  readonly kind: SourceErrorKind
  readonly status: number | undefined
  /** How long the server asked us to wait (Retry-After), ms. */
  readonly retryAfterMs: number | undefined
  constructor(kind: SourceErrorKind, message: string, status?: number, retryAfterMs?: number) {
    super(message)
    this.name = 'SourceError'
    this.kind = kind
    this.status = status
    this.retryAfterMs = retryAfterMs
  }

  /** Worth another attempt: the same request may well succeed a moment later. */
  get retryable(): boolean {
    return (
      this.kind === 'server' ||
      this.kind === 'throttled' ||
      this.kind === 'unreachable' ||
      this.kind === 'network' ||
      this.kind === 'timeout' ||
      this.kind === 'protocol'
    )
  }

  /** The source could not be reached at all (counts towards marking it down). */
  get unreachable(): boolean {
    return this.kind === 'unreachable'
  }
}

export interface ReadOptions {
  signal?: AbortSignal
  /** Called with consecutive chunks of the requested range, in order. */
  onData: (chunk: Buffer) => void
}

export interface Source {
  /** Short name for logs and metrics: 'archive', 's3', 'mirror'. */
  readonly name: string
  /**
   * What this source is, precisely enough that two sources with the same identity serve the same
   * files (kind and base URL, bucket with endpoint, or directory). Facts learned from it are kept
   * under it, so a wrong setting cannot leave wrong facts behind for the right one.
   */
  readonly identity: string
  /**
   * True when the source has every archive file, so a file missing from its listing is missing from
   * the archive. A site mirror may be partial: its listings only add facts.
   */
  readonly authoritative: boolean
  /**
   * A cache in front of the archive (a site's XCache): it serves bytes only. It gives no facts (sizes
   * and checksums come from the sources that know them) and is not worth retrying: a failed read
   * moves on to the next source at once, and any failure of it counts towards marking it down.
   */
  readonly bytesOnly?: boolean
  /** Where a file is, as a person would write it (URL or path). */
  locate(relPath: string): string
  /**
   * Reads bytes [start, end) of a file, delivering them through onData. Resolves once all bytes were
   * delivered; rejects with a SourceError otherwise (after delivering a prefix, possibly).
   */
  read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void>
  /** Facts for every file directly in a directory, or null when this source cannot list. */
  list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null>
  /** Facts for one file, or null when the source does not have it. */
  stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null>
  close(): Promise<void>
}
