// desfs status: what the daemon is doing, in a few lines (or --json for scripts): the mount, the
// metadata DB and tree, the sources, the token and when it expires, the cache, SQL, and the effective
// settings with where each value came from. Exit 4 when no daemon answers.
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT } from '../daemon/errors.js'
import { formatDuration, formatSize } from '../daemon/units.js'
import { siteHitRatio } from '../cache/metrics.js'

interface Status {
  pid: number
  mountpoint: string
  startedAt: string
  ready: boolean
  db: string
  dbFile?: { bytes: number; modified: string } | null
  archive: string
  tree: { files: number; dirs: number; skippedSummary?: string; table: string; index: string } | null
  token: { source: string; subject?: string; expires?: string; problem?: string } | null
  cache: { dir: string; bytes: number; limit: number; pinnedBytes?: number } | null
  sources?: { name: string; down?: boolean; bytesFetched?: number }[] | null
  fetch: { requests: number; bytesFetched: number; failures: number } | null
  plane?: {
    passthrough: boolean
    passthroughNote: string
    workers: number
    maxRead: number
    nativeReadBytes: number
    nativeReads: number
    passthroughOpens: number
    toJavaScript: number
    rootMount: boolean
  } | null
  sql?: { running: number; served: number; timeoutMs: number } | null
  /** Event-loop delay since the last status or metrics read, seconds. */
  eventLoop?: { p99: number; max: number }
  settings: Record<string, { value?: string; source: string }>
}

/** "in 41m" / "5m ago", for an ISO time relative to now. */
function relative(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now
  return ms >= 0 ? `in ${formatDuration(ms)}` : `${formatDuration(-ms)} ago`
}

/** A lag in seconds as milliseconds, to a tenth below 10 ms. */
function formatLag(seconds: number): string {
  const ms = seconds * 1000
  return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`
}

/** '; site hit ratio 83%' when a site cache is among the sources: bytes from it / bytes fetched. */
function siteLine(s: Status): string {
  if (!s.sources?.some((x) => x.name === 'site')) return ''
  const bySource = Object.fromEntries(s.sources.map((x) => [x.name, x.bytesFetched ?? 0]))
  const total = Object.values(bySource).reduce((a, b) => a + b, 0)
  return total > 0 ? `; site hit ratio ${Math.round(100 * siteHitRatio(bySource))}% of bytes fetched` : '; nothing fetched yet'
}

export function humanStatus(s: Status, now = Date.now()): string {
  const lines = [
    `mounted     ${s.mountpoint} (pid ${s.pid}, up ${formatDuration(now - Date.parse(s.startedAt))}${s.ready ? '' : ', still starting'})`,
  ]
  const dbFacts = s.dbFile
    ? ` (${formatSize(s.dbFile.bytes)}, modified ${s.dbFile.modified.slice(0, 16).replace('T', ' ')})`
    : s.dbFile === null
      ? ' (MISSING)'
      : ''
  lines.push(`metadata    ${s.db}${dbFacts}`)
  if (s.tree) lines.push(`tree        ${s.tree.files} files in ${s.tree.dirs} directories from ${s.tree.table}`)
  if (s.tree?.skippedSummary) lines.push(`            ${s.tree.skippedSummary}`)
  const sources = s.sources?.length
    ? s.sources
        .map((x) => `${x.name}${x.down ? ' (DOWN)' : ''}${x.bytesFetched !== undefined ? ` ${formatSize(x.bytesFetched)}` : ''}`)
        .join(', ')
    : s.archive
  lines.push(`sources     ${sources}${siteLine(s)}`)
  if (s.token) {
    const t = s.token
    const expires = t.expires ? `, expires ${relative(t.expires, now)} (${t.expires})` : ''
    lines.push(`token       ${t.problem ? `PROBLEM: ${t.problem}` : `${t.source}${t.subject ? `, subject ${t.subject}` : ''}${expires}`}`)
  }
  if (s.cache)
    lines.push(
      `cache       ${formatSize(s.cache.bytes)} of ${formatSize(s.cache.limit)} in ${s.cache.dir}${s.cache.pinnedBytes ? ` (${formatSize(s.cache.pinnedBytes)} pinned)` : ''}`,
    )
  if (s.fetch) lines.push(`fetched     ${formatSize(s.fetch.bytesFetched)} in ${s.fetch.requests} requests, ${s.fetch.failures} failed`)
  if (s.plane) {
    const p = s.plane
    const how = p.passthrough
      ? 'passthrough for complete cached files, pread for cached blocks'
      : `pread for cached blocks (${p.passthroughNote.replace(/: reads use pread from the cache$/, '')})`
    lines.push(
      `fuse        native plane, ${p.workers} threads, ${formatSize(p.maxRead)} requests, ${p.rootMount ? 'mount(2)' : 'fusermount3'}; ${how}`,
    )
    lines.push(
      `            served natively ${formatSize(p.nativeReadBytes)} in ${p.nativeReads} reads, ${p.passthroughOpens} passthrough opens; ${p.toJavaScript} requests went to JavaScript`,
    )
  }
  if (s.sql)
    lines.push(
      `sql         ${s.sql.running} running, ${s.sql.served} served, timeout ${s.sql.timeoutMs ? formatDuration(s.sql.timeoutMs) : 'none'}`,
    )
  // A stalled event loop stalls every read of the mount: the one figure to look at when reads hang.
  if (s.eventLoop)
    lines.push(`event loop  lag p99 ${formatLag(s.eventLoop.p99)}, max ${formatLag(s.eventLoop.max)} since the last status or metrics read`)
  lines.push('settings:')
  const width = Math.max(...Object.values(s.settings).map((v) => (v.value ?? '(unset)').length), 8)
  for (const [k, v] of Object.entries(s.settings))
    lines.push(`  ${k.padEnd(16)}${(v.value ?? '(unset)').padEnd(Math.min(width, 60))}  ${v.source}`)
  return lines.join('\n') + '\n'
}

export const statusCommand: Command = {
  name: 'status',
  summary:
    'Show the running daemon: mount, metadata DB, tree, sources, token, cache, SQL, and the effective settings with where each came from.',
  usage: 'desfs status [--json] [--state-dir DIR]',
  options: { json: { type: 'boolean', help: 'print the full status as JSON' }, ...settingOptions(['state_dir']) },
  details: 'Exit status: 0 when a daemon answered, 4 when none runs for this state dir.',
  async run({ flags }) {
    const settings = resolveSettings(settingFlags(flags))
    const s = await call<Status>(socketPath(resolve(settings.get('state_dir')!.value!)), 'GET', '/status')
    process.stdout.write(flags.json ? JSON.stringify(s, null, 2) + '\n' : humanStatus(s))
    return EXIT.OK
  },
}
