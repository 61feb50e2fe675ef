// Effective configuration: flags > environment > config file > defaults. Every value remembers where
// it came from, so `desfs status` can say why a setting is what it is. des-archive-access's variables
// (DESDATA, DES_ARCHIVE_ACCESS_DB, DES_ARCHIVE_ACCESS_ARCHIVE, DES_ARCHIVE_ACCESS_DIR) keep working.
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { UserError, EXIT } from './errors.js'
import { defaultMetadataDb, xdgCacheHome, xdgConfigHome, xdgStateHome } from './paths.js'
import { parseDurationIn, parseSize, type DurationRange } from './units.js'
import { checkHttpUrl } from './url-setting.js'
import { parseS3Url } from '../cache/sources/s3-url.js'

export const DEFAULT_ARCHIVE = 'https://fndcadoor.fnal.gov:2880/des/persistent/DESDM_ARCHIVE'
/** Where des-archive-access-download-metadata gets the DB (zstd-compressed). */
export const DEFAULT_DB_URL =
  'http://deslogin.cosmology.illinois.edu/~donaldp/desdm-file-db-23-10-06-15-39/desdm_pruned_indexed_files.db.zst'

interface SettingDef {
  /** Name in the config file and in `desfs status`. */
  key: string
  /** Command-line flag (without --). */
  flag?: string
  env?: string[]
  help: string
  default?: () => string | undefined
}

export const SETTINGS: SettingDef[] = [
  { key: 'mountpoint', env: ['DESDATA'], help: 'where the archive is mounted' },
  { key: 'db', flag: 'db', env: ['DES_ARCHIVE_ACCESS_DB'], help: 'des-archive-access metadata DB (read-only)', default: defaultMetadataDb },
  {
    key: 'archive',
    flag: 'archive',
    env: ['DES_ARCHIVE_ACCESS_ARCHIVE'],
    help: 'archive URL (dCache WebDAV door)',
    default: () => DEFAULT_ARCHIVE,
  },
  {
    key: 'cache_dir',
    flag: 'cache-dir',
    env: ['DESFS_CACHE_DIR'],
    help: 'block cache directory',
    default: () => join(xdgCacheHome(), 'desfs'),
  },
  {
    key: 'state_dir',
    flag: 'state-dir',
    env: ['DESFS_STATE_DIR'],
    help: 'index, control socket and log',
    default: () => join(xdgStateHome(), 'desfs'),
  },
  {
    key: 'cache_size',
    flag: 'cache-size',
    env: ['DESFS_CACHE_SIZE'],
    help: 'cache size bound (e.g. 50G); auto = 25% of the disk, at most 100G',
    default: () => 'auto',
  },
  {
    key: 'pin_size',
    flag: 'pin-size',
    env: ['DESFS_PIN_SIZE'],
    help: 'cap on the total size of pinned files (e.g. 20G); auto = half the cache size',
    default: () => 'auto',
  },
  {
    key: 'cache_min_free',
    flag: 'cache-min-free',
    env: ['DESFS_CACHE_MIN_FREE'],
    help: 'free space the cache leaves on its disk; auto = 5% of the disk, at most 5G',
    default: () => 'auto',
  },
  {
    key: 'sources',
    flag: 'sources',
    env: ['DESFS_SOURCES'],
    help: 'where files are read from, in order, comma-separated: archive, s3, mirror, site (e.g. s3,archive prefers the cloud copy; s3 alone is cloud-only); auto = mirror (if set), site (if set), archive, s3 (if set)',
    default: () => 'auto',
  },
  {
    key: 'mirror_dir',
    flag: 'mirror-dir',
    env: ['DESFS_MIRROR_DIR'],
    help: 'local copy of (part of) the archive with the same paths, read before the network',
  },
  {
    key: 'site_cache',
    flag: 'site-cache',
    env: ['DESFS_SITE_CACHE'],
    help: "the site's shared cache (an XRootD XCache's HTTP port, or any server with byte ranges) holding the archive's tree at the same paths, read before the archive; sizes and checksums still come from the archive",
  },
  {
    key: 'site_token_file',
    flag: 'site-token-file',
    env: ['DESFS_SITE_TOKEN_FILE'],
    help: "bearer token file for the site cache (none: no token is sent; the archive's token never is)",
  },
  {
    key: 's3_url',
    flag: 's3-url',
    env: ['DESFS_S3_URL'],
    help: 'S3 copy of the archive, s3://BUCKET/PREFIX (AWS credentials from the environment or ~/.aws; anonymous otherwise)',
  },
  {
    key: 's3_endpoint',
    flag: 's3-endpoint',
    env: ['DESFS_S3_ENDPOINT', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'],
    help: 'S3 endpoint URL; default AWS for the region',
  },
  {
    key: 's3_region',
    flag: 's3-region',
    env: ['DESFS_S3_REGION', 'AWS_REGION', 'AWS_DEFAULT_REGION'],
    help: 'S3 region',
    default: () => 'us-east-1',
  },
  {
    key: 'read_timeout',
    flag: 'read-timeout',
    env: ['DESFS_READ_TIMEOUT'],
    help: 'deadline for one read from the archive before the reader gets EIO',
    default: () => '30s',
  },
  {
    key: 'connect_timeout',
    flag: 'connect-timeout',
    env: ['DESFS_CONNECT_TIMEOUT'],
    help: 'deadline for connecting to the archive',
    default: () => '10s',
  },
  {
    key: 'stall_timeout',
    flag: 'stall-timeout',
    env: ['DESFS_STALL_TIMEOUT'],
    help: 'a transfer that brings less than min_rate per second over this long is retried',
    default: () => '10s',
  },
  {
    key: 'min_rate',
    flag: 'min-rate',
    env: ['DESFS_MIN_RATE'],
    help: 'slowest acceptable transfer, bytes per second (e.g. 64K)',
    default: () => '64K',
  },
  {
    key: 'token_file',
    flag: 'token-file',
    env: ['DESFS_TOKEN_FILE'],
    help: 'bearer token file to use instead of the usual discovery order',
  },
  { key: 'ca_file', flag: 'ca-file', env: ['DESFS_CA_FILE'], help: 'extra CA certificates (PEM) for the archive' },
  {
    key: 'sql_timeout',
    flag: 'sql-timeout',
    env: ['DESFS_SQL_TIMEOUT'],
    help: 'default time limit for one SQL query (e.g. 60s, 10m; 0 for none)',
    default: () => '60s',
  },
  {
    key: 'tree_query',
    flag: 'tree-query',
    env: ['DESFS_TREE_QUERY'],
    help: 'SQL returning (path, filename, compression) for non-DESDM layouts',
  },
  {
    key: 'passthrough',
    flag: 'passthrough',
    env: ['DESFS_PASSTHROUGH'],
    help: 'let the kernel read complete cached files directly (FUSE passthrough; root, Linux 6.9+); false serves them by pread in the plane',
    default: () => 'true',
  },
  {
    key: 'index_timeout',
    flag: 'index-timeout',
    env: ['DESFS_INDEX_TIMEOUT'],
    help: 'longest a tree index build may take before it is stopped (1s to 24h; the DES DB takes minutes)',
    default: () => '30m',
  },
  {
    key: 'allow_other',
    flag: 'allow-other',
    env: ['DESFS_ALLOW_OTHER'],
    help: 'let other users read the mount (needs user_allow_other in /etc/fuse.conf)',
    default: () => 'false',
  },
  {
    key: 'db_url',
    flag: 'url',
    env: ['DESFS_DB_URL'],
    help: 'where `desfs db download` gets the metadata DB (.zst is decompressed)',
    default: () => DEFAULT_DB_URL,
  },
  {
    key: 'oidc_issuer',
    flag: 'issuer',
    env: ['DESFS_OIDC_ISSUER'],
    help: 'OpenID Connect issuer for `desfs token login` (the iss of your tokens)',
  },
  {
    key: 'oidc_client_id',
    flag: 'client-id',
    env: ['DESFS_OIDC_CLIENT_ID'],
    help: 'OAuth client id registered for the device flow at that issuer',
  },
  {
    key: 'oidc_scope',
    flag: 'scope',
    env: ['DESFS_OIDC_SCOPE'],
    help: 'scopes requested by `desfs token login`',
    default: () => 'openid offline_access',
  },
  {
    key: 'oidc_audience',
    flag: 'audience',
    env: ['DESFS_OIDC_AUDIENCE'],
    help: 'audience (RFC 8707 resource) requested for access tokens',
  },
  { key: 'log_level', flag: 'log-level', env: ['DESFS_LOG_LEVEL'], help: 'debug, info, warn or error', default: () => 'info' },
]

export interface Setting {
  value: string | undefined
  /** 'flag --db', 'env DES_ARCHIVE_ACCESS_DB', 'config file ~/.config/desfs/config', 'default' */
  source: string
}

export function configFilePath(): string {
  return process.env.DESFS_CONFIG || join(xdgConfigHome(), 'desfs', 'config')
}

/** Reads `key = value` lines; `#` starts a comment. A missing file is an empty config. */
export function readConfigFile(path: string): Map<string, string> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map()
    throw new UserError(`cannot read config file ${path}: ${(err as Error).message}`)
  }
  const known = new Set(SETTINGS.map((s) => s.key))
  const out = new Map<string, string>()
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim()
    if (!line) return
    const m = /^([a-z_]+)\s*=\s*(.*)$/.exec(line)
    if (!m) throw new UserError(`${path}:${i + 1}: expected 'key = value', got '${raw.trim()}'`)
    if (!known.has(m[1]!)) throw new UserError(`${path}:${i + 1}: unknown setting '${m[1]}' (known: ${[...known].join(', ')})`)
    out.set(m[1]!, m[2]!.replace(/^(["'])(.*)\1$/, '$2'))
  })
  return out
}

/** Resolves every setting from flags (keyed by flag name), the environment, the config file and defaults. */
export function resolveSettings(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv = process.env): Map<string, Setting> {
  const file = configFilePath()
  const fromFile = readConfigFile(file)
  const out = new Map<string, Setting>()
  for (const def of SETTINGS) {
    const flagName = def.flag ?? def.key
    let setting: Setting | undefined
    if (flags[flagName] !== undefined) setting = { value: flags[flagName], source: def.flag ? `flag --${def.flag}` : 'argument' }
    for (const name of def.env ?? []) {
      if (!setting && env[name]) setting = { value: env[name], source: `env ${name}` }
    }
    if (!setting && fromFile.has(def.key)) setting = { value: fromFile.get(def.key), source: `config file ${file}` }
    if (!setting) setting = { value: def.default?.(), source: 'default' }
    out.set(def.key, setting)
  }
  return out
}

export const SOURCE_NAMES = ['archive', 's3', 'mirror', 'site'] as const
export type SourceName = (typeof SOURCE_NAMES)[number]

/** The source order from the `sources` setting; 'auto' is mirror (if set), site (if set), archive, s3 (if set). */
export function parseSources(text: string, have: { mirror: boolean; s3: boolean; site?: boolean }): SourceName[] {
  if (text === 'auto')
    return [
      ...(have.mirror ? ['mirror' as const] : []),
      ...(have.site ? ['site' as const] : []),
      'archive',
      ...(have.s3 ? ['s3' as const] : []),
    ]
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  if (names.length === 0) throw new Error('is empty; give one or more of archive, s3, mirror')
  for (const n of names)
    if (!(SOURCE_NAMES as readonly string[]).includes(n)) throw new Error(`'${n}' is not a source; use archive, s3, mirror or site`)
  if (new Set(names).size !== names.length) throw new Error(`'${text}' names a source twice`)
  if (names.includes('mirror') && !have.mirror) throw new Error('names mirror but mirror_dir is not set (--mirror-dir)')
  if (names.includes('s3') && !have.s3) throw new Error('names s3 but s3_url is not set (--s3-url s3://BUCKET/PREFIX)')
  if (names.includes('site') && !have.site) throw new Error('names site but site_cache is not set (--site-cache URL)')
  // A site cache serves bytes only: sizes and checksums need a source that knows them.
  if (names.includes('site') && !names.includes('archive') && !names.includes('s3'))
    throw new Error(`'${text}' has no source for sizes and checksums: the site cache serves bytes only; add archive (e.g. site,archive)`)
  return names as SourceName[]
}

export interface DaemonConfig {
  mountpoint: string
  db: string
  archive: string
  cacheDir: string
  stateDir: string
  /** Bytes, or undefined for 'auto' (decided once the cache dir's disk is known). */
  cacheSize: number | undefined
  /** Bytes, or undefined for 'auto' (half the cache size). */
  pinSize: number | undefined
  /** Bytes, or undefined for 'auto' (decided once the cache dir's disk is known). */
  cacheMinFree: number | undefined
  /** Sources in the order they are tried. */
  sources: SourceName[]
  mirrorDir: string | undefined
  s3Url: string | undefined
  /** The site cache's URL of the archive root, without trailing slashes. */
  siteCache: string | undefined
  siteTokenFile: string | undefined
  s3Endpoint: string | undefined
  s3Region: string
  readTimeoutMs: number
  connectTimeoutMs: number
  stallTimeoutMs: number
  /** Default time limit of one SQL query, 0 for none. */
  sqlTimeoutMs: number
  minRate: number
  caFile: string | undefined
  tokenFile: string | undefined
  treeQuery: string | undefined
  /** Longest a tree index build may take, ms. */
  indexTimeoutMs: number
  allowOther: boolean
  passthrough: boolean
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  /** Every setting with its source, for status. */
  settings: Map<string, Setting>
}

/**
 * Every duration setting's sane range. The upper bounds stay far below Node's timer limit (2^31-1 ms,
 * about 24.8 days; a longer timer fires at once); the lower ones keep a deadline from failing every
 * operation before it could possibly succeed.
 */
export const DURATION_RANGES: Record<
  'read_timeout' | 'connect_timeout' | 'stall_timeout' | 'sql_timeout' | 'index_timeout',
  DurationRange
> = {
  read_timeout: { minMs: 1000, maxMs: 3_600_000 },
  connect_timeout: { minMs: 1000, maxMs: 600_000 },
  stall_timeout: { minMs: 1000, maxMs: 3_600_000 },
  sql_timeout: { minMs: 100, maxMs: 86_400_000, zero: 'none' },
  // A build needs at least a moment, and one longer than a day is stuck.
  index_timeout: { minMs: 1000, maxMs: 86_400_000 },
}

/** A duration setting in ms, checked against its range; a UserError naming the setting otherwise. */
export function durationSetting(settings: Map<string, Setting>, key: keyof typeof DURATION_RANGES): number {
  return parseWith(settings, key, (v) => parseDurationIn(v, DURATION_RANGES[key]))
}

/** The archive URL setting, checked (http(s), no credentials, query or fragment), without trailing slashes. */
export function archiveUrlSetting(settings: Map<string, Setting>): string {
  return parseWith(settings, 'archive', (v) => checkHttpUrl(v, 'archive URL'))
}

function parseWith<T>(settings: Map<string, Setting>, key: string, parse: (v: string) => T): T {
  const s = settings.get(key)!
  try {
    return parse(s.value!)
  } catch (err) {
    throw new UserError(`${key} (from ${s.source}): ${(err as Error).message}`, EXIT.USAGE)
  }
}

export function parseBool(v: string): boolean {
  if (/^(1|true|yes|on)$/i.test(v)) return true
  if (/^(0|false|no|off)$/i.test(v)) return false
  throw new Error(`'${v}' is not true or false`)
}

/** Turns resolved settings into a validated daemon configuration. The mountpoint is required. */
export function daemonConfig(settings: Map<string, Setting>, opts: { needMountpoint?: boolean } = {}): DaemonConfig {
  const mnt = settings.get('mountpoint')!
  // Commands that fetch without mounting (desfs get with no daemon) have no mountpoint.
  if (!mnt.value && opts.needMountpoint !== false)
    throw new UserError('no mountpoint: give one (desfs mount DIR) or set DESDATA', EXIT.USAGE)
  const archive = archiveUrlSetting(settings)
  const level = settings.get('log_level')!.value!
  if (!['debug', 'info', 'warn', 'error'].includes(level))
    throw new UserError(`log_level: '${level}' is not one of debug, info, warn, error`, EXIT.USAGE)
  const cacheSize = settings.get('cache_size')!.value!
  return {
    mountpoint: mnt.value ? resolve(mnt.value) : '',
    db: resolve(settings.get('db')!.value!),
    archive,
    cacheDir: resolve(settings.get('cache_dir')!.value!),
    stateDir: resolve(settings.get('state_dir')!.value!),
    cacheSize: cacheSize === 'auto' ? undefined : parseWith(settings, 'cache_size', parseSize),
    pinSize: settings.get('pin_size')!.value === 'auto' ? undefined : parseWith(settings, 'pin_size', parseSize),
    cacheMinFree: settings.get('cache_min_free')!.value === 'auto' ? undefined : parseWith(settings, 'cache_min_free', parseSize),
    sources: parseWith(settings, 'sources', (v) =>
      parseSources(v, {
        mirror: !!settings.get('mirror_dir')!.value,
        s3: !!settings.get('s3_url')!.value,
        site: !!settings.get('site_cache')!.value,
      }),
    ),
    mirrorDir: settings.get('mirror_dir')!.value ? resolve(settings.get('mirror_dir')!.value!) : undefined,
    siteCache: settings.get('site_cache')!.value ? parseWith(settings, 'site_cache', (v) => checkHttpUrl(v, 'site cache URL')) : undefined,
    siteTokenFile: settings.get('site_token_file')!.value ? resolve(settings.get('site_token_file')!.value!) : undefined,
    s3Url: settings.get('s3_url')!.value ? parseWith(settings, 's3_url', (v) => (parseS3Url(v), v)) : undefined,
    // Checked only when S3 is configured: AWS_ENDPOINT_URL may be set for other tools.
    s3Endpoint: settings.get('s3_endpoint')!.value
      ? settings.get('s3_url')!.value
        ? parseWith(settings, 's3_endpoint', (v) => checkHttpUrl(v, 'S3 endpoint'))
        : settings.get('s3_endpoint')!.value
      : undefined,
    s3Region: settings.get('s3_region')!.value!,
    stallTimeoutMs: durationSetting(settings, 'stall_timeout'),
    minRate: parseWith(settings, 'min_rate', parseSize),
    readTimeoutMs: durationSetting(settings, 'read_timeout'),
    connectTimeoutMs: durationSetting(settings, 'connect_timeout'),
    sqlTimeoutMs: durationSetting(settings, 'sql_timeout'),
    caFile: settings.get('ca_file')!.value,
    tokenFile: settings.get('token_file')!.value ? resolve(settings.get('token_file')!.value!) : undefined,
    treeQuery: settings.get('tree_query')!.value,
    indexTimeoutMs: durationSetting(settings, 'index_timeout'),
    allowOther: parseWith(settings, 'allow_other', parseBool),
    passthrough: parseWith(settings, 'passthrough', parseBool),
    logLevel: level as DaemonConfig['logLevel'],
    settings,
  }
}
