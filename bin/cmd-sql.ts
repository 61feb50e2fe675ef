// desfs sql: SQL over the metadata DB, like des-archive-access's shell. `-c SQL` (or the query as
// arguments) runs one statement, `-l FILE` runs a script statement by statement, and no query opens
// the interactive shell. Through the daemon when one runs (so the query never stalls the mount),
// otherwise on the DB directly, with the same engine and the same answers.
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { settingFlags, settingOptions, type Command } from './command.js'
import { daemonRunning, socketPath } from './client.js'
import { DURATION_RANGES, resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { parseScript, isBlank, type ScriptStatement } from '../daemon/sql/sql-text.js'
import { sqlTimeoutMs } from '../daemon/control/routes-sql.js'
import { parseDurationIn } from '../daemon/units.js'
import { daemonTarget, directTarget, runOne, type SqlSession } from './sql-run.js'
import { runShell } from './sql-shell.js'

/** The statement running now, for Ctrl-C and a closed stdout to cancel. */
let current: AbortController | undefined

/** Ctrl-C cancels the running query (and removes its half-written file) rather than killing desfs. */
async function cancellable<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController()
  current = ac
  const onInt = () => ac.abort()
  process.on('SIGINT', onInt)
  try {
    return await fn(ac.signal)
  } finally {
    process.off('SIGINT', onInt)
    current = undefined
  }
}

export const sqlCommand: Command = {
  name: 'sql',
  summary:
    'Query the metadata DB with SQL (read-only). No query: an interactive shell. `...; > out.fits` writes a file (.fits, .csv, .tsv, .json).',
  usage: 'desfs sql [-c SQL | -l FILE | SQL...] [--timeout DURATION] [--db FILE] [--state-dir DIR]',
  options: {
    command: { type: 'string', short: 'c', value: 'SQL', help: 'run one statement (end it with `; > FILE` to write a file)' },
    loadsql: {
      type: 'string',
      short: 'l',
      value: 'FILE',
      help: 'run the statements in FILE, each ending with `;` and optionally `> OUTFILE`',
    },
    timeout: {
      type: 'string',
      value: 'DURATION',
      help: 'stop a query that runs longer (e.g. 30s, 10m; 0 for none; default: the sql_timeout setting, 60s)',
    },
    ...settingOptions(['db', 'state_dir']),
  },
  details: [
    'Queries go through the running daemon (never stalling its mount); with no daemon, or with --db, they run on the DB directly.',
    'Only read-only statements that return rows are accepted: writes, ATTACH/DETACH, PRAGMAs that change state and',
    'load_extension are refused. On a terminal results print as a table, into a pipe as TSV (the found line then goes to stderr).',
    'Shell and scripts also take `describe_table NAME` and `find_tables PATTERN`. Ctrl-C cancels the running query.',
  ].join('\n'),
  async run({ flags, positionals }) {
    const given = [flags.command !== undefined, flags.loadsql !== undefined, positionals.length > 0].filter(Boolean).length
    if (given > 1) throw new UserError('give the query one way: -c SQL, -l FILE, or as arguments', EXIT.USAGE)
    const sflags = settingFlags(flags)
    const settings = resolveSettings(sflags)
    let timeoutMs: number | undefined
    if (typeof flags.timeout === 'string') {
      try {
        timeoutMs = parseDurationIn(flags.timeout, DURATION_RANGES.sql_timeout)
      } catch (err) {
        throw new UserError(`--timeout: ${(err as Error).message}`, EXIT.USAGE)
      }
    }
    const stateDir = resolve(settings.get('state_dir')!.value!)
    const sock = socketPath(stateDir)
    const viaDaemon = sflags.db === undefined && (await daemonRunning(sock))
    const target = viaDaemon ? daemonTarget(sock) : directTarget(resolve(settings.get('db')!.value!), sqlTimeoutMs(settings))
    const session: SqlSession = { target, timeoutMs, tty: !!process.stdout.isTTY }
    // `desfs sql ... | head`: a closed pipe ends the query quietly.
    let pipeClosed = false
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err
      pipeClosed = true
      current?.abort()
    })
    try {
      if (flags.command === undefined && flags.loadsql === undefined && positionals.length === 0) return await runShell(session, stateDir)
      let statements: ScriptStatement[]
      if (typeof flags.loadsql === 'string') {
        const text = await readFile(flags.loadsql, 'utf8').catch((err: NodeJS.ErrnoException) => {
          throw new UserError(`cannot read ${flags.loadsql}: ${err.code ?? err.message}`, EXIT.USAGE)
        })
        const parsed = parseScript(text)
        statements = isBlank(parsed.rest) ? parsed.statements : [...parsed.statements, { sql: parsed.rest }]
      } else {
        const text = typeof flags.command === 'string' ? flags.command : positionals.join(' ')
        const parsed = parseScript(text)
        statements = isBlank(parsed.rest) ? parsed.statements : [...parsed.statements, { sql: parsed.rest }]
        if (statements.length > 1) throw new UserError('-c takes one statement; put several in a file and run it with -l FILE', EXIT.USAGE)
      }
      if (statements.length === 0) throw new UserError('no SQL statement given', EXIT.USAGE)
      for (const st of statements) await cancellable((signal) => runOne(session, st, signal))
      return EXIT.OK
    } catch (err) {
      if (pipeClosed) return EXIT.OK
      throw err
    } finally {
      await target.close()
    }
  },
}
