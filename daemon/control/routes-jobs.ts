// Control-socket routes for sync jobs:
//   POST /sync            {recipe, params, list, query, pin, dryRun} -> {id} or the dry-run plan
//   POST /get             {paths, desdata, mode, force} -> {id}
//   GET  /jobs            -> [progress...]
//   GET  /jobs/show?id=   -> the job record (its manifest)
//   GET  /jobs/watch?id=  -> NDJSON progress lines until the job ends, then {"job": record}
//   POST /jobs/cancel     {id}
//   GET  /recipes         -> [{name, description, params, file}]
import type { ServerResponse } from 'node:http'
import { isAbsolute, resolve } from 'node:path'
import { HttpError, type ControlServer } from './control.js'
import type { JobManager, JobRecord } from '../jobs/jobs.js'
import { loadRecipesLenient } from '../catalog/recipes.js'
import { getPaths, planFiles, selectPaths, type GetSpec, type SelectDeps, type SyncSpec } from '../jobs/sync.js'
import { placeModeProblem, type PlaceMode } from '../catalog/materialize.js'

export interface JobRouteDeps extends SelectDeps {
  /** Pins files up front; throws a UserError with the numbers when over the pin cap. */
  pin(files: { rel: string; size: number }[]): void
  mountpoint: string
}

/** The job manager and what jobs select and plan with: there once the daemon has started. */
export interface JobsReady {
  jobs: JobManager
  deps: JobRouteDeps
}

/** The jobs and their dependencies, or a 503 while the daemon is starting. */
export function jobsOr503(started: () => JobsReady | undefined): JobsReady {
  const r = started()
  if (!r) throw new HttpError(503, 'the daemon is still starting; try again in a moment')
  return r
}

interface SyncRequest {
  recipe?: string
  params?: Record<string, string>
  list?: string[]
  query?: string
  pin?: boolean
  dryRun?: boolean
}

function jobOr404(jobs: JobManager, id: string | null): JobRecord {
  const job = id ? jobs.get(id) : undefined
  if (!job) throw new HttpError(404, `no job ${id ?? ''} (see desfs jobs)`)
  return job
}

export function registerJobRoutes(control: ControlServer, started: () => JobsReady | undefined): void {
  const ready = () => jobsOr503(started)
  control.route('POST', '/sync', async (_req, _res, body) => {
    const { jobs, deps } = ready()
    const b = (body ?? {}) as SyncRequest
    const spec: SyncSpec = { pin: b.pin !== false }
    if (b.recipe !== undefined) spec.recipe = b.recipe
    if (b.params) spec.params = b.params
    if (b.list) spec.list = b.list
    if (b.query !== undefined) spec.query = b.query
    const { paths, refused } = await selectPaths(spec, deps)
    const files = await planFiles(paths, deps)
    const bytes = files.reduce((a, f) => a + (f.size ?? 0), 0)
    if (b.dryRun) return { files, bytes, refused }
    if (files.length === 0)
      throw new HttpError(
        400,
        `nothing to sync: the selection matched no files${refused.length ? ` (${refused.length} rows refused, e.g. ${refused[0]})` : ''}`,
      )
    if (spec.pin) deps.pin(files.filter((f) => f.size !== null).map((f) => ({ rel: f.path, size: f.size! })))
    const job = jobs.submit('sync', spec, files)
    return { id: job.id, files: files.length, bytes, refused }
  })

  control.route('POST', '/get', async (_req, _res, body) => {
    const { jobs, deps } = ready()
    const b = (body ?? {}) as { paths?: unknown; desdata?: unknown; mode?: unknown; force?: unknown }
    if (!Array.isArray(b.paths) || !b.paths.length || !b.paths.every((p) => typeof p === 'string'))
      throw new HttpError(400, 'give one or more archive paths')
    if (typeof b.desdata !== 'string' || !isAbsolute(b.desdata)) throw new HttpError(400, 'desdata must be an absolute directory path')
    const desdata = resolve(b.desdata)
    if (desdata === deps.mountpoint || desdata.startsWith(deps.mountpoint + '/') || deps.mountpoint.startsWith(desdata + '/')) {
      throw new HttpError(
        400,
        `${desdata} is (or contains) the desfs mount ${deps.mountpoint}: give a real DESDATA directory with --desdata DIR`,
      )
    }
    const mode = (b.mode ?? 'copy') as PlaceMode
    const problem = placeModeProblem(mode)
    if (problem) throw new HttpError(400, problem)
    const paths = getPaths(b.paths as string[], deps.mountpoint)
    const refused: string[] = []
    const files = await planFiles(paths, deps)
    const spec: GetSpec = { desdata, mode, force: b.force === true }
    const job = jobs.submit('get', spec, files)
    return { id: job.id, files: files.length, bytes: files.reduce((a, f) => a + (f.size ?? 0), 0), refused }
  })

  control.route('GET', '/jobs', () => {
    const { jobs } = ready()
    return jobs.list().map((j) => ({ ...jobs.progress(j.id), kind: j.kind, createdAt: j.createdAt, spec: j.spec }))
  })

  control.route('GET', '/jobs/show', (_req, _res, _body, url) => jobOr404(ready().jobs, url.searchParams.get('id')))

  control.route('POST', '/jobs/cancel', (_req, _res, body) => {
    const { jobs } = ready()
    const job = jobOr404(jobs, (body as { id?: string })?.id ?? null)
    if (!jobs.cancel(job.id)) throw new HttpError(409, `job ${job.id} is ${job.state}, not running`)
    return { ok: true, id: job.id }
  })

  control.route('GET', '/jobs/watch', (req, res: ServerResponse, _body, url) => {
    const { jobs } = ready()
    const job = jobOr404(jobs, url.searchParams.get('id'))
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    const send = () => res.write(JSON.stringify({ progress: jobs.progress(job.id) }) + '\n')
    const finish = (done: JobRecord) => {
      if (done.id !== job.id) return
      cleanup()
      res.end(JSON.stringify({ job: done }) + '\n')
    }
    const timer = setInterval(send, 500)
    const cleanup = () => {
      clearInterval(timer)
      jobs.off('done', finish)
    }
    send()
    if (job.state !== 'running' && job.state !== 'queued') return finish(job)
    jobs.on('done', finish)
    req.on('close', cleanup)
  })

  control.route('GET', '/recipes', () =>
    [...loadRecipesLenient().recipes.values()].map(({ name, description, params, file }) => ({ name, description, params, file })),
  )
}
