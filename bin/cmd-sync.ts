// desfs sync / desfs jobs: prefetch and pin sets of files through the daemon, and follow the jobs.
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { expandControlPaths } from './control-paths.js'
import { ProgressBar } from './progress.js'
import { resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import type { JobFile, JobProgress, JobRecord } from '../daemon/jobs/jobs.js'
import { formatDuration, formatSize } from '../daemon/units.js'
import { writeFileAtomicSync } from '../daemon/safe-write.js'

function sock(flags: Record<string, unknown>): string {
  return socketPath(resolve(resolveSettings(settingFlags(flags)).get('state_dir')!.value!))
}

function manifestFormat(path: string): 'json' | 'tsv' {
  if (/\.tsv$/i.test(path)) return 'tsv'
  if (/\.json$/i.test(path)) return 'json'
  throw new UserError(`--manifest ${path}: use a .json or .tsv file name`, EXIT.USAGE)
}

/** Writes a manifest as JSON or TSV (by extension): a new file renamed into place, never through a link. */
export function writeManifest(path: string, files: JobFile[]): void {
  if (manifestFormat(path) === 'tsv') {
    const clean = (s: unknown) => String(s ?? '').replace(/[\t\n]/g, ' ')
    const lines = [
      'path\tsize\tstatus\tmessage\turl',
      ...files.map((f) => [f.path, f.size ?? '', f.status, f.message ?? '', f.url ?? ''].map(clean).join('\t')),
    ]
    writeFileAtomicSync(path, lines.join('\n') + '\n', { mode: 0o644 })
  } else {
    writeFileAtomicSync(
      path,
      JSON.stringify(
        files.map(({ path: p, size, status, message, url }) => ({ path: p, size, status, message: message ?? '', url: url ?? '' })),
        null,
        1,
      ) + '\n',
      { mode: 0o644 },
    )
  }
}

function progressText(p: JobProgress): string {
  const eta = p.rate > 0 && p.bytes > p.bytesDone ? `, ETA ${formatDuration(((p.bytes - p.bytesDone) / p.rate) * 1000)}` : ''
  const rate = p.rate > 0 ? `, ${formatSize(p.rate)}/s` : ''
  return `${p.filesDone + p.filesFailed}/${p.files} files, ${formatSize(p.bytesDone)} of ${formatSize(p.bytes)}${rate}${eta}${p.filesFailed ? `, ${p.filesFailed} failed` : ''}`
}

/**
 * Follows a job until it ends: a bar on a TTY, a line every 10 s otherwise. Ctrl-C detaches (the job
 * goes on in the daemon). Resolves with the final record, or undefined when detached.
 */
export function attach(socket: string, id: string, label = 'sync'): Promise<JobRecord | undefined> {
  return new Promise((done, fail) => {
    const bar = new ProgressBar(`${label} ${id}`)
    let lastLine = 0
    let final: JobRecord | undefined
    // The daemon died (kill -9, a crash) while we followed: the job is kept in its state dir and
    // resumes when it starts again, so say that, once, rather than crash on the reset connection.
    const gone = () => {
      bar.done()
      fail(
        new UserError(
          `the daemon stopped while following ${label} ${id} (connection lost); the job resumes when it starts again (desfs mount), then follow it with desfs sync --attach ${id}`,
          EXIT.UNAVAILABLE,
        ),
      )
    }
    const req = request({ socketPath: socket, method: 'GET', path: `/jobs/watch?id=${encodeURIComponent(id)}` }, (res) => {
      res.on('error', gone)
      if ((res.statusCode ?? 500) >= 400) {
        let text = ''
        res.on('data', (c: Buffer) => (text += c))
        res.on('end', () =>
          fail(new UserError((JSON.parse(text || '{}') as { error?: string }).error ?? `HTTP ${res.statusCode}`, EXIT.FAILURE)),
        )
        return
      }
      const lines = createInterface({ input: res })
      lines.on('error', gone) // readline passes on the response's errors
      lines.on('line', (line) => {
        const m = JSON.parse(line) as { progress?: JobProgress; job?: JobRecord }
        if (m.job) final = m.job
        else if (m.progress) {
          const p = m.progress
          bar.update(p.bytesDone, p.bytes, ' bytes')
          if (!process.stderr.isTTY && Date.now() - lastLine > 10_000) {
            lastLine = Date.now()
            process.stderr.write(`${label} ${id}: ${progressText(p)}\n`)
          }
        }
      })
      lines.on('close', () => {
        if (!final && !res.complete) return gone()
        bar.done()
        done(final)
      })
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
        fail(new UserError('no desfs daemon is running: start one with desfs mount', EXIT.UNAVAILABLE))
      else gone()
    })
    process.once('SIGINT', () => {
      bar.done()
      process.stderr.write(
        `detached; the job goes on in the daemon: desfs jobs show ${id} for its result, desfs jobs cancel ${id} to stop it\n`,
      )
      req.destroy()
      done(undefined)
    })
    req.end()
  })
}

/** Prints the outcome and writes the manifest; returns the exit code. */
export function report(job: JobRecord, manifest: string | undefined, out: NodeJS.WritableStream = process.stdout): number {
  if (manifest) writeManifest(manifest, job.files)
  const ok = job.files.filter((f) => f.status === 'ok')
  const failed = job.files.filter((f) => f.status === 'failed')
  const bytes = ok.reduce((a, f) => a + (f.size ?? 0), 0)
  const fetched = ok.reduce((a, f) => a + (f.fetched ?? 0), 0)
  out.write(
    `${job.kind} ${job.id} ${job.state}: ${ok.length} of ${job.files.length} files (${formatSize(bytes)}, ${formatSize(fetched)} transferred)${failed.length ? `, ${failed.length} failed` : ''}\n`,
  )
  for (const f of failed.slice(0, 20)) out.write(`  failed ${f.path}: ${f.message}\n`)
  if (failed.length > 20) out.write(`  ... and ${failed.length - 20} more (see the manifest: --manifest FILE.tsv)\n`)
  return job.state === 'done' ? EXIT.OK : EXIT.FAILURE
}

export const syncCommand: Command = {
  name: 'sync',
  summary:
    'Prefetch and pin files through the daemon: everything for a tile and band, a recipe, a list of paths, or a query. Runs as a daemon job that survives the client.',
  usage:
    'desfs sync (--tilename T --band B | --recipe NAME [--param K=V] | PATH... | --list FILE | --query SQL) [--dry-run] [--manifest FILE.json|.tsv]\n       desfs sync --attach ID | --recipes',
  options: {
    tilename: { type: 'string', value: 'TILE', help: 'coadd tile, e.g. DES2041-5248 (recipe "tile")' },
    band: { type: 'string', value: 'BAND', help: 'band: g, r, i, z or Y (recipe "tile")' },
    recipe: { type: 'string', value: 'NAME', help: 'a named recipe (see --recipes)' },
    param: { type: 'string', multiple: true, value: 'K=V', help: 'a recipe parameter (repeatable)' },
    list: { type: 'string', short: 'l', value: 'FILE', help: 'archive paths, one per line' },
    query: { type: 'string', value: 'SQL', help: 'a SELECT returning (path, filename, compression) or archive paths' },
    'dry-run': { type: 'boolean', short: 'n', help: 'print the files with sizes and totals; fetch nothing' },
    'no-pin': { type: 'boolean', help: 'fetch without pinning (the cache may evict the files later)' },
    manifest: { type: 'string', value: 'FILE', help: 'write the manifest (path, size, status, message, url) as .json or .tsv' },
    attach: { type: 'string', value: 'ID', help: 'follow a running job' },
    recipes: { type: 'boolean', help: 'list the recipes' },
    ...settingOptions(['state_dir']),
  },
  details:
    'PATHs are archive paths or paths in the mount; one under $DESDATA/.desfs (a recipe directory, a by-name link) means the files it selects.\nExit code 0 when every file was synced, 1 when any failed (see the manifest), 4 without a daemon.\nCtrl-C detaches: the job goes on in the daemon.',
  async run({ flags, positionals }) {
    const socket = sock(flags)
    const manifest = flags.manifest as string | undefined
    if (manifest) manifestFormat(manifest) // fail early on a bad name
    if (flags.recipes) {
      const recipes = await call<{ name: string; description: string; params: string[]; file: string }[]>(socket, 'GET', '/recipes')
      for (const r of recipes)
        process.stdout.write(
          `${r.name}${r.params.length ? ` (${r.params.map((p) => `--${p}`).join(' ')})` : ''}\n  ${r.description}\n  ${r.file}\n`,
        )
      return EXIT.OK
    }
    if (flags.attach) {
      const job = await attach(socket, flags.attach as string)
      return job ? report(job, manifest) : EXIT.INTERRUPTED
    }
    const body: Record<string, unknown> = { pin: !flags['no-pin'], dryRun: !!flags['dry-run'] }
    const params: Record<string, string> = {}
    for (const kv of (flags.param as string[] | undefined) ?? []) {
      const i = kv.indexOf('=')
      if (i < 1) throw new UserError(`--param ${kv}: use NAME=VALUE`, EXIT.USAGE)
      params[kv.slice(0, i)] = kv.slice(i + 1)
    }
    if (flags.tilename) params.tilename = flags.tilename as string
    if (flags.band) params.band = flags.band as string
    if (flags.recipe || Object.keys(params).length) {
      body.recipe = (flags.recipe as string | undefined) ?? 'tile'
      body.params = params
    }
    if (flags.list || positionals.length) {
      let text = ''
      try {
        if (flags.list) text = flags.list === '-' ? readFileSync(0, 'utf8') : readFileSync(flags.list as string, 'utf8')
      } catch (err) {
        throw new UserError(`cannot read --list ${flags.list}: ${(err as NodeJS.ErrnoException).code}`, EXIT.USAGE)
      }
      // Paths named on the command line join the list; .desfs paths stand for the files they select.
      const lines = [
        ...positionals,
        ...text
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l && !l.startsWith('#')),
      ]
      body.list = expandControlPaths(lines)
    }
    if (flags.query) body.query = flags.query
    const answer = await call<{ id?: string; files: number | JobFile[]; bytes: number; refused: string[] }>(socket, 'POST', '/sync', body, {
      timeoutMs: 600_000,
    })
    for (const r of answer.refused.slice(0, 5)) process.stderr.write(`desfs: refused row ${r}\n`)
    if (flags['dry-run']) {
      const files = answer.files as JobFile[]
      for (const f of files)
        process.stdout.write(
          `${f.status === 'failed' ? 'MISSING'.padStart(10) : formatSize(f.size ?? 0).padStart(10)}  ${f.path}${f.message ? `  (${f.message})` : ''}\n`,
        )
      const missing = files.filter((f) => f.status === 'failed').length
      process.stdout.write(`${files.length} files, ${formatSize(answer.bytes)}${missing ? `, ${missing} not available` : ''}\n`)
      if (manifest) writeManifest(manifest, files)
      return missing ? EXIT.FAILURE : EXIT.OK
    }
    process.stderr.write(`sync job ${answer.id} started: ${answer.files} files, ${formatSize(answer.bytes)}\n`)
    const job = await attach(socket, answer.id!)
    return job ? report(job, manifest) : EXIT.INTERRUPTED
  },
}

export const jobsCommand: Command = {
  name: 'jobs',
  summary: "List the daemon's jobs, show one (its manifest), or cancel one.",
  usage: 'desfs jobs [list | show ID [--manifest FILE] | cancel ID]',
  options: {
    manifest: { type: 'string', value: 'FILE', help: 'with show: write the manifest as .json or .tsv' },
    json: { type: 'boolean', help: 'print JSON' },
    ...settingOptions(['state_dir']),
  },
  async run({ flags, positionals }) {
    const socket = sock(flags)
    const [verb = 'list', id] = positionals
    if (verb === 'list' || verb === 'ls') {
      const list = await call<(JobProgress & { kind: string; createdAt: string })[]>(socket, 'GET', '/jobs')
      if (flags.json) process.stdout.write(JSON.stringify(list, null, 1) + '\n')
      else if (!list.length) process.stdout.write('no jobs\n')
      else for (const j of list) process.stdout.write(`${j.id}  ${j.kind}  ${j.state.padEnd(9)}  ${j.createdAt}  ${progressText(j)}\n`)
      return EXIT.OK
    }
    if (!id) throw new UserError(`desfs jobs ${verb} needs a job ID (see desfs jobs)`, EXIT.USAGE)
    if (verb === 'cancel') {
      await call(socket, 'POST', '/jobs/cancel', { id })
      process.stdout.write(`cancelled ${id}\n`)
      return EXIT.OK
    }
    if (verb === 'show') {
      const job = await call<JobRecord>(socket, 'GET', `/jobs/show?id=${encodeURIComponent(id)}`)
      if (flags.json) {
        process.stdout.write(JSON.stringify(job, null, 1) + '\n')
        return EXIT.OK
      }
      return report(job, flags.manifest as string | undefined)
    }
    throw new UserError(`desfs jobs: unknown action '${verb}' (list, show, cancel)`, EXIT.USAGE)
  },
}
