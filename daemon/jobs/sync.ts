// Sync: prefetch a set of archive files into the cache and pin them, as a daemon job. The set comes
// from a recipe (named SQL with parameters), a list of paths, or the user's own query; each file is
// fetched whole (blocks already cached are not fetched again, so a resumed job transfers only what is
// missing), checked against the archive's Adler-32, and pinned.
import { EXIT, UserError } from '../errors.js'
import type { JobFile, JobRunner } from './jobs.js'
import { recipeWithParams } from '../catalog/recipes.js'
import { checkRow, describeRow } from '../../fs/tree-rules.js'
import type { FileFacts } from '../../fs/facts.js'
import { isPlaced, place, type PlaceMode } from '../catalog/materialize.js'
import type { Tree } from '../../fs/tree.js'

export interface SyncSpec {
  recipe?: string
  params?: Record<string, string>
  /** Archive-relative paths. */
  list?: string[]
  query?: string
  /** Pin what was fetched (sync does; get only needs the bytes). */
  pin: boolean
}

export interface GetSpec {
  /** Destination: a real DESDATA directory, never the mount. */
  desdata: string
  mode: PlaceMode
  force: boolean
}

/** What runs a file of a sync or get job: facts from the archive, and the cache's whole-file fetch. */
export interface FetchDeps {
  /** The file's size and checksum; rejects when the archive does not have it. */
  facts(rel: string): Promise<FileFacts>
  /** Makes the whole file present and checked in the cache; resolves with bytes transferred and the cache file. */
  fetchWhole(
    rel: string,
    facts: FileFacts,
    signal: AbortSignal,
    onBytes: (n: number) => void,
  ): Promise<{ fetched: number; cacheFile: string }>
  /** Drops a file's cached copy (get --force). */
  evict(rel: string): Promise<void>
  locate(rel: string): string
  /** The file under the mount, for symlinks (undefined without a mount). */
  mounted?: (rel: string) => string
}

/** What choosing and planning a sync needs. */
export interface SelectDeps {
  /** Runs a read-only SELECT off the event loop; rows as arrays. */
  select(sql: string, params: Record<string, string>): Promise<unknown[][]>
  tree: Tree
  locate(rel: string): string
}

/** Normalises a path given by a person: strips a leading '/', './' or the mountpoint. */
export function archivePath(p: string, mountpoint?: string): string {
  let s = p.trim()
  if (mountpoint && (s === mountpoint || s.startsWith(mountpoint + '/'))) s = s.slice(mountpoint.length)
  return s.replace(/^(\.\/|\/)+/, '')
}

/** Turns query rows of (path, filename, compression), or of one full path, into archive paths. */
export function rowsToPaths(rows: unknown[][]): { paths: string[]; refused: string[] } {
  const paths: string[] = []
  const refused: string[] = []
  const seen = new Set<string>()
  for (const row of rows) {
    let rel: string
    if (row.length >= 3) {
      const c = checkRow(row[0], row[1], row[2])
      if (typeof c === 'string') {
        refused.push(`${describeRow(row[0], row[1], row[2])} (${c})`)
        continue
      }
      rel = [...c.dir, c.name].join('/')
    } else {
      const full = String(row[0] ?? '')
      const slash = full.lastIndexOf('/')
      const c = checkRow(slash < 0 ? '' : full.slice(0, slash), full.slice(slash + 1), null)
      if (typeof c === 'string') {
        refused.push(`${full} (${c})`)
        continue
      }
      rel = [...c.dir, c.name].join('/')
    }
    if (!seen.has(rel)) {
      seen.add(rel)
      paths.push(rel)
    }
  }
  return { paths, refused }
}

/**
 * The archive paths of a `desfs get`, each checked. Paths are named one by one, so one the archive
 * tree cannot hold ('..', an empty segment, a control character) fails the whole command instead of
 * being dropped from it.
 */
export function getPaths(given: string[], mountpoint?: string): string[] {
  const { paths, refused } = rowsToPaths(given.map((p) => [archivePath(p, mountpoint)]))
  if (refused.length) {
    const more = refused.length > 1 ? ` (and ${refused.length - 1} more)` : ''
    throw new UserError(`not a path inside the archive tree: ${refused[0]}${more}; give archive paths such as OPS/finalcut/...`, EXIT.USAGE)
  }
  return paths
}

/** The archive paths a sync spec names, without learning anything from the archive yet. */
export async function selectPaths(
  spec: Pick<SyncSpec, 'recipe' | 'params' | 'list' | 'query'>,
  deps: Pick<SelectDeps, 'select'>,
): Promise<{ paths: string[]; refused: string[] }> {
  const given = [spec.recipe !== undefined, spec.list !== undefined, spec.query !== undefined].filter(Boolean).length
  if (given !== 1)
    throw new UserError('say what to sync: --tilename/--band (or --recipe NAME), --list FILE, or --query SQL (exactly one)', EXIT.USAGE)
  if (spec.list) return rowsToPaths(spec.list.filter((l) => l.trim() && !l.trim().startsWith('#')).map((l) => [archivePath(l)]))
  if (spec.query) {
    if (!/^\s*(WITH|SELECT)\b/i.test(spec.query))
      throw new UserError('--query must be a SELECT returning (path, filename, compression) or one column of archive paths', EXIT.USAGE)
    return rowsToPaths(await deps.select(spec.query, {}))
  }
  const { recipe, values } = recipeWithParams(spec.recipe!, spec.params ?? {})
  return rowsToPaths(await deps.select(recipe.sql, values))
}

/** Learns every file's facts (one listing per directory) with bounded concurrency. */
export async function planFiles(paths: string[], deps: Pick<SelectDeps, 'tree' | 'locate'>, concurrency = 8): Promise<JobFile[]> {
  const files: JobFile[] = paths.map((path) => ({ path, size: null, status: 'pending', url: deps.locate(path) }))
  let next = 0
  const worker = async () => {
    for (let i = next++; i < files.length; i = next++) {
      const f = files[i]!
      try {
        const node = await deps.tree.resolve('/' + f.path)
        if (node.kind !== 'file') throw new Error('is a directory')
        f.size = node.facts.size
      } catch (err) {
        f.status = 'failed'
        f.message = (err as { errno?: number }).errno === 2 ? 'not in the metadata DB, or not in the archive' : (err as Error).message
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, worker))
  return files
}

async function fetchFile(deps: FetchDeps, file: JobFile, signal: AbortSignal, onBytes: (n: number) => void) {
  const facts = await deps.facts(file.path)
  const got = await deps.fetchWhole(file.path, facts, signal, onBytes)
  return { facts, ...got }
}

/** Sync: fetch whole (the job's files were pinned when it was submitted). */
export function syncRunner(deps: FetchDeps, parallelism: number): JobRunner<SyncSpec> {
  return {
    kind: 'sync',
    parallelism,
    async runFile(_job, file, signal, onBytes) {
      const { facts, fetched } = await fetchFile(deps, file, signal, onBytes)
      return { size: facts.size, fetched, url: deps.locate(file.path) }
    },
  }
}

/** Get: fetch whole into the cache, then place under DESDATA (a copy, reflinked where possible, or a symlink). */
export function getRunner(deps: FetchDeps, parallelism: number): JobRunner<GetSpec> {
  return {
    kind: 'get',
    parallelism,
    async runFile(job, file, signal, onBytes) {
      const { desdata, force } = job.spec
      // A job recorded by an older desfs may say 'hardlink': it gets a copy (see materialize.ts).
      const mode: PlaceMode = job.spec.mode === 'symlink' ? 'symlink' : 'copy'
      const facts = await deps.facts(file.path)
      const url = deps.locate(file.path)
      const mounted = deps.mounted?.(file.path)
      if (mode === 'symlink' && !mounted) throw new Error('--mode symlink needs a running mount (desfs mount)')
      if (!force && (await isPlaced(desdata, file.path, facts.size, facts.adler32, mode, mounted)))
        return { size: facts.size, fetched: 0, url, message: 'already there' }
      if (mode === 'symlink') {
        await place(desdata, { rel: file.path, size: facts.size, adler32: facts.adler32, cacheFile: '', mounted, mode })
        return { size: facts.size, fetched: 0, url, message: 'symlinked' }
      }
      if (force) await deps.evict(file.path)
      const { fetched, cacheFile } = await deps.fetchWhole(file.path, facts, signal, onBytes)
      const how = await place(desdata, { rel: file.path, size: facts.size, adler32: facts.adler32, cacheFile, mode })
      return {
        size: facts.size,
        fetched,
        url,
        message: how === 'reflink' ? 'copied (reflink: shares disk blocks with the cache)' : 'copied',
      }
    },
  }
}
