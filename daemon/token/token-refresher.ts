// Keeps a `desfs token login` session fresh inside the daemon: refreshes the access token at 75% of
// its life (so reads never meet an expired token), rewrites the bearer-token file atomically and
// reloads it. Network trouble is retried; a refresh token the issuer rejects stops the refresher with
// one log line telling the user to log in again. Also answers `desfs token status` over the socket.
import type { ControlServer } from '../control/control.js'
import { log } from '../log.js'
import { refreshAccessToken, TokenGrantError } from './oidc.js'
import { summarize, type TokenProvider } from './token.js'
import { oidcStatePath, readOidcState, type OidcState } from './token-store.js'
import { oneLine } from '../errors.js'
import { backoffDelay } from '../../cache/retry.js'

export interface RefresherStatus {
  /** True while a login is being kept fresh. */
  active: boolean
  statePath: string
  issuer?: string | undefined
  accessTokenFile?: string | undefined
  lastRefresh?: string | undefined
  nextRefresh?: string | undefined
  problem?: string | undefined
}

/** How long until the token is due for refresh, at 75% of its life (<= 0: due now). */
function refreshDelay(s: Pick<OidcState, 'accessIssuedAt' | 'accessExpiresAt'>, now = Date.now()): number {
  return s.accessIssuedAt + 0.75 * (s.accessExpiresAt - s.accessIssuedAt) - now
}

export class TokenRefresher {
  private timer: NodeJS.Timeout | undefined
  private closed = false
  private running: Promise<void> | undefined
  /** Refreshes failed in a row (the backoff grows with them). */
  private failures = 0
  readonly status: RefresherStatus

  constructor(
    private token: TokenProvider,
    readonly statePath = oidcStatePath(),
  ) {
    this.status = { active: false, statePath }
  }

  /** (Re)reads the login state and schedules the next refresh; no state means nothing to do. */
  async restart(): Promise<void> {
    clearTimeout(this.timer)
    this.status.problem = undefined
    this.failures = 0
    let state: OidcState | undefined
    try {
      state = await readOidcState(this.statePath)
    } catch (err) {
      this.stopWith(oneLine(err))
      return
    }
    this.status.active = !!state
    this.status.nextRefresh = undefined
    if (!state) return
    this.status.issuer = state.issuer
    this.status.accessTokenFile = state.accessTokenFile
    const used = this.token.current.source
    if (used !== state.accessTokenFile)
      log.warn('the token desfs token login keeps fresh is not the one in use', {
        refreshed: state.accessTokenFile,
        inUse: used,
        fix: 'remove the token found earlier in the discovery order, or mount with --token-file ' + state.accessTokenFile,
      })
    // A token past its refresh point (the daemon was down, the machine asleep) is renewed before
    // anything is read with it.
    if (refreshDelay(state) <= 0) await this.refreshNow()
    else this.schedule(refreshDelay(state))
  }

  /** Refreshes now, or joins the refresh under way. Used at start and when the archive says 401. */
  refreshNow(): Promise<void> {
    if (!this.status.active || this.closed) return Promise.resolve()
    if (!this.running) {
      clearTimeout(this.timer)
      this.running = this.refresh().finally(() => (this.running = undefined))
    }
    return this.running
  }

  private schedule(delayMs: number): void {
    if (this.closed) return
    clearTimeout(this.timer)
    delayMs = Math.max(1000, delayMs)
    this.status.nextRefresh = new Date(Date.now() + delayMs).toISOString()
    this.timer = setTimeout(() => void this.refreshNow(), Math.min(delayMs, 2 ** 31 - 1))
    this.timer.unref()
  }

  private stopWith(problem: string): void {
    this.status.active = false
    this.status.nextRefresh = undefined
    this.status.problem = problem
    log.error('access token refresh stopped', { problem })
  }

  private async refresh(): Promise<void> {
    try {
      // Another process (a second daemon, `desfs token refresh`) may have just refreshed: then its
      // token, with more than half its life left, is used as is.
      const before = await readOidcState(this.statePath)
      const half = before ? (before.accessExpiresAt - before.accessIssuedAt) / 2 : 0
      const { state, refreshed } = await refreshAccessToken(this.statePath, half)
      if (this.closed) return
      this.status.lastRefresh = new Date(state.accessIssuedAt).toISOString()
      if (refreshed)
        log.info('access token refreshed', { file: state.accessTokenFile, expires: new Date(state.accessExpiresAt).toISOString() })
      await this.token.reload(false)
      this.failures = 0
      this.schedule(refreshDelay(state))
    } catch (err) {
      if (this.closed) return
      if (err instanceof TokenGrantError && err.permanent) return this.stopWith(err.message)
      // Retry with the read path's backoff, from 1 s, but well before the current token runs out
      // (a quarter of the time left) and at least every 30 s.
      const state = await readOidcState(this.statePath).catch(() => undefined)
      const left = state ? state.accessExpiresAt - Date.now() : 0
      const retry = Math.max(1000, backoffDelay(++this.failures, { baseMs: 1000, maxMs: Math.max(1000, Math.min(30_000, left / 4)) }))
      this.status.problem = oneLine(err)
      log.warn('access token refresh failed; retrying', { problem: oneLine(err), retryIn: `${Math.round(retry / 1000)}s` })
      this.schedule(retry)
    }
  }

  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    await this.running?.catch(() => undefined)
  }
}

/** Starts the refresher and the /token routes; returns it for the daemon to close. */
export async function startTokenRefresher(control: ControlServer, token: TokenProvider): Promise<TokenRefresher> {
  const refresher = new TokenRefresher(token)
  // After a 401 with an expired token, a refresh is the re-read that can help.
  token.renew = () => refresher.refreshNow()
  await refresher.restart()
  const answer = () => ({ token: summarize(token.current), refresher: refresher.status, pid: process.pid })
  control.route('GET', '/token', answer)
  // `desfs token login/logout/refresh` call this so a running daemon follows at once.
  control.route('POST', '/token/reload', async () => {
    await token.reload()
    await refresher.restart()
    return answer()
  })
  return refresher
}
