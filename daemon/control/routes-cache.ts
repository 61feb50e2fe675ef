// Control routes for the cache (`desfs cache ...`, and sync in a later issue): stats, list, pin,
// unpin, evict and clear. Paths may be given as archive-relative paths (OPS/...), as absolute paths
// under the mountpoint, or relative to the caller's working directory when that is inside the mount;
// they are mapped to archive paths here, as strings, without touching the mount.
import { posix } from 'node:path'
import type { ControlServer } from './control.js'
import { HttpError } from './control.js'
import type { BlockStore, PinRequest } from '../../cache/block-store.js'
import type { Fetcher } from '../../cache/fetcher.js'
import type { SourceSet } from '../../cache/sources/source-set.js'
import { FsError, type Tree } from '../../fs/tree.js'

/** What the cache routes use: the mountpoint, and the read path's parts (undefined while the daemon starts). */
export interface CacheRouteDeps {
  mountpoint: string
  store(): BlockStore | undefined
  fetcher(): Fetcher | undefined
  tree(): Tree | undefined
  sources(): SourceSet | undefined
}

interface PathsBody {
  paths?: unknown
  cwd?: unknown
}

/** Maps a path as the user typed it to an archive-relative path ('' is the whole archive). */
export function archivePath(p: string, cwd: string | undefined, mnt: string): string {
  let abs: string | undefined
  if (p.startsWith('/')) abs = posix.normalize(p)
  else if (cwd && (cwd === mnt || cwd.startsWith(mnt + '/'))) abs = posix.join(cwd, p)
  if (abs !== undefined) {
    abs = abs.replace(/\/+$/, '') || '/'
    if (abs === mnt) return ''
    if (!abs.startsWith(mnt + '/')) throw new HttpError(400, `${p} is not under the mount ${mnt}`)
    return abs.slice(mnt.length + 1)
  }
  const rel = posix
    .normalize(p)
    .replace(/^(\.\/)+/, '')
    .replace(/\/+$/, '')
  if (rel === '.') return ''
  if (rel.split('/').includes('..')) throw new HttpError(400, `${p}: '..' is not allowed in an archive path`)
  return rel
}

function paths(body: unknown, mnt: string): string[] {
  const b = (body ?? {}) as PathsBody
  if (!Array.isArray(b.paths) || b.paths.length === 0 || !b.paths.every((x) => typeof x === 'string'))
    throw new HttpError(400, 'give one or more paths')
  const cwd = typeof b.cwd === 'string' ? b.cwd : undefined
  return (b.paths as string[]).map((p) => archivePath(p, cwd, mnt))
}

export function registerCacheRoutes(control: ControlServer, d: CacheRouteDeps): void {
  const store = (): BlockStore => {
    const s = d.store()
    if (!s) throw new HttpError(503, 'the daemon is still starting; try again in a moment')
    return s
  }

  control.route('GET', '/cache/stats', () => {
    const sources = d.sources()
    return {
      ...store().summary(),
      fetch: d.fetcher()?.stats,
      sources: sources?.sources.map((s) => ({ name: s.name, down: sources.isDown(s) })),
    }
  })

  control.route('GET', '/cache/list', (_req, _res, _body, url) => {
    const prefix = archivePath(url.searchParams.get('path') ?? '', url.searchParams.get('cwd') ?? undefined, d.mountpoint)
    const pinnedOnly = url.searchParams.get('pinned') === '1'
    const entries = store()
      .entries(prefix)
      .filter((e) => (pinnedOnly ? e.pinned : e.bytes > 0 || e.pinned))
    return {
      entries: entries.map((e) => ({
        path: e.path,
        size: e.size,
        cached: e.bytes,
        pinned: e.pinned,
        tier: e.tier,
        atime: new Date(e.atime).toISOString(),
      })),
    }
  })

  control.route('POST', '/cache/pin', async (_req, _res, body) => {
    const s = store()
    const tree = d.tree()
    if (!tree) throw new HttpError(503, 'the daemon is still starting; try again in a moment')
    const reqs: PinRequest[] = []
    for (const rel of paths(body, d.mountpoint)) {
      let node
      try {
        node = await tree.resolve('/' + rel)
      } catch (err) {
        if (err instanceof FsError) throw new HttpError(404, `${rel || '/'}: no such file or directory in the archive tree`)
        throw err
      }
      // A directory pins the files cached under it (whatever is cached of them stays).
      if (node.kind === 'file') reqs.push({ rel: node.rel, size: node.facts.size })
      else for (const e of s.entries(rel)) if (e.bytes > 0) reqs.push({ rel: e.path, size: e.size })
    }
    return s.pin(reqs)
  })

  control.route('POST', '/cache/unpin', (_req, _res, body) => ({ unpinned: store().unpin(paths(body, d.mountpoint)) }))

  control.route('POST', '/cache/evict', async (_req, _res, body) => store().evict(paths(body, d.mountpoint)))

  control.route('POST', '/cache/clear', async (_req, _res, body) => {
    const dryRun = (body as { yes?: unknown } | undefined)?.yes !== true
    return { dryRun, ...(await store().evict([''], { dryRun })) }
  })
}
