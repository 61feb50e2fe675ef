// Control-socket route for `desfs headers`:
//   POST /headers {paths | list | query | recipe+params, keys} -> {id, files, columns, refused}
// The job is then followed and read with the job routes (/jobs/watch, /jobs/show), like a sync.
import { isAbsolute, resolve } from 'node:path'
import { HttpError, type ControlServer } from './control.js'
import { columnsOf, parseKeys, type HeadersSpec } from '../jobs/headers.js'
import { jobsOr503, type JobsReady } from './routes-jobs.js'
import { getPaths, planFiles, selectPaths, type SyncSpec } from '../jobs/sync.js'

interface HeadersRequest {
  paths?: string[]
  recipe?: string
  params?: Record<string, string>
  list?: string[]
  query?: string
  keys?: string
  /** The client's working directory: relative paths inside the mount are taken from there. */
  cwd?: string
}

export function registerHeadersRoutes(control: ControlServer, started: () => JobsReady | undefined): void {
  control.route('POST', '/headers', async (_req, _res, body) => {
    const { jobs, deps } = jobsOr503(started)
    const b = (body ?? {}) as HeadersRequest
    const keys = parseKeys(typeof b.keys === 'string' ? b.keys : '')
    let paths: string[]
    let refused: string[] = []
    if (Array.isArray(b.paths) && b.paths.length) {
      if (!b.paths.every((p) => typeof p === 'string')) throw new HttpError(400, 'paths must be strings')
      // `desfs headers *.fits` run inside the mount names files relative to the mount's directory.
      const cwd = typeof b.cwd === 'string' && isAbsolute(b.cwd) ? b.cwd : undefined
      const inMount = (p: string) => (cwd && !isAbsolute(p) && resolve(cwd, p).startsWith(deps.mountpoint + '/') ? resolve(cwd, p) : p)
      paths = getPaths(b.paths.map(inMount), deps.mountpoint)
    } else {
      const spec: Omit<SyncSpec, 'pin'> = {}
      if (b.recipe !== undefined) spec.recipe = b.recipe
      if (b.params) spec.params = b.params
      if (b.list) spec.list = b.list
      if (b.query !== undefined) spec.query = b.query
      ;({ paths, refused } = await selectPaths(spec, deps))
    }
    if (paths.length === 0)
      throw new HttpError(
        400,
        `no files to read: the selection matched none${refused.length ? ` (${refused.length} rows refused, e.g. ${refused[0]})` : ''}`,
      )
    const files = await planFiles(paths, deps)
    const spec: HeadersSpec = { keys }
    const job = jobs.submit('headers', spec, files)
    return { id: job.id, files: files.length, columns: columnsOf(keys), refused }
  })
}
