// `desfs doctor`: everything a mount needs, checked one by one, each with the fix. Nothing is
// created or changed; every network check has a deadline.
import { access, constants, stat, statfs } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { archiveUrlSetting, durationSetting, type Setting } from '../daemon/config.js'
import { checkMetadataDb } from './db-info.js'
import { oneLine } from '../daemon/errors.js'
import { onPath } from '../daemon/paths.js'
import { privateDirProblem } from '../daemon/state-dir.js'
import { discoverToken, MAKE_TOKEN_HINT } from '../daemon/token/token.js'
import { oidcStatePath, readOidcState } from '../daemon/token/token-store.js'
import { formatDuration, formatSize } from '../daemon/units.js'
import { HttpClient, classifyError } from '../cache/sources/http-client.js'
import { PROPFIND_BODY } from '../cache/sources/propfind.js'
import { checkSiteCache } from './doctor-site.js'

export type CheckStatus = 'OK' | 'WARN' | 'FAIL'

export interface CheckResult {
  name: string
  status: CheckStatus
  detail: string
  fix?: string
}

const ok = (name: string, detail: string): CheckResult => ({ name, status: 'OK', detail })
const warn = (name: string, detail: string, fix?: string): CheckResult => ({ name, status: 'WARN', detail, ...(fix ? { fix } : {}) })
const fail = (name: string, detail: string, fix?: string): CheckResult => ({ name, status: 'FAIL', detail, ...(fix ? { fix } : {}) })

async function checkFuseDevice(): Promise<CheckResult> {
  try {
    const st = await stat('/dev/fuse')
    if (!st.isCharacterDevice()) return fail('fuse device', '/dev/fuse is not a character device', 'sudo modprobe fuse')
    await access('/dev/fuse', constants.R_OK | constants.W_OK)
    return ok('fuse device', '/dev/fuse')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT')
      return fail('fuse device', 'no /dev/fuse', 'sudo modprobe fuse (in a container: run it with --device /dev/fuse --cap-add SYS_ADMIN)')
    return fail('fuse device', `/dev/fuse is not usable (${code})`, 'check its permissions (crw-rw-rw- root root is usual)')
  }
}

function checkFusermount(): CheckResult {
  if (process.getuid?.() === 0) return ok('fusermount', 'not needed (root mounts with mount(2))')
  return onPath('fusermount3')
    ? ok('fusermount', 'fusermount3 on PATH')
    : fail('fusermount', 'fusermount3 not on PATH', 'apt-get install fuse3')
}

async function checkLibfuse(): Promise<CheckResult> {
  try {
    const { native } = await import('../fs/native.js')
    native()
    const pt =
      process.getuid?.() === 0
        ? 'passthrough of complete cache files where the kernel offers it (Linux 6.9+)'
        : 'cached reads by pread in the plane (passthrough needs root)'
    return ok('libfuse', `desfs's native FUSE plane loads; ${pt}`)
  } catch (err) {
    return fail('libfuse', oneLine(err), 'run npm ci in the desfs checkout (it builds the addon with g++ and make)')
  }
}

async function checkToken(settings: Map<string, Setting>): Promise<CheckResult[]> {
  const tokenFile = settings.get('token_file')!.value
  const info = await discoverToken(tokenFile ? { ...process.env, DESFS_TOKEN_FILE: resolve(tokenFile) } : process.env)
  const out: CheckResult[] = []
  if (info.problem) out.push(fail('token', info.problem))
  else if (info.exp === undefined) out.push(warn('token', `${info.source}: not a JWT with an expiry; cannot tell when it runs out`))
  else {
    const left = info.exp * 1000 - Date.now()
    const who = `${info.source}${info.subject ? ` (subject ${info.subject})` : ''}`
    if (left <= 0) out.push(fail('token', `${who} expired ${formatDuration(-left)} ago`, MAKE_TOKEN_HINT))
    else if (left < 10 * 60_000) out.push(warn('token', `${who} expires in ${formatDuration(left)}`, MAKE_TOKEN_HINT))
    else out.push(ok('token', `${who}, expires in ${formatDuration(left)}`))
  }
  try {
    const s = await readOidcState(oidcStatePath())
    if (s) out.push(ok('token login', `refresh token for ${s.issuer} keeps ${s.accessTokenFile} fresh while a daemon runs`))
  } catch (err) {
    out.push(fail('token login', oneLine(err)))
  }
  return out
}

function checkDb(settings: Map<string, Setting>): CheckResult {
  const path = resolve(settings.get('db')!.value!)
  try {
    const info = checkMetadataDb(path)
    return ok(
      'metadata DB',
      `${path}: ${formatSize(info.bytes)}, ${info.tables.length} tables, files from ${info.fileTable}, modified ${info.modified.slice(0, 10)}`,
    )
  } catch (err) {
    return fail(
      'metadata DB',
      oneLine(err),
      `desfs db download${/not found/.test(oneLine(err)) ? '' : ' --force'} (or point DES_ARCHIVE_ACCESS_DB / --db at the DB)`,
    )
  }
}

async function checkArchive(settings: Map<string, Setting>): Promise<CheckResult> {
  let archive: string
  try {
    archive = archiveUrlSetting(settings)
  } catch (err) {
    return fail('archive', oneLine(err), 'set DES_ARCHIVE_ACCESS_ARCHIVE or --archive')
  }
  const origin = new URL(archive).origin
  const tokenFile = settings.get('token_file')!.value
  const token = (await discoverToken(tokenFile ? { ...process.env, DESFS_TOKEN_FILE: resolve(tokenFile) } : process.env)).token
  const connectMs = durationSetting(settings, 'connect_timeout')
  const deadline = connectMs + 10_000
  const http = new HttpClient({
    trustedOrigin: origin,
    authorization: () => (token ? `Bearer ${token}` : undefined),
    reloadToken: async () => undefined,
    connectTimeoutMs: connectMs,
    headersTimeoutMs: deadline,
    stallTimeoutMs: deadline,
    caFile: settings.get('ca_file')!.value,
    connections: 1,
  })
  try {
    const res = await http.request(
      'PROPFIND',
      `${archive}/`,
      { depth: '0', 'content-type': 'application/xml; charset=utf-8' },
      AbortSignal.timeout(deadline),
      PROPFIND_BODY,
    )
    res.body.discard()
    if (res.status === 207 || res.status === 200) return ok('archive', `${archive} answers (HTTP ${res.status})`)
    if (res.status === 401) return fail('archive', `${archive} rejects the token (HTTP 401)`, MAKE_TOKEN_HINT)
    if (res.status === 403)
      return fail('archive', `${archive} does not permit this token (HTTP 403)`, "check the token's scopes and your DES membership")
    return fail('archive', `${archive} answered HTTP ${res.status}`, 'check DES_ARCHIVE_ACCESS_ARCHIVE / --archive')
  } catch (err) {
    return fail('archive', classifyError(err, `PROPFIND ${archive}/`).message, 'check the network, --archive and --ca-file')
  } finally {
    await http.close()
  }
}

/** A private dir: fine if missing (desfs creates it) when its parent is writable. */
async function checkPrivateDir(name: string, dir: string, needSpace: boolean): Promise<CheckResult> {
  let existing = dir
  let exists = true
  try {
    await stat(dir)
  } catch {
    exists = false
    while (existing !== dirname(existing)) {
      existing = dirname(existing)
      if (
        await stat(existing).then(
          () => true,
          () => false,
        )
      )
        break
    }
    try {
      await access(existing, constants.W_OK)
    } catch {
      return fail(name, `${dir} does not exist and ${existing} is not writable`, `choose another location (--${name.replace(' ', '-')})`)
    }
  }
  if (exists) {
    const problem = privateDirProblem(dir, name)
    if (problem) return fail(name, problem)
    try {
      await access(dir, constants.R_OK | constants.W_OK | constants.X_OK)
    } catch {
      return fail(name, `${dir} is not writable`, `chmod 700 ${dir}`)
    }
  }
  const where = exists ? dir : `${dir} (created on first mount)`
  if (!needSpace) return ok(name, where)
  const s = await statfs(existing)
  const free = s.bavail * s.bsize
  if (free < 1024 ** 3) return warn(name, `${where}: only ${formatSize(free)} free`, 'free some space or set --cache-dir / --cache-size')
  return ok(name, `${where}, ${formatSize(free)} free`)
}

/** What doctor learns from a running daemon's /status. */
export interface DaemonView {
  pid: number
  /** The daemon's working directory: relative paths in its settings are relative to it. */
  cwd?: string
  settings: Record<string, { value?: string; source: string }>
}

/** The settings doctor checks, and which of them are paths. */
export const DOCTOR_SETTINGS = [
  'db',
  'archive',
  'cache_dir',
  'state_dir',
  'token_file',
  'ca_file',
  'connect_timeout',
  'site_cache',
  'site_token_file',
]
const PATH_SETTINGS = new Set(['db', 'cache_dir', 'token_file', 'ca_file', 'site_token_file'])

/**
 * The settings to check when a daemon runs: what the daemon uses, except where a flag given to doctor
 * itself says otherwise (a flag is an explicit request to check something else).
 */
export function withDaemonSettings(local: Map<string, Setting>, daemon: DaemonView): Map<string, Setting> {
  const out = new Map(local)
  for (const key of DOCTOR_SETTINGS) {
    const mine = local.get(key)
    const theirs = daemon.settings[key]
    if (key === 'state_dir' || !theirs || mine?.source.startsWith('flag ')) continue
    const value = theirs.value !== undefined && PATH_SETTINGS.has(key) && daemon.cwd ? resolve(daemon.cwd, theirs.value) : theirs.value
    out.set(key, { value, source: `daemon pid ${daemon.pid}, ${theirs.source}` })
  }
  return out
}

/** The line saying whose settings were checked. */
export function daemonCheck(daemon: DaemonView): CheckResult {
  return ok('settings', `those of the running daemon (pid ${daemon.pid}); flags given to doctor override them`)
}

export async function runDoctor(settings: Map<string, Setting>): Promise<CheckResult[]> {
  const [dev, lib, tokens, archive, cache, state, site] = await Promise.all([
    checkFuseDevice(),
    checkLibfuse(),
    checkToken(settings),
    checkArchive(settings),
    checkPrivateDir('cache dir', resolve(settings.get('cache_dir')!.value!), true),
    checkPrivateDir('state dir', resolve(settings.get('state_dir')!.value!), false),
    checkSiteCache(settings),
  ])
  return [dev, checkFusermount(), lib, ...tokens, checkDb(settings), archive, ...(site ? [site] : []), cache, state]
}
