// The control routes in process, each built from the explicit dependencies it declares (plain
// objects here, no Daemon, no socket), and the metadata DB file's one identity that /reload, the
// tree's reload and the SQL engine compare.
import t from 'tap'
import { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HttpError, type ControlServer, type Handler } from '../daemon/control/control.js'
import { dbFileIdentity } from '../daemon/catalog/metadata.js'
import { registerCacheRoutes } from '../daemon/control/routes-cache.js'
import { registerJobRoutes, type JobsReady } from '../daemon/control/routes-jobs.js'
import { registerReloadRoutes } from '../daemon/control/routes-reload.js'
import type { BlockStore } from '../cache/block-store.js'
import type { TokenProvider } from '../daemon/token/token.js'
import { tmp } from './helpers.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** A stand-in for the control server that keeps the handlers, and calls one as a request would. */
function fakeControl() {
  const routes = new Map<string, Handler>()
  const control = { route: (method: string, path: string, h: Handler) => routes.set(`${method} ${path}`, h) } as unknown as ControlServer
  const call = async (key: string, body?: unknown, url = 'http://desfs/') => {
    const h = routes.get(key)
    if (!h) throw new Error(`no route ${key}`)
    return h({} as IncomingMessage, {} as ServerResponse, body, new URL(url))
  }
  return { control, call }
}

/** Replaces a file the way a DB download does: a new file renamed over the old one. */
function replace(path: string, content: string): void {
  writeFileSync(path + '.new', content)
  renameSync(path + '.new', path)
}

t.test('dbFileIdentity: one string per file version, empty when the file is gone', async (t) => {
  const db = join(tmp(t), 'metadata.db')
  t.equal(dbFileIdentity(db), '', 'missing')
  writeFileSync(db, 'one')
  const first = dbFileIdentity(db)
  t.match(JSON.parse(first), { dev: Number, ino: Number, size: 3, mtimeMs: Number })
  t.equal(dbFileIdentity(db), first, 'the same file gives the same identity')
  replace(db, 'two') // same size: the inode tells
  t.not(dbFileIdentity(db), first, 'a file renamed over it is another identity')
})

t.test('the DB identity is computed in one place', async (t) => {
  // stat fields that make up the identity, read together outside metadata.ts, would be a second formula.
  const walk = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
    )
  const files = ['daemon', 'fs', 'cache', 'bin'].flatMap((d) => walk(d))
  const twins = files.filter(
    (f) =>
      f !== join('daemon', 'catalog', 'metadata.ts') &&
      /\.ino\b[^\n]*\.(size|mtimeMs)\b|\.(dev|size)\b[^\n]*\.ino\b/.test(readFileSync(join(ROOT, f), 'utf8')),
  )
  t.same(
    twins.map((f) => relative('.', f)),
    [],
    'no module but daemon/catalog/metadata.ts combines dev/ino/size/mtime',
  )
})

t.test('POST /reload: the token and the DB file, from its declared dependencies', async (t) => {
  const db = join(tmp(t), 'metadata.db')
  writeFileSync(db, 'v1')
  const { control, call } = fakeControl()
  let recycled = 0
  let token: TokenProvider | undefined = undefined
  registerReloadRoutes(control, { dbPath: db, token: () => token, recycleSql: () => recycled++ })
  t.same(await call('POST /reload'), { token: null, db: { path: db, present: true, changed: false } }, 'nothing changed; no token yet')
  replace(db, 'v2')
  t.same(await call('POST /reload'), { token: null, db: { path: db, present: true, changed: true } }, 'a replaced DB is noticed')
  t.equal(recycled, 1, 'and SQL told to open it afresh')
  t.match(await call('POST /reload'), { db: { changed: false } }, 'once')
  rmSync(db)
  t.match(await call('POST /reload'), { db: { present: false, changed: true } }, 'a removed DB')
  token = { reload: async () => ({ source: 'file', exp: 2_000_000_000 }) } as unknown as TokenProvider
  t.match(await call('POST /reload'), { token: { source: 'file', expires: '2033-05-18T03:33:20.000Z' } }, 'the token, once there is one')
  t.equal(recycled, 2)
})

t.test('cache and job routes answer 503 until their parts exist', async (t) => {
  const { control, call } = fakeControl()
  let store: BlockStore | undefined = undefined
  registerCacheRoutes(control, {
    mountpoint: '/mnt/D',
    store: () => store,
    fetcher: () => undefined,
    tree: () => undefined,
    sources: () => undefined,
  })
  let ready: JobsReady | undefined = undefined
  registerJobRoutes(control, () => ready)
  await t.rejects(call('GET /cache/stats'), new HttpError(503, 'the daemon is still starting; try again in a moment'))
  await t.rejects(call('GET /jobs'), new HttpError(503, 'the daemon is still starting; try again in a moment'))
  store = {
    summary: () => ({ bytes: 7 }),
    entries: () => [{ path: 'OPS/a.fits', size: 9, bytes: 7, pinned: false, atime: 0 }],
  } as unknown as BlockStore
  t.same(await call('GET /cache/stats'), { bytes: 7, fetch: undefined, sources: undefined })
  t.same(
    await call('GET /cache/list', undefined, 'http://desfs/cache/list?path=/mnt/D/OPS'),
    { entries: [{ path: 'OPS/a.fits', size: 9, cached: 7, pinned: false, atime: '1970-01-01T00:00:00.000Z' }] },
    'paths under the given mountpoint',
  )
  await t.rejects(
    call('POST /cache/pin', { paths: ['OPS/a.fits'] }),
    new HttpError(503, 'the daemon is still starting; try again in a moment'),
    'pinning needs the tree too',
  )
  ready = { jobs: { list: () => [] }, deps: {} } as unknown as JobsReady
  t.same(await call('GET /jobs'), [])
})
