#!/usr/bin/env node
// The desfs command: a thin client. It starts the daemon (mount), talks to it over the control
// socket, and prints one clear line on errors, with exit codes scripts can trust.
import { readFileSync } from 'node:fs'
import { helpText, parse, type Command } from './command.js'
import { EXIT, UserError, oneLine } from '../daemon/errors.js'

// Each command's module is loaded only when that command runs (all of them for the overview), so
// `desfs sql -c ...` does not pay for loading the daemon, the FUSE binding or the OIDC client.
const COMMANDS: [string, () => Promise<Command>][] = [
  ['mount', async () => (await import('./cmd-mount.js')).mountCommand],
  ['umount', async () => (await import('./cmd-mount.js')).umountCommand],
  ['status', async () => (await import('./cmd-status.js')).statusCommand],
  ['sql', async () => (await import('./cmd-sql.js')).sqlCommand],
  ['sync', async () => (await import('./cmd-sync.js')).syncCommand],
  ['jobs', async () => (await import('./cmd-sync.js')).jobsCommand],
  ['get', async () => (await import('./cmd-get.js')).getCommand],
  ['headers', async () => (await import('./cmd-headers.js')).headersCommand],
  ['uri', async () => (await import('./cmd-get.js')).uriCommand],
  ['cache', async () => (await import('./cmd-cache.js')).cacheCommand],
  ['metrics', async () => (await import('./cmd-metrics.js')).metricsCommand],
  ['reload', async () => (await import('./cmd-reload.js')).reloadCommand],
  ['token', async () => (await import('./cmd-token.js')).tokenCommand],
  ['db', async () => (await import('./cmd-db.js')).dbCommand],
  ['doctor', async () => (await import('./cmd-doctor.js')).doctorCommand],
  ['demo', async () => (await import('./cmd-demo.js')).demoCommand],
]

function command(name: string | undefined): Promise<Command> | undefined {
  return COMMANDS.find(([n]) => n === name)?.[1]()
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

async function mainHelp(): Promise<string> {
  const all = await Promise.all(COMMANDS.map(([, load]) => load()))
  const width = Math.max(...all.map((c) => c.name.length)) + 4
  return (
    [
      'usage: desfs COMMAND [options]',
      '',
      'Mounts the Dark Energy Survey archive as a read-only DESDATA tree, fetching only the bytes you read.',
      '',
      'commands:',
      ...all.map((c) => `  ${c.name.padEnd(width)}${c.summary.split('. ')[0]!.replace(/\.$/, '')}`),
      '',
      "Run `desfs COMMAND --help` for a command's options.",
    ].join('\n') + '\n'
  )
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const cmd = await command(rest[0])
    process.stdout.write(cmd ? helpText(cmd) : await mainHelp())
    return EXIT.OK
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`desfs ${version()}\n`)
    return EXIT.OK
  }
  const cmd = await command(name)
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
