// desfs headers: a header survey of many archive files, one row per file (or per HDU), written like a
// `desfs sql` result. It runs in the daemon as a job (daemon/jobs/headers.ts): the daemon reads only the
// header bytes through its cache, many files at once, and keeps the rows in the job's record, so the
// survey survives this client (Ctrl-C detaches; --attach ID comes back for the result) and a restart
// of the daemon resumes it.
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { settingOptions, settingFlags, type Command } from './command.js'
import { expandControlPaths } from './control-paths.js'
import { call, callStream, socketPath } from './client.js'
import { ProgressBar } from './progress.js'
import { checkOutputFile, fileSink, stdoutSink, type Sink } from './sql-output.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { columnsOf, parseKeys, type HeadersFile, type HeadersSpec } from '../daemon/jobs/headers.js'
import type { JobProgress, JobRecord } from '../daemon/jobs/jobs.js'
import { tsvField, type Value } from '../daemon/sql/sql-framing.js'

/** Follows a job to its end with a bar of files (on a terminal); undefined when detached by Ctrl-C. */
async function follow(socket: string, id: string): Promise<JobRecord<HeadersSpec> | undefined> {
  const bar = new ProgressBar(`headers ${id}`)
  const res = await callStream(socket, 'GET', `/jobs/watch?id=${encodeURIComponent(id)}`, undefined)
  let final: JobRecord<HeadersSpec> | undefined
  let detached = false
  const onInt = () => {
    detached = true
    bar.done()
    process.stderr.write(
      `detached; the survey goes on in the daemon: desfs headers --attach ${id} for its result, desfs jobs cancel ${id} to stop it\n`,
    )
    res.destroy()
  }
  process.once('SIGINT', onInt)
  try {
    const lines = createInterface({ input: res })
    try {
      for await (const line of lines) {
        const m = JSON.parse(line) as { progress?: JobProgress; job?: JobRecord<HeadersSpec> }
        if (m.job) final = m.job
        else if (m.progress) bar.update(m.progress.filesDone + m.progress.filesFailed, m.progress.files, ' files')
      }
    } catch {
      // The connection broke: said below, unless we broke it ourselves (Ctrl-C).
    }
  } finally {
    process.off('SIGINT', onInt)
    bar.done()
  }
  if (detached) return undefined
  if (!final)
    throw new UserError(
      `the daemon stopped while following headers ${id} (connection lost); the survey resumes when it starts again (desfs mount), then get it with desfs headers --attach ${id}`,
      EXIT.UNAVAILABLE,
    )
  return final
}

/** Writes the rows of a finished survey; one line on stderr per file that could not be read. */
async function output(job: JobRecord<HeadersSpec>, out: string | undefined): Promise<number> {
  if (job.kind !== 'headers') throw new UserError(`job ${job.id} is a ${job.kind} job, not a header survey (see desfs jobs)`, EXIT.USAGE)
  const names = columnsOf(job.spec.keys)
  const sink: Sink = out ? fileSink(out) : stdoutSink(process.stdout.isTTY ? 'table' : 'tsv')
  let rows = 0
  try {
    await sink.begin(names.map((name) => ({ name, type: null })))
    if (sink.kind === 'tsv') await sink.data(Buffer.from(names.join('\t') + '\n'))
    for (const f of job.files as HeadersFile[]) {
      for (const r of f.rows ?? []) {
        rows++
        if (sink.kind === 'tsv') await sink.data(Buffer.from(r.map((v: Value) => tsvField(v)).join('\t') + '\n'))
        else await sink.row(r, JSON.stringify(r))
      }
    }
    await sink.end(rows)
  } catch (err) {
    await sink.abort()
    throw err
  }
  const failed = job.files.filter((f) => f.status !== 'ok')
  for (const f of failed) process.stderr.write(`desfs: cannot read the headers of ${f.path}: ${f.message ?? f.status}\n`)
  if (job.state === 'cancelled') process.stderr.write(`desfs: headers ${job.id} was cancelled; the rows above are the files read before\n`)
  if (out) process.stderr.write(`${rows} rows written to ${out}\n`)
  return failed.length || job.state !== 'done' ? EXIT.FAILURE : EXIT.OK
}

function listLines(file: string): string[] {
  try {
    return (file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8')).split('\n')
  } catch (err) {
    throw new UserError(`cannot read --list ${file}: ${(err as NodeJS.ErrnoException).code}`, EXIT.USAGE)
  }
}

export const headersCommand: Command = {
  name: 'headers',
  summary:
    'Read FITS header keywords of many archive files: one row per file (or per HDU), fetching only the parts of files that hold headers. Runs as a daemon job.',
  usage:
    'desfs headers (PATH... | --list FILE | --query SQL | --tilename T --band B) [--keys KEY,HDU:KEY,...] [--output FILE.fits|.csv|.json|.tsv]\n       desfs headers --attach ID [--output FILE]',
  options: {
    keys: {
      type: 'string',
      short: 'k',
      value: 'KEYS',
      help: 'keywords, comma-separated: KEY (first HDU that has it), N:KEY or EXTNAME:KEY (that HDU), *:KEY (a row per HDU); none: a row per HDU with its EXTNAME and type',
    },
    list: { type: 'string', short: 'l', value: 'FILE', help: 'archive paths, one per line (- for stdin)' },
    query: { type: 'string', value: 'SQL', help: 'a SELECT returning (path, filename, compression) or archive paths' },
    tilename: { type: 'string', value: 'TILE', help: 'coadd tile, e.g. DES2041-5248 (the files of recipe "tile")' },
    band: { type: 'string', value: 'BAND', help: 'band: g, r, i, z or Y (recipe "tile")' },
    output: {
      type: 'string',
      short: 'o',
      value: 'FILE',
      help: 'write the rows to FILE (.fits, .csv, .tsv, .json, optionally .gz) instead of stdout',
    },
    attach: { type: 'string', value: 'ID', help: 'follow a survey already started, then write its rows' },
    ...settingOptions(['state_dir']),
  },
  details:
    'The archive path is the first column; a keyword a file lacks is NULL; T/F values are written as T and F.\nA file that cannot be read (not in the archive, not FITS) is one line on stderr, and the exit code is 1.\nCtrl-C detaches: the survey goes on in the daemon.',
  async run({ flags, positionals }) {
    const socket = socketPath(resolve(resolveSettings(settingFlags(flags)).get('state_dir')!.value!))
    const out = flags.output as string | undefined
    if (out) checkOutputFile(out)
    if (flags.attach) {
      const job = await follow(socket, flags.attach as string)
      return job ? output(job, out) : EXIT.INTERRUPTED
    }
    const keys = (flags.keys as string | undefined) ?? ''
    parseKeys(keys) // a bad key is said here, before the daemon is asked anything
    const body: Record<string, unknown> = { keys, cwd: process.cwd() }
    const given = [
      positionals.length > 0,
      flags.list !== undefined,
      flags.query !== undefined,
      flags.tilename !== undefined || flags.band !== undefined,
    ].filter(Boolean).length
    if (given !== 1)
      throw new UserError('say which files: archive paths, --list FILE, --query SQL, or --tilename T --band B (exactly one)', EXIT.USAGE)
    // A .desfs path (a query-defined directory, a by-name link) stands for the files it selects.
    if (positionals.length) body.paths = expandControlPaths(positionals, { absolute: true })
    if (flags.list !== undefined) body.list = listLines(flags.list as string)
    if (flags.query !== undefined) body.query = flags.query
    if (flags.tilename !== undefined || flags.band !== undefined) {
      if (!flags.tilename || !flags.band)
        throw new UserError('--tilename and --band go together (the files of one tile in one band)', EXIT.USAGE)
      body.recipe = 'tile'
      body.params = { tilename: flags.tilename, band: flags.band }
    }
    const answer = await call<{ id: string; files: number; refused: string[] }>(socket, 'POST', '/headers', body, { timeoutMs: 600_000 })
    for (const r of answer.refused.slice(0, 5)) process.stderr.write(`desfs: refused row ${r}\n`)
    const job = await follow(socket, answer.id)
    return job ? output(job, out) : EXIT.INTERRUPTED
  },
}
