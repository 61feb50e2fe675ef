// desfs get (materialise archive files into a real DESDATA, like des-archive-access-download) and
// desfs uri (where a file is, for tools that read remotely).
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, daemonRunning, socketPath } from './client.js'
import { attach, report } from './cmd-sync.js'
import { daemonConfig, resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import type { JobFile, JobRecord } from '../daemon/jobs/jobs.js'
import { placeModeProblem, type PlaceMode } from '../daemon/catalog/materialize.js'
import { archivePath, getPaths, getRunner, type GetSpec } from '../daemon/jobs/sync.js'
import { expandControlPaths } from './control-paths.js'
import { withStandaloneEngine } from './standalone.js'
import { buildSources } from '../cache/setup.js'
import { TokenProvider } from '../daemon/token/token.js'

function readPaths(positionals: string[], list: unknown): string[] {
  const paths = [...positionals]
  if (typeof list === 'string') {
    try {
      paths.push(
        ...(list === '-' ? readFileSync(0, 'utf8') : readFileSync(list, 'utf8'))
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l && !l.startsWith('#')),
      )
    } catch (err) {
      throw new UserError(`cannot read --list ${list}: ${(err as NodeJS.ErrnoException).code}`, EXIT.USAGE)
    }
  }
  if (!paths.length) throw new UserError('give archive paths, or --list FILE with one per line', EXIT.USAGE)
  return expandControlPaths(paths)
}

/** Runs a get without a daemon: the same runner, files a few at a time, in this process. */
async function getStandalone(flags: Record<string, unknown>, paths: string[], spec: GetSpec): Promise<JobRecord<GetSpec>> {
  if (spec.mode === 'symlink')
    throw new UserError('--mode symlink links into the mount: start one with desfs mount first', EXIT.UNAVAILABLE)
  const c = daemonConfig(resolveSettings(settingFlags(flags)), { needMountpoint: false })
  const files: JobFile[] = getPaths(paths, c.mountpoint || undefined).map((path) => ({ path, size: null, status: 'pending' }))
  const job: JobRecord<GetSpec> = {
    id: 'local',
    kind: 'get',
    spec,
    state: 'running',
    createdAt: new Date().toISOString(),
    updatedAt: '',
    files,
  }
  await withStandaloneEngine(c, async (deps) => {
    const runner = getRunner(deps, 4)
    const signal = new AbortController().signal
    const queue = [...files]
    await Promise.all(
      Array.from({ length: runner.parallelism }, async () => {
        for (let f = queue.shift(); f; f = queue.shift()) {
          try {
            Object.assign(f, await runner.runFile(job, f, signal, () => undefined), { status: 'ok' })
          } catch (err) {
            Object.assign(f, { status: 'failed', message: (err as Error).message, url: deps.locate(f.path) })
          }
        }
      }),
    )
  })
  job.state = files.some((f) => f.status === 'failed') ? 'failed' : 'done'
  return job
}

export const getCommand: Command = {
  name: 'get',
  summary:
    "Place archive files into a real DESDATA directory (DESDATA/<archive path>), like des-archive-access-download: through the daemon's cache when one runs, standalone otherwise.",
  usage: 'desfs get PATH... | --list FILE [--desdata DIR] [--mode copy|symlink] [--force] [--manifest FILE]',
  options: {
    list: { type: 'string', short: 'l', value: 'FILE', help: 'archive paths, one per line (- for stdin)' },
    desdata: { type: 'string', short: 'd', value: 'DIR', help: 'destination DESDATA directory [env DESDATA, when it is not the mount]' },
    mode: {
      type: 'string',
      value: 'MODE',
      help: 'copy (default; a reflink, sharing disk blocks with the cache, where the file system offers one) or symlink (into the mount)',
    },
    force: { type: 'boolean', short: 'f', help: 'fetch and place again even when a correct file is there' },
    manifest: { type: 'string', value: 'FILE', help: 'write the manifest (path, size, status, message, url) as .json or .tsv' },
    ...settingOptions(['state_dir', 'cache_dir', 'archive', 'token_file']),
  },
  details:
    "Existing files with the right size and Adler-32 are skipped. Files are written under a temporary name,\nchecked, then renamed. Prints each file's local path; exit code 1 when any file failed.",
  async run({ flags, positionals }) {
    const mode = ((flags.mode as string | undefined) ?? 'copy') as PlaceMode
    const problem = placeModeProblem(mode)
    if (problem) throw new UserError(problem, EXIT.USAGE)
    const paths = readPaths(positionals, flags.list)
    getPaths(paths) // a path outside the archive tree fails here, before anything starts
    const settings = resolveSettings(settingFlags(flags))
    const sock = socketPath(resolve(settings.get('state_dir')!.value!))
    const desdataArg = (flags.desdata as string | undefined) ?? process.env.DESDATA
    if (!desdataArg) throw new UserError('give the destination with --desdata DIR (or set DESDATA)', EXIT.USAGE)
    const desdata = resolve(desdataArg)
    const spec: GetSpec = { desdata, mode, force: !!flags.force }
    let job: JobRecord | undefined
    if (await daemonRunning(sock)) {
      const answer = await call<{ id: string; files: number }>(
        sock,
        'POST',
        '/get',
        { paths, desdata, mode, force: spec.force },
        { timeoutMs: 600_000 },
      )
      job = await attach(sock, answer.id, 'get')
      if (!job) return EXIT.INTERRUPTED
    } else {
      job = await getStandalone(flags, paths, spec)
    }
    for (const f of job.files) if (f.status === 'ok') process.stdout.write(`${resolve(desdata, f.path)}\n`)
    return report(job, flags.manifest as string | undefined, process.stderr)
  },
}

export const uriCommand: Command = {
  name: 'uri',
  summary: 'Print where each path is in the archive (its URL, or S3 URI with sources = s3,...), for tools that read remotely.',
  usage: 'desfs uri PATH...',
  options: settingOptions(['archive', 'sources', 's3_url', 'mirror_dir']),
  async run({ flags, positionals }) {
    if (!positionals.length) throw new UserError('give one or more archive paths', EXIT.USAGE)
    const c = daemonConfig(resolveSettings(settingFlags(flags)), { needMountpoint: false })
    // The first configured source's address (archive URL, S3 URI or mirror path; never a site cache's copy); nothing is contacted.
    const sources = buildSources(c, new TokenProvider())
    for (const p of positionals) process.stdout.write(`${sources.locate(archivePath(p, c.mountpoint || undefined))}\n`)
    await sources.close()
    return EXIT.OK
  },
}
