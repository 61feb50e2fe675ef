// Tokens without htgettoken: the OAuth 2.0 device authorization flow (RFC 8628) against an OpenID
// Connect issuer, and refreshing the access token from the stored refresh token. Every step that can
// fail ends in one line naming the fix; an issuer that rejects the refresh token means a new login.
import * as client from 'openid-client'
import { EXIT, UserError, oneLine } from '../errors.js'
import { jwtClaims } from './token.js'
import { withLock } from '../lock-file.js'
import { readOidcState, writeOidcState, writeSecretFile, type OidcState } from './token-store.js'
import { unlink } from 'node:fs/promises'
import type { Setting } from '../config.js'

export interface OidcSettings {
  issuer: string | undefined
  clientId: string | undefined
  scope: string
  audience: string | undefined
}

export function oidcSettings(settings: Map<string, Setting>): OidcSettings {
  return {
    issuer: settings.get('oidc_issuer')?.value,
    clientId: settings.get('oidc_client_id')?.value,
    scope: settings.get('oidc_scope')?.value ?? 'openid offline_access',
    audience: settings.get('oidc_audience')?.value,
  }
}

export const LOGIN_HINT = 'run `desfs token login`'

const configs = new Map<string, client.Configuration>()

function isLoopback(u: URL): boolean {
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]'
}

/** Why a network call failed, in a few words (fetch hides the reason in `cause`). */
function reason(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string } }
  return e?.cause?.code ?? e?.cause?.message ?? oneLine(err)
}

/** Discovers the issuer once per process; plain http is allowed only on loopback (tests). */
async function configure(issuer: string, clientId: string): Promise<client.Configuration> {
  const key = `${issuer} ${clientId}`
  const cached = configs.get(key)
  if (cached) return cached
  let url: URL
  try {
    url = new URL(issuer)
  } catch {
    throw new UserError(`oidc_issuer '${issuer}' is not a URL`, EXIT.USAGE)
  }
  const insecure = url.protocol === 'http:'
  if (insecure && !isLoopback(url)) throw new UserError(`oidc_issuer ${issuer} is plain http: use its https URL`, EXIT.USAGE)
  let config: client.Configuration
  try {
    config = await client.discovery(url, clientId, undefined, client.None(), {
      timeout: 15,
      ...(insecure ? { execute: [client.allowInsecureRequests] } : {}),
    })
  } catch (err) {
    throw new UserError(
      `cannot use the OpenID Connect issuer ${issuer} (${reason(err)}): check oidc_issuer and the network`,
      EXIT.UNAVAILABLE,
    )
  }
  configs.set(key, config)
  return config
}

/** A failed token-endpoint call as a UserError; `permanent` when only a new login helps. */
export class TokenGrantError extends UserError {
  readonly permanent: boolean
  constructor(message: string, permanent: boolean) {
    super(message, EXIT.UNAVAILABLE)
    this.permanent = permanent
  }
}

function grantError(err: unknown, issuer: string, what: string): TokenGrantError {
  if (err instanceof client.ResponseBodyError) {
    if (err.error === 'invalid_grant')
      return new TokenGrantError(
        `${issuer} rejected the refresh token (invalid_grant: revoked, expired or already used): ${LOGIN_HINT}`,
        true,
      )
    if (err.error === 'invalid_client' || err.error === 'unauthorized_client')
      return new TokenGrantError(
        `${issuer} rejected client id (${err.error}: ${err.error_description ?? ''}): check oidc_client_id, then ${LOGIN_HINT}`,
        true,
      )
    return new TokenGrantError(
      `${what} failed at ${issuer}: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`,
      false,
    )
  }
  if (err instanceof UserError) return new TokenGrantError(err.message, false)
  return new TokenGrantError(`${what}: cannot reach ${issuer} (${reason(err)}); it will be retried`, false)
}

function expiresAt(tokens: client.TokenEndpointResponse, now: number): number {
  if (typeof tokens.expires_in === 'number') return now + tokens.expires_in * 1000
  const exp = jwtClaims(tokens.access_token)?.exp
  // An opaque token without expires_in: assume a short life so it is refreshed early.
  return typeof exp === 'number' ? exp * 1000 : now + 20 * 60_000
}

export interface LoginOptions extends OidcSettings {
  /** Bearer-token file to write the access token to. */
  tokenFile: string
  statePath: string
  /** Shows the user what to do (verification URL and code). */
  say: (line: string) => void
  signal?: AbortSignal
}

export interface LoginResult {
  subject: string | undefined
  expiresAt: number
  /** False when the issuer gave no refresh token (the login then lasts one access token). */
  refreshable: boolean
}

/** Runs the device flow to the end and stores the tokens. */
export async function login(o: LoginOptions): Promise<LoginResult> {
  const issuer = o.issuer
  const clientId = o.clientId
  if (!issuer || !clientId) throw new UserError('login needs oidc_issuer and oidc_client_id', EXIT.USAGE)
  const config = await configure(issuer, clientId)
  if (!config.serverMetadata().device_authorization_endpoint)
    throw new UserError(
      `${issuer} does not offer the device authorization flow (no device_authorization_endpoint): use htgettoken`,
      EXIT.UNAVAILABLE,
    )
  const resource: Record<string, string> = o.audience ? { resource: o.audience } : {}
  let da: client.DeviceAuthorizationResponse
  try {
    da = await client.initiateDeviceAuthorization(config, { scope: o.scope, ...resource })
  } catch (err) {
    throw grantError(err, issuer, 'starting the device login')
  }
  o.say(`To sign in, open ${da.verification_uri} and enter the code ${da.user_code}`)
  if (da.verification_uri_complete) o.say(`(or open ${da.verification_uri_complete})`)
  o.say(`Waiting for you to approve (up to ${Math.round(da.expires_in / 60)} minutes)...`)
  let tokens: client.TokenEndpointResponse
  try {
    tokens = await client.pollDeviceAuthorizationGrant(config, da, undefined, o.signal ? { signal: o.signal } : {})
  } catch (err) {
    if (err instanceof client.ResponseBodyError && (err.error === 'access_denied' || err.error === 'expired_token')) {
      throw new UserError(`the login was not approved (${err.error}): run \`desfs token login\` again`, EXIT.UNAVAILABLE)
    }
    throw grantError(err, issuer, 'the device login')
  }
  const now = Date.now()
  const exp = expiresAt(tokens, now)
  await withLock(o.statePath, async () => {
    if (tokens.refresh_token) {
      const state: OidcState = {
        issuer,
        clientId,
        scope: o.scope,
        audience: o.audience,
        refreshToken: tokens.refresh_token,
        accessTokenFile: o.tokenFile,
        accessIssuedAt: now,
        accessExpiresAt: exp,
        updatedAt: new Date(now).toISOString(),
      }
      await writeOidcState(o.statePath, state)
    } else {
      await unlink(o.statePath).catch(() => undefined)
    }
    await writeSecretFile(o.tokenFile, tokens.access_token + '\n')
  })
  const claims = jwtClaims(tokens.access_token)
  return { subject: typeof claims?.sub === 'string' ? claims.sub : undefined, expiresAt: exp, refreshable: !!tokens.refresh_token }
}

export interface RefreshResult {
  state: OidcState
  /** False when another process had just refreshed and the token was still fresh. */
  refreshed: boolean
}

/**
 * Refreshes the access token, holding the lock: re-reads the state first (another process may have
 * refreshed, rotating the refresh token), saves the new refresh token before anything else, then
 * replaces the bearer-token file.
 * @param freshForMs skip the refresh when the current access token has at least this long left.
 */
export async function refreshAccessToken(statePath: string, freshForMs = 0): Promise<RefreshResult> {
  return withLock(statePath, async () => {
    const state = await readOidcState(statePath)
    if (!state) throw new TokenGrantError(`not logged in (no ${statePath}): ${LOGIN_HINT}`, true)
    if (freshForMs > 0 && state.accessExpiresAt - Date.now() > freshForMs) return { state, refreshed: false }
    const config = await configure(state.issuer, state.clientId).catch((err) => {
      throw grantError(err, state.issuer, 'token refresh')
    })
    let tokens: client.TokenEndpointResponse
    try {
      tokens = await client.refreshTokenGrant(config, state.refreshToken, state.audience ? { resource: state.audience } : undefined)
    } catch (err) {
      throw grantError(err, state.issuer, 'token refresh')
    }
    const now = Date.now()
    const next: OidcState = {
      ...state,
      refreshToken: tokens.refresh_token ?? state.refreshToken,
      accessIssuedAt: now,
      accessExpiresAt: expiresAt(tokens, now),
      updatedAt: new Date(now).toISOString(),
    }
    await writeOidcState(statePath, next)
    await writeSecretFile(state.accessTokenFile, tokens.access_token + '\n')
    return { state: next, refreshed: true }
  })
}

/** Removes what login stored; revokes the refresh token first where the issuer supports it. */
export async function logout(statePath: string): Promise<string[]> {
  return withLock(statePath, async () => {
    const notes: string[] = []
    const state = await readOidcState(statePath)
    if (!state) return [`not logged in (no ${statePath})`]
    try {
      const config = await configure(state.issuer, state.clientId)
      if (config.serverMetadata().revocation_endpoint) {
        await client.tokenRevocation(config, state.refreshToken, { token_type_hint: 'refresh_token' })
        notes.push(`revoked the refresh token at ${state.issuer}`)
      } else notes.push(`${state.issuer} has no revocation endpoint; the refresh token was only deleted`)
    } catch (err) {
      notes.push(`could not revoke the refresh token at ${state.issuer} (${reason(err)}); deleted it anyway`)
    }
    for (const f of [state.accessTokenFile, statePath]) {
      await unlink(f).then(
        () => notes.push(`removed ${f}`),
        () => undefined,
      )
    }
    return notes
  })
}
