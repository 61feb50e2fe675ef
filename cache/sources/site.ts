// A site's shared cache (XRootD's XCache, or any HTTP server with byte ranges) holding the archive's
// tree at the same relative paths, so that the nodes of a cluster read each file from the archive
// once between them. It serves bytes only: sizes and Adler-32 checksums come from the archive (a
// cache may not compute checksums, and is no authority on what exists), and its bytes are checked
// against them like the archive's. It has its own token or none: the archive's is never sent to it.
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import type { HttpClient } from './http-client.js'
import { encodePath } from './archive.js'
import { webdavRead, type ServerWords } from './http-status.js'
import type { FileFacts, ReadOptions, Source } from './source.js'
import { UserError } from '../../daemon/errors.js'

export interface SiteSourceOptions {
  /** The site cache's URL of the archive root, without a trailing slash. */
  base: string
  http: HttpClient
}

/** The source identity (see Source.identity) of a site cache at a base URL. */
export function siteIdentity(base: string): string {
  return `site ${base}`
}

export class SiteSource implements Source {
  readonly name = 'site'
  readonly authoritative = false
  readonly bytesOnly = true
  readonly identity: string
  private base: string
  private http: HttpClient
  private words: ServerWords = {
    server: 'the site cache',
    tokenHint: 'check site_token_file (--site-token-file), or ask the site cache admins which token it wants',
  }

  constructor(opts: SiteSourceOptions) {
    this.base = opts.base
    this.identity = siteIdentity(opts.base)
    this.http = opts.http
  }

  locate(relPath: string): string {
    return `${this.base}/${encodePath(relPath)}`
  }

  read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    return webdavRead(this.http, this.locate(relPath), start, end, opts, this.words)
  }

  /** Listings come from the archive: a cache holds what was asked of it, not what exists. */
  list(): Promise<Map<string, FileFacts> | null> {
    return Promise.resolve(null)
  }

  /** Facts come from the archive (the authority on sizes and checksums). */
  stat(): Promise<FileFacts | null> {
    return Promise.resolve(null)
  }

  async close(): Promise<void> {
    await this.http.close()
  }
}

/**
 * The site cache's own bearer token, from a file (site_token_file): read at start (a file that
 * cannot be read is a setting to fix) and again after a 401, since it may have been replaced. No
 * file: requests carry no token.
 */
export class SiteToken {
  private value: string | undefined
  constructor(private file: string | undefined) {
    if (!file) return
    try {
      this.value = readFileSync(file, 'utf8').trim() || undefined
    } catch (err) {
      throw new UserError(
        `site_token_file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); fix the path or leave the setting out for a site cache that wants no token`,
      )
    }
  }

  authorization(): string | undefined {
    return this.value ? `Bearer ${this.value}` : undefined
  }

  /** Reads the file again; keeps the token it had when the file cannot be read now. */
  async reload(): Promise<void> {
    if (!this.file) return
    this.value = (await readFile(this.file, 'utf8').catch(() => undefined))?.trim() || this.value
  }
}
