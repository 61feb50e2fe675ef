// desfs token status|login|logout|refresh: which token desfs uses (never the token itself), and
// tokens without htgettoken through the OAuth device flow.
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings, type Setting } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { login, logout, oidcSettings, refreshAccessToken } from '../daemon/token/oidc.js'
import { discoverToken, summarize, type TokenSummary } from '../daemon/token/token.js'
import { loginTokenFile, oidcStatePath, readOidcState } from '../daemon/token/token-store.js'
import type { RefresherStatus } from '../daemon/token/token-refresher.js'
import { configFilePath } from '../daemon/config.js'
import { formatDuration } from '../daemon/units.js'

const TOKEN_SETTINGS = ['state_dir', 'token_file', 'oidc_issuer', 'oidc_client_id', 'oidc_scope', 'oidc_audience']

function tokenEnv(settings: Map<string, Setting>): NodeJS.ProcessEnv {
  const f = settings.get('token_file')!.value
  return f ? { ...process.env, DESFS_TOKEN_FILE: resolve(f) } : process.env
}

/** Tells a running daemon to re-read its token and login state; silent when none runs. */
async function pokeDaemon(settings: Map<string, Setting>): Promise<void> {
  await call(socketPath(resolve(settings.get('state_dir')!.value!)), 'POST', '/token/reload', undefined, { timeoutMs: 5000 }).catch(
    () => undefined,
  )
}

interface TokenReport {
  token: TokenSummary
  refresher: RefresherStatus
  /** 'daemon pid N' or 'read directly (no daemon running)'. */
  via: string
}

async function report(settings: Map<string, Setting>): Promise<TokenReport> {
  try {
    const r = await call<{ token: TokenSummary; refresher: RefresherStatus; pid: number }>(
      socketPath(resolve(settings.get('state_dir')!.value!)),
      'GET',
      '/token',
      undefined,
      { timeoutMs: 5000 },
    )
    return { token: r.token, refresher: r.refresher, via: `daemon pid ${r.pid}` }
  } catch (err) {
    if (!(err instanceof UserError) || err.exitCode !== EXIT.UNAVAILABLE) throw err
  }
  const token = summarize(await discoverToken(tokenEnv(settings)))
  const statePath = oidcStatePath()
  const refresher: RefresherStatus = { active: false, statePath }
  try {
    const s = await readOidcState(statePath)
    if (s)
      Object.assign(refresher, {
        issuer: s.issuer,
        accessTokenFile: s.accessTokenFile,
        lastRefresh: new Date(s.accessIssuedAt).toISOString(),
      })
  } catch (err) {
    refresher.problem = (err as Error).message
  }
  return { token, refresher, via: 'read directly (no daemon running)' }
}

function left(seconds: number): string {
  return seconds >= 0 ? `in ${formatDuration(seconds * 1000)}` : `EXPIRED ${formatDuration(-seconds * 1000)} ago`
}

function printReport(r: TokenReport): void {
  const t = r.token
  const lines: string[] = []
  if (t.problem) lines.push(`token     NONE USABLE: ${t.problem}`)
  else {
    lines.push(`source    ${t.source}`)
    if (t.subject) lines.push(`subject   ${t.subject}`)
    if (t.issuer) lines.push(`issuer    ${t.issuer}`)
    if (t.scopes) lines.push(`scopes    ${t.scopes}`)
    lines.push(`expires   ${t.expires ? `${t.expires} (${left(t.expiresIn!)})` : 'unknown (not a JWT with exp)'}`)
  }
  const f = r.refresher
  if (f.issuer) {
    const next = f.nextRefresh ? `, next refresh ${f.nextRefresh}` : ''
    lines.push(
      `renewal   desfs token login at ${f.issuer}, keeps ${f.accessTokenFile} fresh${next}${f.problem ? ` (PROBLEM: ${f.problem})` : ''}`,
    )
  } else if (f.problem) lines.push(`renewal   PROBLEM: ${f.problem}`)
  else lines.push('renewal   none by desfs (htgettoken or by hand); `desfs token login` sets it up')
  lines.push(`via       ${r.via}`)
  process.stdout.write(lines.join('\n') + '\n')
}

function requireLoginSettings(settings: Map<string, Setting>, currentIssuer: string | undefined): void {
  const o = oidcSettings(settings)
  const missing = [
    !o.issuer && 'oidc_issuer (--issuer, DESFS_OIDC_ISSUER)',
    !o.clientId && 'oidc_client_id (--client-id, DESFS_OIDC_CLIENT_ID)',
  ].filter(Boolean)
  if (!missing.length) return
  const hint = currentIssuer ? ` (your current token was issued by ${currentIssuer})` : ''
  throw new UserError(
    `desfs token login needs ${missing.join(' and ')}: set them in ${configFilePath()} or the environment, with a client id registered for the device flow at your issuer${hint}`,
    EXIT.USAGE,
  )
}

export const tokenCommand: Command = {
  name: 'token',
  summary: 'Show the bearer token in use (status), or get and renew one without htgettoken (login, logout, refresh).',
  usage: 'desfs token [status|login|logout|refresh] [options]',
  options: { json: { type: 'boolean', help: 'status: print JSON' }, ...settingOptions(TOKEN_SETTINGS) },
  details: [
    'status   where the token comes from, its subject, scopes, issuer and expiry (never the token);',
    '         through the running daemon if there is one. Exits 4 when there is no usable token.',
    'login    OAuth device flow: prints a URL and a code to approve in a browser, then writes the access',
    '         token to the bearer-token file and keeps the refresh token (0600) so the daemon renews it.',
    'logout   revokes (where the issuer allows) and removes what login stored.',
    'refresh  renews the access token now.',
  ].join('\n'),
  async run({ flags, positionals }) {
    const sub = positionals[0] ?? 'status'
    if (positionals.length > 1) throw new UserError('desfs token takes one subcommand', EXIT.USAGE)
    const settings = resolveSettings(settingFlags(flags))
    switch (sub) {
      case 'status': {
        const r = await report(settings)
        if (flags.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
        else printReport(r)
        return r.token.problem || (r.token.expiresIn !== undefined && r.token.expiresIn <= 0) ? EXIT.UNAVAILABLE : EXIT.OK
      }
      case 'login': {
        requireLoginSettings(settings, (await discoverToken(tokenEnv(settings))).issuer)
        const tokenFile = resolve(loginTokenFile(settings.get('token_file')!.value))
        const r = await login({
          ...oidcSettings(settings),
          tokenFile,
          statePath: oidcStatePath(),
          say: (l) => process.stdout.write(l + '\n'),
        })
        process.stdout.write(
          `desfs: logged in${r.subject ? ` as ${r.subject}` : ''}; access token in ${tokenFile} (expires ${new Date(r.expiresAt).toISOString()})\n`,
        )
        if (r.refreshable)
          process.stdout.write(
            `desfs: refresh token kept in ${oidcStatePath()}; a running desfs daemon renews the access token before it expires\n`,
          )
        else
          process.stdout.write(
            'desfs: the issuer gave no refresh token (add offline_access to oidc_scope); run desfs token login again when it expires\n',
          )
        const used = await discoverToken(tokenEnv(settings))
        if (used.source !== tokenFile)
          process.stdout.write(
            `desfs: note: desfs will use ${used.source}, found earlier in the discovery order; remove it or use --token-file ${tokenFile}\n`,
          )
        await pokeDaemon(settings)
        return EXIT.OK
      }
      case 'logout': {
        for (const note of await logout(oidcStatePath())) process.stdout.write(`desfs: ${note}\n`)
        await pokeDaemon(settings)
        return EXIT.OK
      }
      case 'refresh': {
        const { state } = await refreshAccessToken(oidcStatePath())
        process.stdout.write(
          `desfs: refreshed; access token in ${state.accessTokenFile} expires ${new Date(state.accessExpiresAt).toISOString()}\n`,
        )
        await pokeDaemon(settings)
        return EXIT.OK
      }
      default:
        throw new UserError(`desfs token: unknown subcommand '${sub}' (status, login, logout, refresh)`, EXIT.USAGE)
    }
  },
}
