// Sizes learned from the archive: concurrent first visits of a directory make one PROPFIND, and a
// restart reuses both the index (no rebuild) and the remembered sizes (no PROPFIND, no HEAD).
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, needTool } from './helpers.js'
import { adler32, adler32Hex } from '../cache/adler32.js'

t.jobs = 1

/** Starts `stat` of each path in its own child process, all at once; resolves with the exit codes. */
function parallelStats(paths: string[]): Promise<(number | null)[]> {
  return Promise.all(
    paths.map(
      (p) =>
        new Promise<number | null>((resolve) => {
          const c = spawn('stat', ['-c', '%s', p], { stdio: 'ignore', timeout: 60_000 })
          c.on('exit', (code) => resolve(code))
          c.on('error', () => resolve(-1))
        }),
    ),
  )
}

t.test('learning sizes from the archive', async (t) => {
  const a = makeArchive(t, { exposures: 2, ccds: 12, hostile: false, fpack: 'never' })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const byDir = new Map<string, typeof a.manifest.files>()
  for (const f of a.manifest.files) byDir.set(dirname(f.rel), [...(byDir.get(dirname(f.rel)) ?? []), f])

  await t.test('many processes stat files of one unvisited directory at once: one PROPFIND', async (t) => {
    const [dir, files] = [...byDir].find(([, fs]) => fs.length >= 12)!
    server.clearLog()
    server.faults.latencyMs = 400 // every stat arrives while the listing is still on its way
    const codes = await parallelStats(files.map((f) => join(d.mnt, f.rel)))
    server.faults.latencyMs = 0
    t.same(
      codes,
      files.map(() => 0),
      `${files.length} stats all succeed`,
    )
    t.equal(server.count('PROPFIND', dir), 1, 'one PROPFIND for the directory')
    t.equal(server.count('HEAD'), 0, 'no HEAD')
    t.equal(server.count('PROPFIND'), 1, 'nothing else was listed')
  })

  const expected = new Map(a.manifest.files.map((f) => [f.rel, f.size]))
  const lsSizes = async (mnt: string) => {
    const r = await run('find', [mnt, '-type', 'f', '-printf', '%s %P\\n'])
    return new Map(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(l.indexOf(' ') + 1), Number(l.slice(0, l.indexOf(' ')))]),
    )
  }

  await t.test('a first walk lists each directory once', async (t) => {
    server.clearLog()
    t.same(await lsSizes(d.mnt), expected, 'every size is the archive file size')
    t.equal(server.count('PROPFIND'), byDir.size - 1, 'one PROPFIND per directory not visited yet')
    t.equal(server.count('HEAD'), 0)
  })

  await t.test('getfattr shows the checksum the listing brought, and what is cached', async (t) => {
    if (!needTool(t, 'getfattr', 'attr')) return
    const f = a.manifest.files[0]!
    const before = await run('getfattr', ['-d', '--absolute-names', join(d.mnt, f.rel)])
    t.match(before.stdout, `user.desfs.adler32="${adler32Hex(adler32(readFileSync(join(a.root, f.rel))))}"`)
    t.match(before.stdout, `user.desfs.cached="0/${f.size}"`)
    t.equal((await run('cat', [join(d.mnt, f.rel)])).code, 0)
    const after = await run('getfattr', ['-n', 'user.desfs.cached', '--only-values', '--absolute-names', join(d.mnt, f.rel)])
    t.equal(after.stdout, `${f.size}/${f.size}`, 'all of it cached after a read')
  })

  await t.test('a restart reuses the index and the remembered sizes', async (t) => {
    await d.stop()
    server.clearLog()
    const again = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, stateDir: d.stateDir, cacheDir: d.cacheDir })
    t.match(again.log(), /info tree index reused /)
    t.notMatch(again.log(), /tree index built/, 'no rebuild')
    t.same(await lsSizes(again.mnt), expected, 'the same sizes')
    t.equal(server.count('PROPFIND'), 0, 'no PROPFIND for known directories')
    t.equal(server.count('HEAD'), 0, 'no HEAD')
  })
})

t.test('a DB row whose file the archive lacks is hidden from the first ls -la, also where the archive will not list', async (t) => {
  const a = makeArchive(t, { exposures: 2, ccds: 4 })
  const missing = a.manifest.missing[0]!
  const dir = dirname(missing)
  const present = a.manifest.files.filter((f) => dirname(f.rel) === dir).map((f) => f.rel.split('/').pop()!)
  t.ok(present.length > 0, 'the directory has files the archive has too')
  const { server, tokenFile } = await startServer(t, a.root)

  for (const [name, faults] of [
    ['listed with one PROPFIND', {}],
    ['learned one HEAD at a time (PROPFIND refused)', { noPropfind: true }],
  ] as const) {
    await t.test(name, async (t) => {
      server.faults = { ...faults }
      t.teardown(() => {
        server.faults = {}
      })
      // A daemon with a fresh state dir: nothing about the directory is known before this ls.
      const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
      const r = await run('ls', ['-la', join(d.mnt, dir)])
      t.equal(r.code, 0, `ls -la exits 0 (${r.stderr.trim()})`)
      t.notMatch(r.stdout, /\?/, 'no entry shown without attributes')
      t.notMatch(r.stdout, missing.split('/').pop()!, 'the missing file is not listed')
      for (const p of present) t.match(r.stdout, p, `${p} is listed`)
      await d.stop()
    })
  }
})
