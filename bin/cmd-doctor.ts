// desfs doctor: one line per check (OK, WARN or FAIL) with the fix; exits 1 when anything fails. When a
// daemon runs on the state dir, its settings are the ones checked (flags given to doctor still win).
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { resolveSettings, type Setting } from '../daemon/config.js'
import { DOCTOR_SETTINGS, daemonCheck, runDoctor, withDaemonSettings, type CheckResult, type DaemonView } from './doctor.js'
import { EXIT } from '../daemon/errors.js'

/** The running daemon's settings, or undefined when none answers on the state dir's socket. */
async function askDaemon(settings: Map<string, Setting>): Promise<DaemonView | undefined> {
  try {
    const s = await call<DaemonView>(socketPath(resolve(settings.get('state_dir')!.value!)), 'GET', '/status', undefined, {
      timeoutMs: 5000,
    })
    return s && typeof s.pid === 'number' && s.settings && typeof s.settings === 'object' ? s : undefined
  } catch {
    return undefined // no daemon (or not ours to ask): the settings here are the ones to check
  }
}

export const doctorCommand: Command = {
  name: 'doctor',
  summary:
    'Check FUSE, the token, the metadata DB, the archive, and the cache and state dirs (those of the running daemon, if one runs); print the fix for each problem.',
  usage: 'desfs doctor [options]',
  options: { json: { type: 'boolean', help: 'print the checks as JSON' }, ...settingOptions(DOCTOR_SETTINGS) },
  async run({ flags }) {
    let settings = resolveSettings(settingFlags(flags))
    const daemon = await askDaemon(settings)
    if (daemon) settings = withDaemonSettings(settings, daemon)
    const checks: CheckResult[] = [...(daemon ? [daemonCheck(daemon)] : []), ...(await runDoctor(settings))]
    if (flags.json) process.stdout.write(JSON.stringify(checks, null, 2) + '\n')
    else {
      const width = Math.max(...checks.map((c) => c.name.length)) + 2
      for (const c of checks)
        process.stdout.write(`${c.status.padEnd(5)}${c.name.padEnd(width)}${c.detail}${c.fix ? ` -> fix: ${c.fix}` : ''}\n`)
    }
    return checks.some((c) => c.status === 'FAIL') ? EXIT.FAILURE : EXIT.OK
  },
}
