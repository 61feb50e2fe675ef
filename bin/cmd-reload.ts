// desfs reload: make the daemon re-read its bearer token and re-check the metadata DB now.
import { resolve } from 'node:path'
import { settingFlags, settingOptions, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT } from '../daemon/errors.js'

interface ReloadAnswer {
  token: { source: string; expires?: string; problem?: string } | null
  db: { path: string; present: boolean; changed: boolean }
  [hook: string]: unknown
}

export const reloadCommand: Command = {
  name: 'reload',
  summary: 'Make the daemon re-read the bearer token and re-check the metadata DB now.',
  usage: 'desfs reload [--json] [--state-dir DIR]',
  options: { json: { type: 'boolean', help: "print the daemon's answer as JSON" }, ...settingOptions(['state_dir']) },
  async run({ flags }) {
    const settings = resolveSettings(settingFlags(flags))
    const r = await call<ReloadAnswer>(socketPath(resolve(settings.get('state_dir')!.value!)), 'POST', '/reload')
    if (flags.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      return EXIT.OK
    }
    const t = r.token
    const lines = [
      `token       ${!t ? '(daemon still starting)' : (t.problem ?? `${t.source}${t.expires ? `, expires ${t.expires}` : ''}`)}`,
      `metadata    ${r.db.path}: ${!r.db.present ? 'MISSING' : r.db.changed ? 'changed on disk; queries now use the new file' : 'unchanged'}`,
    ]
    for (const [k, v] of Object.entries(r))
      if (k !== 'token' && k !== 'db') lines.push(`${k.padEnd(12)}${typeof v === 'string' ? v : JSON.stringify(v)}`)
    process.stdout.write(lines.join('\n') + '\n')
    return t?.problem || !r.db.present ? EXIT.UNAVAILABLE : EXIT.OK
  },
}
