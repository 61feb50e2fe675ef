// `desfs token login/refresh/logout` against a real OpenID Connect provider on 127.0.0.1
// (oidc-provider): the device flow completed by "the user" approving the code, the daemon refreshing
// short-lived access tokens while a large file is read through the mount, a revoked refresh token
// ending in one clear line, and logout revoking and removing what login stored.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { jwtClaims } from '../daemon/token/token.js'
import { CLIENT_ID, RESOURCE, startProvider, type TestProvider } from './oidc/provider.js'
import { readSlowly } from './slow-read.js'
import {
  DESFS,
  desfs,
  makeArchive,
  sourceBytes,
  needTool,
  PYTHON,
  startDaemon,
  startServer,
  tmp,
  until,
  type RunResult,
} from './helpers.js'

t.jobs = 1

/** Runs `desfs token login` in a child process and approves the code it prints, as the user would. */
function login(provider: TestProvider, env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DESFS, 'token', 'login'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let approved = false
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
      const m = /enter the code (\S+)/.exec(stdout)
      if (m && !approved) {
        approved = true
        void provider.approve(m[1]!)
      }
    })
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

const state = (daa: string) =>
  JSON.parse(readFileSync(join(daa, 'desfs-oidc.json'), 'utf8')) as { refreshToken: string; accessTokenFile: string; issuer: string }
const bearer = (daa: string) => readFileSync(join(daa, 'bearer_token'), 'utf8').trim()

t.test('desfs token login, refresh and logout', async (t) => {
  const provider = await startProvider({ accessTokenTTL: 4 })
  t.teardown(() => provider.close())
  const dir = tmp(t)
  const daa = join(dir, 'daa')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    DESFS_CONFIG: join(dir, 'none'),
    DES_ARCHIVE_ACCESS_DIR: daa,
    DESFS_TOKEN_FILE: join(daa, 'bearer_token'),
    DESFS_STATE_DIR: join(dir, 'state'),
    DESFS_OIDC_ISSUER: provider.issuer,
    DESFS_OIDC_CLIENT_ID: CLIENT_ID,
    DESFS_OIDC_AUDIENCE: RESOURCE,
  }

  await t.test('without an issuer or client id, login says which settings to set', async (t) => {
    const r = await desfs(['token', 'login'], { env: { ...env, DESFS_OIDC_ISSUER: '', DESFS_OIDC_CLIENT_ID: '' } })
    t.equal(r.code, 2)
    t.match(r.stderr, /needs oidc_issuer \(--issuer, DESFS_OIDC_ISSUER\) and oidc_client_id \(--client-id, DESFS_OIDC_CLIENT_ID\)/)
  })

  await t.test('the device flow: URL and code shown, approved, tokens stored privately', async (t) => {
    const r = await login(provider, env)
    t.equal(r.code, 0, `login exits 0 (${r.stderr})`)
    t.match(r.stdout, new RegExp(`To sign in, open ${provider.issuer}/device and enter the code [A-Z]{4}-[A-Z]{4}`))
    t.match(r.stdout, /logged in as alice; access token in .*bearer_token/)
    t.notMatch(r.stdout + r.stderr, /eyJ/, 'no token printed')
    t.equal(statSync(daa).mode & 0o777, 0o700, 'token directory 0700')
    t.equal(statSync(join(daa, 'bearer_token')).mode & 0o777, 0o600, 'access token file 0600')
    t.equal(statSync(join(daa, 'desfs-oidc.json')).mode & 0o777, 0o600, 'refresh token file 0600')
    const claims = jwtClaims(bearer(daa))!
    t.equal(claims.sub, 'alice')
    t.equal(claims.iss, provider.issuer)
    t.ok(state(daa).refreshToken, 'a refresh token is kept')
    const s = await desfs(['token', 'status'], { env })
    t.match(s.stdout, /subject\s+alice/)
    t.match(s.stdout, new RegExp(`renewal\\s+desfs token login at ${provider.issuer}`))
  })

  await t.test('two refreshes at once do not burn the rotating refresh token', async (t) => {
    const rt = state(daa).refreshToken
    const [a, b] = await Promise.all([desfs(['token', 'refresh'], { env }), desfs(['token', 'refresh'], { env })])
    t.equal(a.code, 0, a.stderr)
    t.equal(b.code, 0, b.stderr)
    t.not(state(daa).refreshToken, rt, 'the refresh token was rotated and the new one saved')
    const c = await desfs(['token', 'refresh'], { env })
    t.equal(c.code, 0, `the grant is still alive afterwards (${c.stderr})`)
  })

  await t.test('the daemon refreshes before expiry while a large file is read', async (t) => {
    if (!needTool(t, PYTHON, 'python3')) return
    const a = makeArchive(t, { hostile: false, largeFileBytes: 16 << 20 })
    const { server } = await startServer(t, a.root, { tokens: [], acceptIssuer: provider.issuer })
    // The same state dir as the CLI's, so login/logout can tell this daemon.
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, env, stateDir: join(dir, 'state') })
    server.clearLog()
    // 16 blocks, 0.7 s apart: the read lasts over 11 s, several 4 s tokens.
    const r = await readSlowly(join(d.mnt, a.manifest.largeFile!), 0.7)
    t.equal(r.code, 0, `the read through the mount succeeds (${r.stderr})`)
    if (r.code !== 0) t.comment(d.log())
    t.equal(
      r.stdout.slice(0, 32),
      createHash('md5').update(sourceBytes(a, a.manifest.largeFile!)).digest('hex'),
      'the bytes are the source bytes',
    )
    const used = new Set(server.log.filter((x) => x.method === 'GET' && x.port === 'door' && x.status !== 401).map((x) => x.tokenId))
    t.ok(used.size >= 3, `the read used ${used.size} successive access tokens (4 s each)`)
    // exp has whole-second granularity, so with 4-second tokens the refresh at 75% of the life can
    // land within a fraction of a second of expiry under load; a request in that window gets a 401
    // and is retried with the new token (the read above succeeded). Real tokens live for hours.
    const refreshes = (d.log().match(/access token refreshed/g) ?? []).length
    t.ok(server.log.filter((x) => x.status === 401).length <= refreshes, 'at most a retried 401 around a refresh, never a failed read')
    t.ok((d.log().match(/access token refreshed/g) ?? []).length >= 2, 'the daemon logged its refreshes')
    t.notMatch(d.log(), /eyJ/, 'no token in the log')

    await t.test('a revoked refresh token stops the refresher with the fix in one line', async (t) => {
      await provider.revokeRefreshToken(state(daa).refreshToken)
      const stopped = await until(() => /access token refresh stopped/.test(d.log()), 15_000)
      t.ok(stopped, 'the refresher gave up')
      t.match(
        d.log(),
        /error access token refresh stopped problem=".*rejected the refresh token \(invalid_grant: revoked, expired or already used\): run `desfs token login`"/,
      )
      const s = await desfs(['token', 'status', '--state-dir', d.stateDir], { env })
      t.match(s.stdout, /PROBLEM: .*run `desfs token login`/)
      t.match(s.stdout, /via\s+daemon pid/)
      const r = await desfs(['token', 'refresh'], { env })
      t.equal(r.code, 4)
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
      t.match(r.stderr, /rejected the refresh token \(invalid_grant: revoked, expired or already used\): run `desfs token login`/)
    })

    await t.test('logging in again while the daemon runs restarts its refresher at once', async (t) => {
      const r = await login(provider, env)
      t.equal(r.code, 0, r.stderr)
      const s = await desfs(['token', 'status'], { env })
      t.match(s.stdout, /via\s+daemon pid/)
      t.match(s.stdout, /renewal\s+desfs token login at .*, next refresh \S+Z\n/, 'active again, no problem reported')
      const before = (d.log().match(/access token refreshed/g) ?? []).length
      t.ok(await until(() => (d.log().match(/access token refreshed/g) ?? []).length > before, 15_000), 'and it refreshes again')
    })
  })

  await t.test('logout revokes the refresh token and removes what login stored', async (t) => {
    const r = await login(provider, env)
    t.equal(r.code, 0, r.stderr)
    const rt = state(daa).refreshToken
    t.ok(await provider.hasRefreshToken(rt), 'the provider knows the refresh token')
    const out = await desfs(['token', 'logout'], { env })
    t.equal(out.code, 0, out.stderr)
    t.match(out.stdout, /revoked the refresh token at/)
    t.notOk(existsSync(join(daa, 'desfs-oidc.json')), 'refresh token file removed')
    t.notOk(existsSync(join(daa, 'bearer_token')), 'access token file removed')
    t.notOk(await provider.hasRefreshToken(rt), 'the provider revoked it')
    const again = await desfs(['token', 'logout'], { env })
    t.match(again.stdout, /not logged in/)
  })
})
