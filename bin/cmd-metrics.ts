// desfs metrics: the daemon's Prometheus metrics (the text a scraper would get from GET /metrics).
import { resolve } from 'node:path'
import { settingFlags, settingOptions, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT } from '../daemon/errors.js'

export const metricsCommand: Command = {
  name: 'metrics',
  summary: "Print the running daemon's metrics in the Prometheus text format.",
  usage: 'desfs metrics [--state-dir DIR]',
  options: { ...settingOptions(['state_dir']) },
  async run({ flags }) {
    const settings = resolveSettings(settingFlags(flags))
    const text = await call<string>(socketPath(resolve(settings.get('state_dir')!.value!)), 'GET', '/metrics')
    process.stdout.write(text)
    return EXIT.OK
  },
}
