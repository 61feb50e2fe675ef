// Wires sync and get jobs into a started daemon: the cache's whole-file fetch, the tree's facts, the
// SQL engine for recipes, pinning, and resuming what a previous daemon left unfinished.
import { join } from 'node:path'
import { JobManager, type JobRunner } from './jobs.js'
import type { JobRouteDeps } from '../control/routes-jobs.js'
import type { SqlEngine } from '../sql/sql-engine.js'
import { getRunner, syncRunner, type FetchDeps } from './sync.js'
import type { BlockStore } from '../../cache/block-store.js'
import type { Fetcher } from '../../cache/fetcher.js'
import type { SourceSet } from '../../cache/sources/source-set.js'
import { MISSING } from '../../fs/facts.js'
import type { Tree } from '../../fs/tree.js'

/** Files a job fetches at once (each in a few parallel ranged requests). */
export const JOB_PARALLELISM = 8

export interface JobParts {
  stateDir: string
  mountpoint: string
  tree: Tree
  store: BlockStore
  fetcher: Fetcher
  sources: SourceSet
  sql: SqlEngine
  /** More kinds of job (registered before unfinished jobs resume, so theirs can resume too). */
  runners?: JobRunner<never>[]
}

/** The daemon's fetch side of jobs. */
export function daemonFetchDeps(p: Pick<JobParts, 'tree' | 'store' | 'fetcher' | 'sources' | 'mountpoint'>): FetchDeps {
  return {
    async facts(rel) {
      const f = await p.tree.fileFacts(rel)
      if (f.size === MISSING) throw new Error('not in the archive (HTTP 404)')
      return f
    },
    async fetchWhole(rel, facts, signal, onBytes) {
      const file = p.store.file(rel, facts.size, facts.adler32)
      const fetched = await p.fetcher.fetchWhole(file, signal, onBytes)
      return { fetched, cacheFile: file.dataPath }
    },
    async evict(rel) {
      await p.store.evict([rel])
    },
    locate: (rel) => p.sources.locate(rel),
    mounted: (rel) => join(p.mountpoint, rel),
  }
}

export function startJobs(p: JobParts): { jobs: JobManager; deps: JobRouteDeps } {
  const jobs = new JobManager(p.stateDir)
  const fetchDeps = daemonFetchDeps(p)
  jobs.register(syncRunner(fetchDeps, JOB_PARALLELISM))
  jobs.register(getRunner(fetchDeps, JOB_PARALLELISM))
  for (const r of p.runners ?? []) jobs.register(r)
  const deps: JobRouteDeps = {
    select: (sql, params) => p.sql.all(sql, { params }),
    tree: p.tree,
    locate: fetchDeps.locate,
    pin: (files) => void p.store.pin(files),
    mountpoint: p.mountpoint,
  }
  jobs.resume()
  return { jobs, deps }
}
