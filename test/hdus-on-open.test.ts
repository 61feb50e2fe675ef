// The HDU walk on first open, through a real mount: an open and a small read of a FITS file's first
// bytes record its HDU index in the facts (no getxattr asked), so a later daemon answers
// user.desfs.hdus with no request at all; a file that is not FITS gets its empty index for no request
// beyond the reader's own; a file complete in the cache is walked from disk. And, in process, the
// bound on walks started by opens: beyond it they are dropped, not queued.
import t from 'tap'
import Database from 'better-sqlite3'
import { openSync, writeSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, until, needTool } from './helpers.js'
import { addSurveyFiles } from './bench/headers.js'
import { HeaderReader, BACKGROUND_WALKS, type HeaderParts } from '../daemon/jobs/headers-index.js'
import type { HduInfo } from '../fs/fits-hdus.js'

t.jobs = 1

/** The HDU index the daemon recorded for a file (the facts DB, read beside the daemon), if any. */
function recorded(stateDir: string, rel: string): string | undefined {
  const db = new Database(join(stateDir, 'facts.sqlite'), { readonly: true, fileMustExist: true })
  try {
    return db.prepare('SELECT hdus FROM file_hdus WHERE path = ?').pluck().get(rel) as string | undefined
  } finally {
    db.close()
  }
}

/** Removes a file's recorded index (the daemon stopped), as if it had never been walked. */
function unrecord(stateDir: string, rel: string): void {
  const db = new Database(join(stateDir, 'facts.sqlite'))
  try {
    db.prepare('DELETE FROM file_hdus WHERE path = ?').run(rel)
  } finally {
    db.close()
  }
}

t.test('an open walks the HDUs in the background', async (t) => {
  if (!needTool(t, 'getfattr', 'attr')) return
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  // Multi-extension files of 16 MB (sparse), larger than a small file read whole: a read of the
  // first bytes fetches the first blocks only.
  const [fits, notFits, complete] = addSurveyFiles(a.root, a.db, 3, 16e6) as [string, string, string]
  // One is not FITS by content (its name says .fits): same size, first record overwritten.
  const fd = openSync(join(a.root, notFits), 'r+')
  writeSync(fd, Buffer.alloc(2880, 'not fits '), 0, 2880, 0)
  closeSync(fd)
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  t.teardown(() => d.stop())
  // The GETs that moved bytes (the door's redirects to the pool are not fetches of their own).
  const requests = (rel: string) => server.log.filter((r) => r.method === 'GET' && r.path === rel && r.status < 300)
  await run('find', [join(d.mnt, 'OPS/bench/headers'), '-type', 'f']) // the listings first

  await t.test('an open and a read of the first bytes record the index, with no getxattr', async (t) => {
    server.clearLog()
    const r = await run('head', ['-c', '100', join(d.mnt, fits)])
    t.equal(r.code, 0, r.stderr)
    t.ok(await until(() => recorded(d.stateDir, fits) !== undefined, 20_000), 'the index is recorded')
    const hdus = JSON.parse(recorded(d.stateDir, fits) ?? '[]') as HduInfo[]
    t.same(
      hdus.map((h) => [h.index, h.extname, h.type]),
      [
        [0, null, 'image'],
        [1, 'SCI', 'image'],
        [2, 'MSK', 'image'],
        [3, 'WGT', 'image'],
      ],
    )
    t.ok(requests(fits).length > 1, 'the walk fetched the later headers itself (the reader read only the first bytes)')
  })

  await t.test('a file that is not FITS: an empty index, no request beyond the reader’s', async (t) => {
    server.clearLog()
    // A read of 128 KiB from the start (more with the kernel's read-ahead): blocks the reader asks for in one request.
    const r = await run('dd', [`if=${join(d.mnt, notFits)}`, 'of=/dev/null', 'bs=128k', 'count=1'])
    t.equal(r.code, 0, r.stderr)
    t.ok(await until(() => recorded(d.stateDir, notFits) !== undefined, 20_000), 'recorded as not FITS')
    t.equal(recorded(d.stateDir, notFits), '[]')
    // The reader's read is one ranged GET from 0; the walk's first record came with it (a walk that
    // fetched its first record itself would split the reader's read in two).
    const got = requests(notFits)
    t.equal(got.length, 1, `one request: ${got.map((g) => g.range).join(', ')}`)
    t.match(got[0]?.range ?? '', /^bytes=0-/)
  })

  await t.test('a file complete in the cache is walked from disk', async (t) => {
    t.equal((await run('cat', [join(d.mnt, complete)])).code, 0)
    await d.stop()
    unrecord(d.stateDir, complete)
    const again = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, stateDir: d.stateDir, cacheDir: d.cacheDir })
    t.teardown(() => again.stop())
    server.clearLog()
    t.equal((await run('head', ['-c', '100', join(again.mnt, complete)])).code, 0)
    t.ok(await until(() => recorded(again.stateDir, complete) !== undefined, 20_000), 'the index is recorded')
    t.equal((JSON.parse(recorded(again.stateDir, complete) ?? '[]') as HduInfo[]).length, 4)
    t.same(
      requests(complete).map((r) => r.range),
      [],
      'no request',
    )
    await again.stop()
  })

  await t.test('a restart answers user.desfs.hdus from the facts: no request', async (t) => {
    await d.stop()
    // A fresh cache: only the facts could remember the indexes.
    const again = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, stateDir: d.stateDir })
    t.teardown(() => again.stop())
    server.clearLog()
    for (const rel of [fits, notFits]) {
      const r = await run('getfattr', ['--absolute-names', '--only-values', '-n', 'user.desfs.hdus', join(again.mnt, rel)])
      t.equal(r.code, 0, r.stderr)
      t.equal(r.stdout, recorded(again.stateDir, rel), rel)
    }
    t.same(
      server.log.map((r) => `${r.method} ${r.path}`),
      [],
      'no request reached the archive',
    )
    await again.stop()
  })
})

t.test('walks started by opens are bounded: beyond the bound they are dropped, not queued', async (t) => {
  const reads: { resolve: (n: number) => void }[] = []
  const recordedHdus = new Map<string, string>()
  const parts = {
    facts: {
      hdus: (rel: string) => recordedHdus.get(rel),
      recordHdus: (rel: string, json: string) => void recordedHdus.set(rel, json),
    },
    store: { file: (rel: string) => ({ relPath: rel }), hold: () => undefined, release: () => undefined },
    // Each walk's first read waits until the test lets it go: it answers zeros (not FITS).
    fetcher: {
      readInto: (_f: unknown, _pos: number, len: number, buf: Buffer) =>
        new Promise<number>((resolve) => {
          buf.fill(0, 0, len)
          reads.push({ resolve: () => resolve(len) })
        }),
    },
  } as unknown as HeaderParts
  const reader = new HeaderReader(parts)
  const facts = { size: 100_000, adler32: null, mtime: null }
  for (let i = 0; i < 50; i++) reader.walkOnOpen(`f${i}`, facts)
  await new Promise((r) => setImmediate(r))
  t.equal(reads.length, BACKGROUND_WALKS, `${BACKGROUND_WALKS} walks started for 50 opens`)
  reader.walkOnOpen('f0', facts) // already being walked: not a second walk
  for (const r of reads.splice(0)) r.resolve(0)
  t.ok(await until(() => recordedHdus.size === BACKGROUND_WALKS, 5000), 'the walks finished')
  t.same([...recordedHdus.values()], Array(BACKGROUND_WALKS).fill('[]'))
  // Room again: the next open walks; one already recorded does not.
  reader.walkOnOpen('f0', facts)
  reader.walkOnOpen('f49', facts)
  await new Promise((r) => setImmediate(r))
  t.equal(reads.length, 1, 'only the file not recorded yet is walked')
  reads[0]!.resolve(0)
  t.ok(await until(() => recordedHdus.has('f49'), 5000))
})
