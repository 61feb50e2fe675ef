// The bearer token for the archive. Discovery follows WLCG's order (BEARER_TOKEN, BEARER_TOKEN_FILE,
// $XDG_RUNTIME_DIR/bt_u$UID, /tmp/bt_u$UID) and then des-archive-access's own file
// ($DES_ARCHIVE_ACCESS_DIR/bearer_token, written by htgettoken). The token itself is never logged:
// only where it came from, its subject, scopes and expiry.
import { watch, type FSWatcher } from 'chokidar'
import { readFile, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { desArchiveAccessDir } from '../paths.js'
import { log } from '../log.js'

export interface TokenInfo {
  /** Where the token came from: 'env BEARER_TOKEN', or a file path. */
  source: string
  /** Set when a token was found. */
  token?: string
  subject?: string
  scopes?: string
  issuer?: string
  /** Expiry, seconds since the epoch, when the token is a JWT with exp. */
  exp?: number
  /** Issued-at, seconds since the epoch, when the token is a JWT with iat. */
  iat?: number
  /** Why no usable token: missing, unreadable, or refused for its permissions. */
  problem?: string
  /** The problem may go away by itself in a moment (a file caught while being written). */
  transient?: boolean
}

/** What may be shown about a token: everything but the token. */
export interface TokenSummary {
  source: string
  subject?: string | undefined
  scopes?: string | undefined
  issuer?: string | undefined
  expires?: string | undefined
  /** Seconds left until exp (negative once expired). */
  expiresIn?: number | undefined
  problem?: string | undefined
}

export function summarize(info: TokenInfo, now = Date.now()): TokenSummary {
  return {
    source: info.source,
    subject: info.subject,
    scopes: info.scopes,
    issuer: info.issuer,
    expires: info.exp ? new Date(info.exp * 1000).toISOString() : undefined,
    expiresIn: info.exp ? Math.round(info.exp - now / 1000) : undefined,
    problem: info.problem,
  }
}

/**
 * A directory that holds a token must be private, as ssh insists for ~/.ssh. Shared sticky
 * directories (/tmp, where WLCG's /tmp/bt_u$UID lives) are exempt: there the file's own 0600 protects
 * it and nobody else can replace it. Returns the problem, or undefined when the directory is fine.
 */
export async function tokenDirProblem(dir: string): Promise<string | undefined> {
  let st
  try {
    st = await stat(dir)
  } catch {
    return undefined
  }
  if (st.mode & 0o1000) return undefined
  if ((st.mode & 0o077) !== 0)
    return `token directory ${dir} is accessible to group/others (mode ${(st.mode & 0o777).toString(8)}): run chmod 700 ${dir}`
  return undefined
}

export const MAKE_TOKEN_HINT =
  'run `htgettoken -a htvaultprod.fnal.gov -i des -o ~/.des_archive_access/bearer_token` (or des-archive-access-make-token, or `desfs token login`)'

/** Candidate token locations in discovery order; the first that exists wins. */
export function tokenCandidates(env: NodeJS.ProcessEnv = process.env): { kind: 'env' | 'file'; where: string }[] {
  // An explicit --token-file / DESFS_TOKEN_FILE replaces discovery altogether.
  if (env.DESFS_TOKEN_FILE) return [{ kind: 'file', where: env.DESFS_TOKEN_FILE }]
  const uid = process.getuid?.() ?? 0
  const out: { kind: 'env' | 'file'; where: string }[] = []
  if (env.BEARER_TOKEN) out.push({ kind: 'env', where: 'BEARER_TOKEN' })
  if (env.BEARER_TOKEN_FILE) out.push({ kind: 'file', where: env.BEARER_TOKEN_FILE })
  if (env.XDG_RUNTIME_DIR) out.push({ kind: 'file', where: join(env.XDG_RUNTIME_DIR, `bt_u${uid}`) })
  out.push({ kind: 'file', where: `/tmp/bt_u${uid}` })
  out.push({ kind: 'file', where: join(env.DES_ARCHIVE_ACCESS_DIR || desArchiveAccessDir(), 'bearer_token') })
  return out
}

/**
 * Why a token (already trimmed) cannot be sent as a bearer token, or undefined when it can. RFC 6750's
 * b64token is letters, digits and -._~+/ with trailing '='; anything else (a second line, a space, a
 * quote) would be sent and rejected on every request, so it is reported here, naming what was found
 * but never the token's text.
 */
export function tokenShapeProblem(token: string): string | undefined {
  if (/^[A-Za-z0-9\-._~+/]+=*$/.test(token)) return undefined
  const found = /[\r\n]/.test(token)
    ? 'a line break'
    : /\s/.test(token)
      ? 'a space or tab'
      : /[^\x20-\x7e]/.test(token)
        ? 'a control or non-ASCII character'
        : 'a character tokens do not contain'
  return `holds more than one token (${found} inside it); it must hold the token alone, on one line`
}

/** Decodes a JWT's claims without verifying it (the archive verifies; we only want exp/sub/scope). */
export function jwtClaims(token: string): Record<string, unknown> | undefined {
  const parts = token.split('.')
  if (parts.length !== 3) return undefined
  try {
    return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>
  } catch {
    return undefined
  }
}

function describe(source: string, token: string): TokenInfo {
  const claims = jwtClaims(token)
  const info: TokenInfo = { source, token }
  if (claims) {
    if (typeof claims.sub === 'string') info.subject = claims.sub
    if (typeof claims.scope === 'string') info.scopes = claims.scope
    if (typeof claims.iss === 'string') info.issuer = claims.iss
    if (typeof claims.exp === 'number') info.exp = claims.exp
    if (typeof claims.iat === 'number') info.iat = claims.iat
  }
  return info
}

/** Finds and reads the token now. Never throws: a problem is reported in `problem`. */
export async function discoverToken(env: NodeJS.ProcessEnv = process.env): Promise<TokenInfo> {
  for (const c of tokenCandidates(env)) {
    if (c.kind === 'env') {
      const token = env[c.where]!.trim()
      const shape = tokenShapeProblem(token)
      if (shape) return { source: `env ${c.where}`, problem: `$${c.where} ${shape}: ${MAKE_TOKEN_HINT}` }
      return describe(`env ${c.where}`, token)
    }
    let st
    try {
      st = await stat(c.where)
    } catch {
      continue
    }
    // Before the mode check: a directory's usual 755 would otherwise read as "readable by others".
    if (st.isDirectory())
      return {
        source: c.where,
        problem: `token file ${c.where} is a directory: point --token-file (or BEARER_TOKEN_FILE) at the token file itself`,
      }
    if (!st.isFile())
      return {
        source: c.where,
        problem: `token file ${c.where} is not a regular file: point --token-file (or BEARER_TOKEN_FILE) at the token file itself`,
      }
    if ((st.mode & 0o077) !== 0) {
      return {
        source: c.where,
        problem: `token file ${c.where} is readable by group/others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${c.where}`,
      }
    }
    const dirProblem = await tokenDirProblem(dirname(c.where))
    if (dirProblem) return { source: c.where, problem: dirProblem }
    try {
      const token = (await readFile(c.where, 'utf8')).trim()
      if (!token) return { source: c.where, problem: `token file ${c.where} is empty: ${MAKE_TOKEN_HINT}`, transient: true }
      const shape = tokenShapeProblem(token)
      if (shape) return { source: c.where, problem: `token file ${c.where} ${shape}: ${MAKE_TOKEN_HINT}` }
      return describe(c.where, token)
    } catch (err) {
      return {
        source: c.where,
        problem: `cannot read token file ${c.where} (${(err as NodeJS.ErrnoException).code}): check its permissions`,
      }
    }
  }
  return {
    source: 'none',
    problem: `no bearer token found (looked at ${tokenCandidates(env)
      .map((c) => (c.kind === 'env' ? '$' + c.where : c.where))
      .join(', ')}): ${MAKE_TOKEN_HINT}`,
  }
}

/**
 * Holds the current token and keeps it fresh: watches the token file's directory (htgettoken
 * replaces the file by rename) and re-reads on demand after a 401.
 */
export class TokenProvider {
  /** What to do to get a token (the read path puts it in the message of a 401). */
  readonly hint = MAKE_TOKEN_HINT
  private info: TokenInfo = { source: 'none' }
  private watcher: FSWatcher | undefined
  private expiryTimer: NodeJS.Timeout | undefined
  private env: NodeJS.ProcessEnv
  private renewing = false
  /** Set by the refresher of a `desfs token login` session: gets a new token when this one expired. */
  renew: (() => Promise<void>) | undefined

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.env = env
  }

  async start(): Promise<TokenInfo> {
    await this.reload()
    // Watch every candidate file's directory: a token may appear later, or earlier in the order.
    const files = tokenCandidates(this.env)
      .filter((c) => c.kind === 'file')
      .map((c) => c.where)
    const dirs = [...new Set(files.map((f) => dirname(f)))]
    const names = new Set(files.map((f) => basename(f)))
    this.watcher = watch(dirs, {
      depth: 0,
      ignoreInitial: true,
      ignored: (p: string) => !dirs.includes(p) && !names.has(basename(p)),
    })
    const onChange = (p: string) => {
      if (files.includes(p)) void this.reload()
    }
    this.watcher.on('add', onChange).on('change', onChange).on('unlink', onChange)
    this.watcher.on('error', (err) => log.warn('token watcher failed', { error: (err as Error).message }))
    return this.info
  }

  /**
   * Re-reads the token from its source; logs when the token changed. An expired token is renewed
   * first when a renewer is set (`renew` false: the renewer itself is asking).
   */
  async reload(renew = true): Promise<TokenInfo> {
    const before = this.info.token
    let found = await discoverToken(this.env)
    if (renew && this.renew && !this.renewing && found.exp !== undefined && found.exp * 1000 <= Date.now()) {
      this.renewing = true
      try {
        await this.renew()
      } finally {
        this.renewing = false
      }
      found = await discoverToken(this.env)
    }
    // A file caught half-written (written in place rather than renamed): keep the token we have; the
    // watcher reports the write that completes it.
    if (found.transient && before && found.source === this.info.source) return this.info
    this.info = found
    if (this.info.token !== before) {
      if (this.info.token)
        log.info('bearer token loaded', {
          source: this.info.source,
          subject: this.info.subject,
          expires: this.info.exp ? new Date(this.info.exp * 1000).toISOString() : 'unknown',
        })
      else log.warn('no usable bearer token', { problem: this.info.problem })
      this.scheduleExpiryWarning()
    }
    return this.info
  }

  private scheduleExpiryWarning(): void {
    clearTimeout(this.expiryTimer)
    const exp = this.info.exp
    if (!exp) return
    const expires = new Date(exp * 1000).toISOString()
    const say = () => {
      if (exp * 1000 <= Date.now())
        log.warn('bearer token has expired', { source: this.info.source, expired: expires, fix: MAKE_TOKEN_HINT })
      else log.warn('bearer token expires soon', { source: this.info.source, expires, fix: MAKE_TOKEN_HINT })
    }
    if (exp * 1000 <= Date.now()) return say()
    const warnAt = exp * 1000 - 5 * 60_000 - Date.now()
    if (warnAt > 2 ** 31 - 1) return
    this.expiryTimer = setTimeout(say, Math.max(0, warnAt))
    this.expiryTimer.unref()
  }

  get current(): TokenInfo {
    return this.info
  }

  /** The Authorization header value, or undefined when there is no usable token. */
  authorization(): string | undefined {
    return this.info.token ? `Bearer ${this.info.token}` : undefined
  }

  async close(): Promise<void> {
    clearTimeout(this.expiryTimer)
    await this.watcher?.close()
  }
}
