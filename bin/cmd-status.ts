// desfs status: what the daemon is doing, in a few lines (or --json for scripts).
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT } from '../daemon/errors.js'
import { formatSize } from '../daemon/units.js'

interface Status {
  pid: number
  mountpoint: string
  startedAt: string
  db: string
  archive: string
  tree: { files: number; dirs: number; skippedSummary?: string; table: string } | null
  token: { source: string; subject?: string; expires?: string; problem?: string } | null
  cache: { dir: string; bytes: number; limit: number } | null
  fetch: { requests: number; bytesFetched: number; failures: number } | null
  settings: Record<string, { value?: string; source: string }>
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'Show the running daemon: mount, metadata DB, tree, token, cache, and the effective settings with where each came from.',
  usage: 'desfs status [--json] [--state-dir DIR]',
  options: { json: { type: 'boolean', help: 'print the full status as JSON' }, ...settingOptions(['state_dir']) },
  async run({ flags }) {
    const settings = resolveSettings(settingFlags(flags))
    const s = await call<Status>(socketPath(resolve(settings.get('state_dir')!.value!)), 'GET', '/status')
    if (flags.json) {
      process.stdout.write(JSON.stringify(s, null, 2) + '\n')
      return EXIT.OK
    }
    const lines = [
      `mounted     ${s.mountpoint} (pid ${s.pid}, since ${s.startedAt})`,
      `metadata    ${s.db}${s.tree ? ` (${s.tree.table}: ${s.tree.files} files in ${s.tree.dirs} directories)` : ''}`,
    ]
    if (s.tree?.skippedSummary) lines.push(`            ${s.tree.skippedSummary}`)
    lines.push(`archive     ${s.archive}`)
    if (s.token) lines.push(`token       ${s.token.problem ?? `${s.token.source}${s.token.subject ? `, subject ${s.token.subject}` : ''}${s.token.expires ? `, expires ${s.token.expires}` : ''}`}`)
    if (s.cache) lines.push(`cache       ${s.cache.dir}: ${formatSize(s.cache.bytes)} of ${formatSize(s.cache.limit)}`)
    if (s.fetch) lines.push(`fetched     ${formatSize(s.fetch.bytesFetched)} in ${s.fetch.requests} requests, ${s.fetch.failures} failed`)
    lines.push('settings:')
    for (const [k, v] of Object.entries(s.settings)) lines.push(`  ${k.padEnd(16)}${(v.value ?? '(unset)').padEnd(40)} ${v.source}`)
    process.stdout.write(lines.join('\n') + '\n')
    return EXIT.OK
  },
}
