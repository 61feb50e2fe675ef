// `desfs doctor`'s check of the site cache (site_cache): that it answers, and that a ranged GET of a
// file the metadata DB names (the first it can use) brings exactly the archive's bytes: the length
// from the archive, and the same bytes as the archive's for the first 64 KiB. Each failure says what
// is wrong with the site cache and how to fix it.
import { resolve } from 'node:path'
import { archiveUrlSetting, durationSetting, type Setting } from '../daemon/config.js'
import { findTreeSource, openMetadataDb } from '../daemon/catalog/metadata.js'
import { oneLine } from '../daemon/errors.js'
import { discoverToken, MAKE_TOKEN_HINT } from '../daemon/token/token.js'
import { checkHttpUrl } from '../daemon/url-setting.js'
import { formatSize } from '../daemon/units.js'
import { checkRow } from '../fs/tree-rules.js'
import { ArchiveSource } from '../cache/sources/archive.js'
import { HttpClient } from '../cache/sources/http-client.js'
import { SiteSource, SiteToken } from '../cache/sources/site.js'
import { SourceError, type Source } from '../cache/sources/source.js'
import type { CheckResult } from './doctor.js'

const NAME = 'site cache'
/** Bytes compared between the site cache and the archive. */
const PROBE_BYTES = 64 * 1024

/** The first file of the metadata DB that the tree would show, as an archive-relative path. */
export function firstDbFile(dbPath: string, treeQuery?: string): string | undefined {
  const db = openMetadataDb(dbPath)
  try {
    const rows = db
      .prepare(`SELECT * FROM (${findTreeSource(db, dbPath, treeQuery).sql}) LIMIT 100`)
      .raw()
      .all() as unknown[][]
    for (const [path, filename, compression] of rows) {
      const r = checkRow(path, filename, compression)
      if (typeof r !== 'string') return [...r.dir, r.name].join('/')
    }
    return undefined
  } finally {
    db.close()
  }
}

/** What to do about a failed request to the site cache, by the kind of failure. */
function siteFix(err: SourceError): string {
  switch (err.kind) {
    case 'unreachable':
      return 'check --site-cache (host and port) and that the site cache runs with its HTTP port open (XCache: xrd.protocol XrdHttp)'
    case 'not_found':
      return "the site cache URL must be the archive root as the site cache serves it (the archive's files at the same relative paths); ask the site admins, or check its origin (pss.origin) and export"
    case 'auth':
    case 'forbidden':
      return 'set site_token_file (--site-token-file) to a token the site cache accepts'
    case 'range':
    case 'protocol':
      return 'the site cache does not answer byte ranges correctly: check its HTTP configuration (XrdHttp); meanwhile leave it out (--sources archive)'
    default:
      return "check the site cache's health and its connection to its origin (the archive's xroot door)"
  }
}

/** Bytes [0, n) of a file from a source. */
async function firstBytes(source: Source, rel: string, n: number, signal: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = []
  await source.read(rel, 0, n, { signal, onData: (c) => parts.push(Buffer.from(c)) })
  return Buffer.concat(parts)
}

/** The site cache check, or undefined when no site cache is configured. */
export async function checkSiteCache(settings: Map<string, Setting>): Promise<CheckResult | undefined> {
  const raw = settings.get('site_cache')?.value
  if (!raw) return undefined
  const fail = (detail: string, fix?: string): CheckResult => ({ name: NAME, status: 'FAIL', detail, ...(fix ? { fix } : {}) })
  const warn = (detail: string, fix?: string): CheckResult => ({ name: NAME, status: 'WARN', detail, ...(fix ? { fix } : {}) })
  let base: string
  let siteToken: SiteToken
  try {
    base = checkHttpUrl(raw, 'site cache URL')
    const tokenFile = settings.get('site_token_file')?.value
    siteToken = new SiteToken(tokenFile ? resolve(tokenFile) : undefined)
  } catch (err) {
    return fail(oneLine(err), 'fix --site-cache / --site-token-file')
  }
  const connectTimeoutMs = durationSetting(settings, 'connect_timeout')
  const deadline = connectTimeoutMs + 10_000
  const timeouts = {
    connectTimeoutMs,
    headersTimeoutMs: deadline,
    stallTimeoutMs: deadline,
    caFile: settings.get('ca_file')?.value,
    connections: 1,
  }
  const site = new SiteSource({
    base,
    http: new HttpClient({ ...timeouts, trustedOrigin: new URL(base).origin, authorization: () => siteToken.authorization() }),
  })
  let archive: ArchiveSource | undefined
  try {
    let rel: string | undefined
    try {
      rel = firstDbFile(resolve(settings.get('db')!.value!), settings.get('tree_query')?.value)
    } catch {
      rel = undefined // the metadata DB check says what is wrong with it
    }
    if (!rel)
      return warn(`${base}: not checked (no file to try: the metadata DB names none that desfs can use)`, 'see the metadata DB check')
    // The file's size and first bytes, from the archive (the authority), with the archive's token.
    const tokenFile = settings.get('token_file')?.value
    const token = (await discoverToken(tokenFile ? { ...process.env, DESFS_TOKEN_FILE: resolve(tokenFile) } : process.env)).token
    const archiveUrl = archiveUrlSetting(settings)
    archive = new ArchiveSource({
      base: archiveUrl,
      http: new HttpClient({
        ...timeouts,
        trustedOrigin: new URL(archiveUrl).origin,
        authorization: () => (token ? `Bearer ${token}` : undefined),
      }),
      tokenHint: MAKE_TOKEN_HINT,
    })
    let size: number | undefined
    let expected: Buffer | undefined
    try {
      size = (await archive.stat(rel, AbortSignal.timeout(deadline)))?.size
      if (size !== undefined) expected = await firstBytes(archive, rel, Math.min(size, PROBE_BYTES), AbortSignal.timeout(deadline))
    } catch {
      size = undefined // the archive check says why
    }
    const n = expected?.length ?? 1
    let got: Buffer
    const t0 = performance.now()
    try {
      got = await firstBytes(site, rel, n, AbortSignal.timeout(deadline))
    } catch (err) {
      const e = err instanceof SourceError ? err : new SourceError('network', oneLine(err))
      return fail(`${base}: ${e.message}`, siteFix(e))
    }
    const ms = Math.round(performance.now() - t0)
    if (!expected)
      return warn(
        `${base} answers a ranged GET of ${rel} (${ms} ms), but its bytes were not compared: the archive did not give the file's size`,
        'see the archive check',
      )
    if (!got.equals(expected)) {
      return fail(
        `${base}: the first ${formatSize(n)} of ${rel} differ from the archive's: its copy is damaged or it caches another origin`,
        "ask the site admins to check the cache's origin (pss.origin) and drop the file from the cache; meanwhile leave it out (--sources archive)",
      )
    }
    return {
      name: NAME,
      status: 'OK',
      detail: `${base} serves ${rel} (bytes 0-${n - 1} of ${formatSize(size!)}, the archive's) in ${ms} ms`,
    }
  } finally {
    await site.close()
    await archive?.close()
  }
}
