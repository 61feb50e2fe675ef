// desfs cache stats|ls|pin|unpin|evict|clear: look at and manage the local cache of a running daemon.
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { expandControlPaths } from './control-paths.js'
import { call, socketPath } from './client.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { formatSize } from '../daemon/units.js'
import type { FetchStats } from '../cache/fetcher-options.js'

interface Stats {
  dir: string
  blockSize: number
  limit: number
  bytes: number
  files: number
  pinnedFiles: number
  pinnedBytes: number
  pinnedSize: number
  pinLimit: number
  minFree: number
  diskFree: number
  inUse: number
  filesEvicted: number
  bytesEvicted: number
  blocksDropped: number
  writeErrors: number
  notStored: number
  directBytes: number
  headerTierBytes: number
  headerTierLimit: number
  fetch?: FetchStats
  sources?: { name: string; down: boolean }[]
}

interface Entry {
  path: string
  size: number
  cached: number
  pinned: boolean
  /** Evicted but for its FITS headers (the header tier). */
  tier: boolean
  atime: string
}

interface EvictResult {
  files: number
  bytes: number
  skippedPinned: number
  skippedInUse: number
}

const SUBCOMMANDS = ['stats', 'ls', 'pin', 'unpin', 'evict', 'clear']

const pct = (a: number, b: number) => (b > 0 ? ` (${((100 * a) / b).toFixed(0)}%)` : '')

function kept(r: EvictResult): string {
  const parts = []
  if (r.skippedPinned) parts.push(`${r.skippedPinned} pinned`)
  if (r.skippedInUse) parts.push(`${r.skippedInUse} in use`)
  return parts.length ? `; kept ${parts.join(' and ')}` : ''
}

export const cacheCommand: Command = {
  name: 'cache',
  summary: 'Show and manage the local cache: stats, ls [PATH], pin PATH..., unpin PATH..., evict PATH..., clear [--yes].',
  usage: 'desfs cache stats|ls|pin|unpin|evict|clear [PATH...] [--yes] [--json]',
  details: [
    'PATHs are archive paths (OPS/...), paths under the mountpoint, or relative to the current directory inside it;',
    'a directory means every cached file under it; a path under $DESDATA/.desfs means the files it selects. Pinned files are kept whatever the cache needs, within the',
    'pin cap (--pin-size of desfs mount); pinning more is refused. clear evicts every file that is neither pinned',
    'nor open, and only shows what it would do unless --yes is given. ls marks pinned files P and files evicted but for',
    'their FITS headers H (kept for header surveys, within a small bound of their own).',
  ].join('\n'),
  options: {
    yes: { type: 'boolean', short: 'y', help: 'clear: really evict (without it, clear only shows what it would do)' },
    pinned: { type: 'boolean', help: 'ls: only pinned files' },
    json: { type: 'boolean', help: 'print the answer as JSON' },
    ...settingOptions(['state_dir']),
  },
  async run({ flags, positionals }) {
    const [sub, ...paths] = positionals
    if (!sub || !SUBCOMMANDS.includes(sub))
      throw new UserError(
        `desfs cache: ${sub ? `unknown subcommand '${sub}'` : 'give a subcommand'}: one of ${SUBCOMMANDS.join(', ')} (see desfs cache --help)`,
        EXIT.USAGE,
      )
    if (['pin', 'unpin', 'evict'].includes(sub) && paths.length === 0)
      throw new UserError(`desfs cache ${sub}: give one or more PATHs`, EXIT.USAGE)
    if (['stats', 'clear'].includes(sub) && paths.length) throw new UserError(`desfs cache ${sub} takes no PATH`, EXIT.USAGE)
    if (sub === 'ls' && paths.length > 1) throw new UserError('desfs cache ls takes at most one PATH', EXIT.USAGE)
    const settings = resolveSettings(settingFlags(flags))
    const sock = socketPath(resolve(settings.get('state_dir')!.value!))
    const out = (v: unknown, text: () => string) => process.stdout.write(flags.json ? JSON.stringify(v, null, 2) + '\n' : text())
    // A .desfs path (a query-defined directory or by-name link) stands for the files it selects.
    const body = {
      paths: ['pin', 'unpin', 'evict'].includes(sub) ? expandControlPaths(paths, { absolute: true }) : paths,
      cwd: process.cwd(),
    }

    switch (sub) {
      case 'stats': {
        const s = await call<Stats>(sock, 'GET', '/cache/stats')
        out(s, () => {
          const lines = [
            `cache       ${s.dir}`,
            `used        ${formatSize(s.bytes)} of ${formatSize(s.limit)}${pct(s.bytes, s.limit)} in ${s.files} files (blocks of ${formatSize(s.blockSize)})`,
            `pinned      ${s.pinnedFiles} files, ${formatSize(s.pinnedBytes)} cached; ${formatSize(s.pinnedSize)} of the ${formatSize(s.pinLimit)} pin cap`,
            `header tier ${formatSize(s.headerTierBytes)} of evicted files' FITS headers kept (bound ${formatSize(s.headerTierLimit)})`,
            `disk        ${s.diskFree >= 0 ? formatSize(s.diskFree) : 'unknown'} free, ${formatSize(s.minFree)} kept free`,
            `evicted     ${s.filesEvicted} files (${formatSize(s.bytesEvicted)}) since start; ${s.blocksDropped} blocks dropped, ${s.notStored} not stored, ${s.writeErrors} write errors`,
            `direct      ${formatSize(s.directBytes)} of syncs written around the page cache since start (O_DIRECT)`,
          ]
          if (s.fetch)
            lines.push(
              `fetched     ${formatSize(s.fetch.bytesFetched)} in ${s.fetch.requests} requests (${s.fetch.retries} retries, ${s.fetch.failures} failed); hits: ${s.fetch.memoryHits} memory, ${s.fetch.diskHits} disk, ${s.fetch.networkReads} network`,
            )
          if (s.sources) lines.push(`sources     ${s.sources.map((x) => `${x.name}${x.down ? ' (down)' : ''}`).join(', ')}`)
          return lines.join('\n') + '\n'
        })
        return EXIT.OK
      }
      case 'ls': {
        const q = new URLSearchParams({ path: paths[0] ?? '', cwd: process.cwd(), ...(flags.pinned ? { pinned: '1' } : {}) })
        const { entries } = await call<{ entries: Entry[] }>(sock, 'GET', `/cache/list?${q}`)
        out(entries, () =>
          entries
            .map(
              (e) =>
                `${e.pinned ? 'P' : e.tier ? 'H' : '-'} ${formatSize(e.cached).padStart(10)} / ${formatSize(e.size).padEnd(10)} ${e.atime.slice(0, 19).replace('T', ' ')}  ${e.path}\n`,
            )
            .join(''),
        )
        return EXIT.OK
      }
      case 'pin': {
        const r = await call<{ pinned: number; already: number }>(sock, 'POST', '/cache/pin', body)
        out(r, () => `desfs: pinned ${r.pinned} files${r.already ? ` (${r.already} were pinned already)` : ''}\n`)
        return EXIT.OK
      }
      case 'unpin': {
        const r = await call<{ unpinned: number }>(sock, 'POST', '/cache/unpin', body)
        out(r, () => `desfs: unpinned ${r.unpinned} files\n`)
        return EXIT.OK
      }
      case 'evict': {
        const r = await call<EvictResult>(sock, 'POST', '/cache/evict', body)
        out(r, () => `desfs: evicted ${r.files} files (${formatSize(r.bytes)})${kept(r)}\n`)
        return EXIT.OK
      }
      default: {
        const r = await call<EvictResult & { dryRun: boolean }>(sock, 'POST', '/cache/clear', { yes: flags.yes === true })
        out(r, () =>
          r.dryRun
            ? `desfs: clear would evict ${r.files} files (${formatSize(r.bytes)})${kept(r)}; run desfs cache clear --yes to do it\n`
            : `desfs: evicted ${r.files} files (${formatSize(r.bytes)})${kept(r)}\n`,
        )
        return EXIT.OK
      }
    }
  },
}
