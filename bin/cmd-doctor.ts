// desfs doctor: one line per check (OK, WARN or FAIL) with the fix; exits 1 when anything fails.
import { settingOptions, settingFlags, type Command } from './command.js'
import { resolveSettings } from '../daemon/config.js'
import { runDoctor } from '../daemon/doctor.js'
import { EXIT } from '../daemon/errors.js'

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'Check FUSE, the token, the metadata DB, the archive, and the cache and state dirs; print the fix for each problem.',
  usage: 'desfs doctor [options]',
  options: { json: { type: 'boolean', help: 'print the checks as JSON' }, ...settingOptions(['db', 'archive', 'cache_dir', 'state_dir', 'token_file', 'ca_file', 'connect_timeout']) },
  async run({ flags }) {
    const checks = await runDoctor(resolveSettings(settingFlags(flags)))
    if (flags.json) process.stdout.write(JSON.stringify(checks, null, 2) + '\n')
    else {
      const width = Math.max(...checks.map((c) => c.name.length)) + 2
      for (const c of checks) process.stdout.write(`${c.status.padEnd(5)}${c.name.padEnd(width)}${c.detail}${c.fix ? ` -> fix: ${c.fix}` : ''}\n`)
    }
    return checks.some((c) => c.status === 'FAIL') ? EXIT.FAILURE : EXIT.OK
  },
}
