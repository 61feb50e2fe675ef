#!/usr/bin/env node
// The desfs command: a thin client. It starts the daemon (mount), talks to it over the control
// socket, and prints one clear line on errors, with exit codes scripts can trust.
import { readFileSync } from 'node:fs'
import { helpText, parse, type Command } from './command.js'
import { mountCommand, umountCommand } from './cmd-mount.js'
import { statusCommand } from './cmd-status.js'
import { demoCommand } from './cmd-demo.js'
import { cacheCommand } from './cmd-cache.js'
import { tokenCommand } from './cmd-token.js'
import { dbCommand } from './cmd-db.js'
import { doctorCommand } from './cmd-doctor.js'
import { sqlCommand } from './cmd-sql.js'
import { metricsCommand } from './cmd-metrics.js'
import { reloadCommand } from './cmd-reload.js'
import { syncCommand, jobsCommand } from './cmd-sync.js'
import { getCommand, uriCommand } from './cmd-get.js'
import { EXIT, UserError, oneLine } from '../daemon/errors.js'

const COMMANDS: Command[] = [mountCommand, umountCommand, statusCommand, sqlCommand, syncCommand, jobsCommand, getCommand, uriCommand, cacheCommand, metricsCommand, reloadCommand, tokenCommand, dbCommand, doctorCommand, demoCommand]

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4
  return [
    'usage: desfs COMMAND [options]',
    '',
    'Mounts the Dark Energy Survey archive as a read-only DESDATA tree, fetching only the bytes you read.',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary.split('. ')[0]!.replace(/\.$/, '')}`),
    '',
    'Run `desfs COMMAND --help` for a command\'s options.',
  ].join('\n') + '\n'
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const cmd = COMMANDS.find((c) => c.name === rest[0])
    process.stdout.write(cmd ? helpText(cmd) : mainHelp())
    return EXIT.OK
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`desfs ${version()}\n`)
    return EXIT.OK
  }
  const cmd = COMMANDS.find((c) => c.name === name)
  if (!cmd) throw new UserError(`desfs: unknown command '${name}' (see desfs --help)`, EXIT.USAGE)
  const args = parse(cmd, rest)
  if (args.flags.help) {
    process.stdout.write(helpText(cmd))
    return EXIT.OK
  }
  return cmd.run(args)
}

// `desfs ... | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
})

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    if (err instanceof UserError) {
      process.stderr.write(`desfs: ${err.message.replace(/^desfs: /, '')}\n`)
      process.exitCode = err.exitCode
    } else {
      process.stderr.write(`desfs: internal error: ${oneLine(err)}\n${process.env.DESFS_DEBUG ? (err as Error).stack + '\n' : ''}`)
      process.exitCode = EXIT.FAILURE
    }
  },
)
