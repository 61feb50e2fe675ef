// The tree at scale: a 100,000-row metadata DB (real DES layout, hostile rows of every kind) builds,
// mounts, and every path resolves; getfattr and df work on it; a restart reuses the index. Sizes are
// pre-seeded in the state dir, so the archive server must see no request at all.
import t from 'tap'
import { join } from 'node:path'
import { startDaemon, startServer, run, needTool, tmp } from './helpers.js'
import { seededTree, findAll, dirsOf, diffKeys } from './tree-fixtures.js'

t.jobs = 1

t.test('a 100k-row DB builds, mounts, and every path resolves', async (t) => {
  const s = seededTree(t, 100_000)
  const { server, tokenFile } = await startServer(t, tmp(t, 'desfs-empty-archive-'))
  const d = await startDaemon(t, { db: s.db, archive: server.archiveUrl, tokenFile, stateDir: s.stateDir })
  t.match(d.log(), /info tree index built .*files=100000 /, 'the index was built from the DB')

  await t.test('find shows exactly the valid rows, with their sizes, and nothing hostile', async (t) => {
    const got = await findAll(d.mnt)
    t.equal(got.code, 0, `find exits 0 ${got.stderr.slice(0, 300)}`)
    t.equal(got.files.size, 100_000, 'find -type f counts the valid rows')
    t.same(diffKeys(got.files.keys(), s.sizes.keys()), { missing: [], extra: [] }, 'the same paths as the DB')
    let wrong = 0
    for (const [p, size] of got.files) if (s.sizes.get(p) !== size) wrong++
    t.equal(wrong, 0, 'every size is the known one (one getattr per file)')
    t.same(diffKeys(got.dirs, dirsOf(s.sizes.keys())), { missing: [], extra: [] }, 'directories: exactly those of valid rows')
    const hostileNames = s.gen.hostile
      .filter((h) => h.why !== 'duplicate')
      .map((h) => h.row.split('/').pop()!)
      .filter((n) => n && n !== 'red')
    t.same(
      [...got.files.keys()].filter((p) => hostileNames.some((n) => p.endsWith('/' + n))),
      [],
      'no hostile name anywhere',
    )
    t.equal(server.log.length, 0, 'the archive was never asked')
  })

  await t.test('hostile rows do not resolve and are reported once', async (t) => {
    for (const h of s.gen.hostile) {
      // Not checkable by a stat through the mount: a duplicate is a real file, '..' is resolved by
      // the kernel before desfs sees it, and NUL or 4000+ bytes cannot be passed to stat at all.
      if (h.why === 'duplicate' || h.row.includes('..') || h.row.includes('\0') || h.row.startsWith('/') || h.row.length > 3000) continue
      const r = await run('stat', ['-c', '%F', `${d.mnt}/${h.row}`])
      if (h.row.endsWith('/p01/red')) t.equal(r.stdout.trim(), 'directory', `${h.why}: the directory keeps its name, the file is refused`)
      else t.not(r.code, 0, `${h.why}: ${h.row.slice(0, 80)} does not resolve`)
    }
    const reports = d.log().match(/metadata rows refused: skipped 18 rows: .*/g) ?? []
    t.equal(reports.length, 1, 'one report line')
    for (const why of new Set(s.gen.hostile.map((h) => h.why))) t.ok(reports[0]?.includes(why), `the report names ${why}`)
  })

  await t.test('getfattr shows the archive URL and the cached bytes; adler32 only once known', async (t) => {
    if (!needTool(t, 'getfattr', 'attr')) return
    const rel = s.gen.sample[0]!
    const file = join(d.mnt, rel)
    const all = await run('getfattr', ['-d', '-m', '-', '--absolute-names', file])
    t.equal(all.code, 0, all.stderr)
    t.match(all.stdout, `user.desfs.url="${server.archiveUrl}/${rel}"`)
    t.match(all.stdout, `user.desfs.cached="0/${s.sizes.get(rel)}"`)
    t.notMatch(all.stdout, /adler32/, 'no checksum is listed before one is known')
    const one = await run('getfattr', ['-n', 'user.desfs.adler32', '--absolute-names', file])
    t.not(one.code, 0)
    t.match(one.stderr, /No such attribute/)
    const other = await run('getfattr', ['-n', 'user.other', '--absolute-names', file])
    t.match(other.stderr, /No such attribute/, 'an unknown user attribute')
    const dir = await run('getfattr', ['-d', '--absolute-names', join(d.mnt, 'OPS')])
    t.equal(dir.code, 0)
    t.equal(dir.stdout.trim(), '', 'a directory has no attributes')
  })

  await t.test('df works on the mount: inodes are the tree, capacity the cache disk', async (t) => {
    const r = await run('df', ['-P', d.mnt])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, new RegExp(`^desfs\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+%\\s+${d.mnt}$`, 'm'))
    const i = await run('df', ['-i', '-P', d.mnt])
    const m = /^desfs\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(i.stdout)
    t.ok(m, i.stdout)
    t.equal(Number(m?.[1]), 100_000 + s.gen.dirs + 1, 'inodes: files + directories + the root')
    t.equal(Number(m?.[3]), 0, 'no free inodes (read-only)')
  })

  await t.test('a restart reuses the index and answers the same', async (t) => {
    await d.stop()
    const again = await startDaemon(t, { db: s.db, archive: server.archiveUrl, tokenFile, stateDir: s.stateDir })
    t.match(again.log(), /info tree index reused /)
    t.notMatch(again.log(), /building tree index|tree index built/, 'no rebuild')
    const got = await findAll(again.mnt)
    t.equal(got.files.size, 100_000)
    t.equal(server.log.length, 0, 'still no archive request')
  })
})
