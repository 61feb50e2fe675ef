// Query-defined directories through a real mount (issue 12): the hidden control directory .desfs,
// recipes as directories of relative links (tile recipe checked against the generator's own answer,
// md5 through each link), values queries, hostile values, user recipes added at run time, broken
// ones, saved queries, by-name lookups, and cached results dropped when the DB is replaced.
import t from 'tap'
import Database from 'better-sqlite3'
import { copyFileSync, mkdirSync, realpathSync, renameSync, writeFileSync } from 'node:fs'
import { lstat, mkdir, readFile, readdir, readlink, realpath, stat, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { DESFS, makeArchive, startServer, startDaemon, run, tmp, until, md5, sourceBytes } from './helpers.js'
import { expectedTileFiles } from './archive/expect.js'
import { linkNames } from '../fs/query-dirs.js'
import { parseRecipe } from '../daemon/catalog/recipes.js'

t.jobs = 1

const TILES = ['DES2041-5248', 'DES2041-5331', 'DES2045-5248']

// Every call into the mount is asynchronous: the archive server runs in this process, and a
// synchronous call would stop it from answering the daemon.

/** errno code of a failing fs call, or 'ok'. */
async function code(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn()
    return 'ok'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6

t.test('link names: unique names kept, duplicates get distinct names that do not depend on the others', async (t) => {
  const a = linkNames(['A/x.fits.fz', 'B/x.fits.fz', 'A/y.fits'])
  t.same([...a.values()].sort(), ['A/x.fits.fz', 'A/y.fits', 'B/x.fits.fz'])
  t.ok(a.has('y.fits'), 'a unique name is the file name')
  const dups = [...a.keys()].filter((k) => k !== 'y.fits')
  t.equal(dups.length, 2)
  for (const k of dups) t.match(k, /^x~[0-9a-f]{8}\.fits\.fz$/, 'a duplicate keeps its extensions')
  const b = linkNames(['C/x.fits.fz', 'B/x.fits.fz'])
  const nameOf = (m: Map<string, string>, rel: string) => [...m].find(([, r]) => r === rel)![0]
  t.equal(nameOf(b, 'B/x.fits.fz'), nameOf(a, 'B/x.fits.fz'), 'stable: the same file gets the same name')
})

t.test('recipes: values queries are checked when the file is read', async (t) => {
  const r = parseRecipe(
    "-- name: x\n-- params: tilename band\n-- values tilename: SELECT DISTINCT TILENAME FROM Y6A2_COADD\n-- values band: SELECT DISTINCT BAND FROM Y6A2_COADD WHERE TILENAME = :tilename\nSELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE FILENAME LIKE :tilename || '%' || :band || '%'\n",
    'x.sql',
  )
  t.same(Object.keys(r.values ?? {}), ['tilename', 'band'])
  t.notMatch(r.sql, /values/, 'the values queries are not part of the recipe SQL')
  t.throws(
    () => parseRecipe('-- name: x\n-- params: a\n-- values b: SELECT 1\nSELECT :a', 'x.sql'),
    /values query for 'b', which is not one of its parameters/,
  )
  t.throws(
    () => parseRecipe('-- name: x\n-- params: a b\n-- values a: SELECT :b\nSELECT :a, :b', 'x.sql'),
    /may use only the parameters before it, not :b/,
  )
  t.throws(() => parseRecipe('-- name: x\n-- params: a\n-- values a: DELETE FROM T\nSELECT :a', 'x.sql'), /must be one SELECT/)
})

t.test('query-defined directories through a mount', async (t) => {
  const a = makeArchive(t, { exposures: 9, ccds: 3, tiles: TILES })
  const { server, tokenFile } = await startServer(t, a.root)
  const recipes = join(tmp(t, 'desfs-recipes-'), 'recipes')
  mkdirSync(recipes)
  // No values query: its level cannot be listed, but any value can be looked up.
  writeFileSync(
    join(recipes, 'exposure.sql'),
    "-- name: exposure\n-- params: expnum\nSELECT fai.PATH, fai.FILENAME, fai.COMPRESSION FROM Y6A2_IMAGE i JOIN Y6A2_FILE_ARCHIVE_INFO fai ON fai.FILENAME = i.FILENAME WHERE i.EXPNUM = :expnum AND i.FILETYPE = 'red_immask'\n",
  )
  // A saved query: no parameters, the directory itself holds the links.
  writeFileSync(join(recipes, 'everything.sql'), 'SELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO\n')
  const dbDir = tmp(t, 'desfs-qdb-')
  const db = join(dbDir, 'metadata.db')
  copyFileSync(a.db, db)
  // One file twice under the same name (in another directory), outside every tile and exposure
  // selection: by-name must pick one and say so; a saved query selecting both names them apart.
  const inTiles = new Set(TILES.flatMap((tl) => a.manifest.bands.flatMap((b) => expectedTileFiles(a.manifest, tl, b))))
  const dupOf = a.manifest.files.find((f) => !inTiles.has(f.rel) && f.kind !== 'red_immask' && !a.manifest.missing.includes(f.rel))!.rel
  const dupCopy = `OPS/zz-copy/${basename(dupOf)}`
  mkdirSync(join(a.root, 'OPS', 'zz-copy'))
  copyFileSync(join(a.root, dupOf), join(a.root, dupCopy))
  {
    const w = new Database(db)
    w.prepare(
      "INSERT INTO Y6A2_FILE_ARCHIVE_INFO (FILENAME, PATH, COMPRESSION) SELECT FILENAME, 'OPS/zz-copy', COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE PATH || '/' || FILENAME || coalesce(COMPRESSION, '') = ?",
    ).run(dupOf)
    w.close()
  }
  // A 10 s read deadline: queries behind .desfs are stopped 2 s before it (the slow recipe below).
  const d = await startDaemon(t, {
    db,
    archive: server.archiveUrl,
    tokenFile,
    flags: ['--read-timeout', '10s'],
    env: { DESFS_RECIPES: recipes },
  })
  const Q = join(d.mnt, '.desfs')
  const mntReal = realpathSync(d.mnt)

  await t.test('.desfs: found by name, absent from listings, read-only', async (t) => {
    const ls = await run('ls', ['-a', d.mnt])
    t.equal(ls.code, 0)
    t.notOk(ls.stdout.split('\n').includes('.desfs'), 'ls -a of the root does not show it')
    t.ok(ls.stdout.split('\n').includes('OPS'), 'the archive is listed')
    // The root was just listed (the plane now has its listing): the lookup must still find it.
    t.ok((await stat(Q)).isDirectory(), 'stat finds it after the root was listed')
    const find = await run('find', [d.mnt], { timeoutMs: 120_000 })
    t.equal(find.code, 0)
    t.notOk(find.stdout.includes('.desfs'), 'find does not walk into it')
    t.same((await readdir(Q)).sort(), ['by-name', 'recipes'])
    t.equal(await code(() => mkdir(join(Q, 'x'))), 'EROFS', 'mkdir inside it: EROFS')
    t.equal(await code(() => writeFile(join(Q, 'recipes', 'f'), 'x')), 'EROFS', 'creating a file inside it: EROFS')
  })

  await t.test('the tile recipe: exactly the expected files, relative links inside the mount, same bytes', async (t) => {
    let pairs = 0
    for (const tile of TILES) {
      for (const band of a.manifest.bands) {
        const dir = join(Q, 'recipes', 'tile', tile, band)
        const expected = expectedTileFiles(a.manifest, tile, band)
        const t0 = process.hrtime.bigint()
        const names = (await readdir(dir)).sort()
        const first = ms(t0)
        const t1 = process.hrtime.bigint()
        await readdir(dir)
        const again = ms(t1)
        if (pairs === 0)
          t.comment(`figure: listing ${tile}/${band} (${names.length} links): first ${first.toFixed(1)} ms, again ${again.toFixed(1)} ms`)
        t.same(names, expected.map((r) => basename(r)).sort(), `${tile} ${band}: the expected file names`)
        const targets: string[] = []
        for (const name of names) {
          const link = join(dir, name)
          t.ok((await lstat(link)).isSymbolicLink(), 'a symbolic link')
          const target = await readlink(link)
          t.notOk(target.startsWith('/'), 'relative')
          const abs = resolve(dir, target)
          t.ok(abs.startsWith(d.mnt + '/') && !abs.includes('/.desfs/'), 'points inside the mount, into its tree')
          t.equal(await realpath(link), join(mntReal, abs.slice(d.mnt.length + 1)), 'realpath gives the real path')
          targets.push(abs.slice(d.mnt.length + 1))
        }
        t.same(targets.sort(), expected, 'the links point at exactly the expected files')
        pairs++
      }
    }
    t.equal(pairs, 9)
    // md5 through each link of the tile and band with the most inputs.
    const [tile, band] = TILES.flatMap((tl) => a.manifest.bands.map((b) => [tl, b] as const)).sort(
      (x, y) => expectedTileFiles(a.manifest, y[0], y[1]).length - expectedTileFiles(a.manifest, x[0], x[1]).length,
    )[0]!
    const dir = join(Q, 'recipes', 'tile', tile, band)
    const names = await readdir(dir)
    t.ok(names.length > 4, 'this tile has inputs as well as coadd products')
    for (const name of names) {
      const rel = resolve(dir, await readlink(join(dir, name))).slice(d.mnt.length + 1)
      t.equal(md5(await readFile(join(dir, name))), md5(sourceBytes(a, rel)), `md5 through ${name}`)
    }
    // The same list as `desfs sync --dry-run` gives.
    const dry = await run(
      process.execPath,
      [
        join(dirname(new URL(import.meta.url).pathname), '../bin/desfs.js'),
        'sync',
        '--tilename',
        tile,
        '--band',
        band,
        '--dry-run',
        '--state-dir',
        d.stateDir,
      ],
      { timeoutMs: 60_000 },
    )
    t.equal(dry.code, 0, dry.stderr)
    for (const name of names) t.ok(dry.stdout.includes(name), `sync --dry-run lists ${name}`)
  })

  await t.test('values: listed where the recipe has a values query, refused where not; no rows is ENOENT', async (t) => {
    t.same((await readdir(join(Q, 'recipes', 'tile'))).sort(), [...TILES].sort(), 'tile level lists the tiles')
    t.same((await readdir(join(Q, 'recipes', 'tile', TILES[0]!))).sort(), [...a.manifest.bands].sort(), 'band level lists the bands')
    t.equal(await code(() => stat(join(Q, 'recipes', 'tile', 'DES0000+0000'))), 'ENOENT', 'an unknown tile (not among the values): ENOENT')
    t.equal(await code(() => stat(join(Q, 'recipes', 'tile', TILES[0]!, 'q'))), 'ENOENT', 'an unknown band: ENOENT')
    t.ok((await readdir(join(Q, 'recipes'))).includes('exposure'), 'the user recipe is a directory')
    t.equal(await code(() => readdir(join(Q, 'recipes', 'exposure'))), 'EACCES', 'a level without a values query cannot be listed')
    const exp = a.manifest.exposures[0]!.expnum
    const names = await readdir(join(Q, 'recipes', 'exposure', String(exp)))
    const want = a.manifest.files
      .filter((f) => f.kind === 'red_immask' && new RegExp(`^D0*${exp}_`).test(basename(f.rel)))
      .map((f) => basename(f.rel))
    t.ok(want.length > 0)
    t.same(names.sort(), want.sort(), 'but a valid value resolves, with its files')
    t.equal(await code(() => stat(join(Q, 'recipes', 'exposure', '999999'))), 'ENOENT', 'a value with no rows: ENOENT')
    t.equal(await code(() => stat(join(Q, 'recipes', 'nope'))), 'ENOENT', 'an unknown recipe: ENOENT')
  })

  await t.test('hostile values are literal parameters, never SQL', async (t) => {
    const hostile = [
      `${a.manifest.exposures[0]!.expnum} OR 1=1`,
      "0' OR '1'='1",
      '0; DROP TABLE Y6A2_IMAGE; --',
      '"); SELECT * FROM Y6A2_FILE_ARCHIVE_INFO; --',
      '%',
    ]
    for (const v of hostile) {
      t.equal(await code(() => stat(join(Q, 'recipes', 'exposure', v))), 'ENOENT', `exposure '${v}': no rows, ENOENT`)
      t.equal(await code(() => stat(join(Q, 'recipes', 'tile', v))), 'ENOENT', `tile '${v}': ENOENT`)
    }
    t.equal(await code(() => stat(join(Q, 'recipes', 'exposure', 'x'.repeat(300)))), 'ENAMETOOLONG', 'a very long value is refused')
    t.equal(await code(() => stat(join(Q, 'recipes', 'tile', 'a\0b'))), 'ERR_INVALID_ARG_VALUE', 'NUL cannot be given at all')
    // '..' and '/' are path syntax: they never reach desfs as a value.
    t.equal(await realpath(join(Q, 'recipes', 'tile', '..', '..')), await realpath(Q), "'..' is the parent, not a value")
    t.equal(await code(() => stat(join(Q, 'recipes', 'tile', TILES[0]!, 'r', 'x/y'))), 'ENOENT', "'/' is a path separator")
    t.ok(
      (await readdir(join(Q, 'recipes', 'exposure', String(a.manifest.exposures[0]!.expnum)))).length > 0,
      'the DB is untouched: the valid value still resolves',
    )
  })

  await t.test('saved queries, recipes added at run time, broken recipes', async (t) => {
    const all = a.manifest.files.map((f) => basename(f.rel))
    const t0 = process.hrtime.bigint()
    const names = await readdir(join(Q, 'recipes', 'everything'))
    t.comment(`figure: saved query selecting every file, ${names.length} links: ${ms(t0).toFixed(1)} ms`)
    t.equal(names.length, new Set(a.manifest.files.map((f) => f.rel)).size + 1, 'one link per file of the archive (and the copy)')
    const dupNames = names.filter((n) => n.includes('~'))
    t.equal(dupNames.length, 2, `the two files named ${basename(dupOf)} get distinct names (${dupNames.join(', ')})`)
    const dupTargets = await Promise.all(dupNames.map((n) => readlink(join(Q, 'recipes', 'everything', n))))
    t.same(dupTargets.sort(), ['../../../' + dupOf, '../../../' + dupCopy].sort(), 'one for each file')
    t.ok(
      all.every((n) => names.some((m) => m === n || m.startsWith(n.split('.')[0]! + '~'))),
      'every file name present',
    )
    writeFileSync(
      join(recipes, 'coadds.sql'),
      "-- name: coadds\n-- description: the coadd images\nSELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE FILENAME IN (SELECT FILENAME FROM Y6A2_COADD WHERE FILETYPE = 'coadd')\n",
    )
    t.ok(await until(async () => (await readdir(join(Q, 'recipes'))).includes('coadds'), 10_000, 200), 'a recipe added at run time appears')
    const coadds = a.manifest.files
      .filter((f) => f.kind === 'coadd')
      .map((f) => basename(f.rel))
      .sort()
    t.same((await readdir(join(Q, 'recipes', 'coadds'))).sort(), coadds, 'and selects its files')
    writeFileSync(join(recipes, 'broken.sql'), '-- name: broken\nDELETE FROM Y6A2_IMAGE\n')
    writeFileSync(join(recipes, 'failing.sql'), '-- name: failing\nSELECT PATH, FILENAME, COMPRESSION FROM NO_SUCH_TABLE\n')
    await new Promise((r) => setTimeout(r, 1200)) // the recipe directory is re-read at most once a second
    t.equal(await code(() => stat(join(Q, 'recipes', 'broken'))), 'EIO', 'a recipe that does not parse: EIO')
    t.equal(await code(() => stat(join(Q, 'recipes', 'broken'))), 'EIO', 'again EIO')
    const brokenLines = () => (d.log().match(/recipe 'broken' cannot be used as a directory: EIO/g) ?? []).length
    await until(() => brokenLines() > 0, 5000)
    t.match(d.log(), /recipe 'broken' cannot be used as a directory: EIO reason=.*must be one SELECT/, 'a log line naming it and why')
    t.equal(brokenLines(), 1, 'one line, though asked twice')
    t.equal(await code(() => readdir(join(Q, 'recipes', 'failing'))), 'EIO', 'a recipe whose query fails: EIO')
    await until(() => /recipe 'failing' query failed: EIO.*NO_SUCH_TABLE/.test(d.log()), 5000)
    t.match(d.log(), /recipe 'failing' query failed: EIO.*NO_SUCH_TABLE/, 'logged, naming the recipe')
    // A query that runs on and on is stopped at its timeout: EIO, and a log line naming the recipe.
    writeFileSync(
      join(recipes, 'slow.sql'),
      '-- name: slow\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e12) SELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE (SELECT max(x) FROM c) < 0\n',
    )
    await new Promise((r) => setTimeout(r, 1200))
    const started = Date.now()
    t.equal(await code(() => readdir(join(Q, 'recipes', 'slow'))), 'EIO', 'a query past its timeout: EIO')
    const took = Date.now() - started
    await until(() => /recipe 'slow' query failed: EIO.*timed out/.test(d.log()), 5000)
    t.match(d.log(), /recipe 'slow' query failed: EIO.*timed out/, `logged as a timeout, naming the recipe (answered after ${took} ms)`)
    t.notMatch(d.log(), /readdir timed out: EIO path=\/\.desfs\/recipes\/slow/, "by the query timeout, before the operation's own deadline")
    t.ok((await readdir(join(Q, 'recipes', 'coadds'))).length > 0, 'the daemon goes on; other recipes still work')
  })

  const coadd = a.manifest.files.find((f) => f.kind === 'coadd' && f.rel.endsWith('.fz'))!.rel
  const plain = a.manifest.files.find((f) => !/\.(fz|gz)$/.test(f.rel))!.rel
  await t.test('by-name: with or without the compression suffix; unknown is ENOENT; not listable', async (t) => {
    const name = basename(coadd)
    const t0 = process.hrtime.bigint()
    const target = await readlink(join(Q, 'by-name', name))
    t.comment(`figure: by-name lookup + readlink of ${name}: ${ms(t0).toFixed(1)} ms`)
    t.equal(target, '../../' + coadd, 'a relative link to the file')
    t.equal(await readlink(join(Q, 'by-name', name.replace(/\.fz$/, ''))), '../../' + coadd, 'the name without .fz finds it too')
    t.equal(md5(await readFile(join(Q, 'by-name', name))), md5(sourceBytes(a, coadd)), 'md5 through the link')
    t.equal(await readlink(join(Q, 'by-name', basename(plain))), '../../' + plain, 'an uncompressed file by its name')
    t.equal(
      await readlink(join(Q, 'by-name', basename(dupOf))),
      '../../' + [dupOf, dupCopy].sort()[0],
      'an ambiguous name: the first by path',
    )
    await until(() => /by-name: several files have this name/.test(d.log()), 5000)
    t.match(
      d.log(),
      new RegExp(`by-name: several files have this name; linking the first by path name=${basename(dupOf).replace(/\./g, '\\.')} `),
      'and the log says so',
    )
    t.equal(await code(() => lstat(join(Q, 'by-name', 'D99999999_x_c99_nothing.fits.fz'))), 'ENOENT', 'an unknown name: ENOENT')
    t.equal(await code(() => lstat(join(Q, 'by-name', "x' OR '1'='1"))), 'ENOENT', 'a hostile name: ENOENT')
    t.equal(await code(() => readdir(join(Q, 'by-name'))), 'EACCES', 'by-name is not listable (EACCES)')
    // Many lookups at once (a pipeline opening its inputs in parallel): more than the SQL engine
    // runs at once; they wait their turn rather than fail.
    const many = [...new Set(a.manifest.files.map((f) => f.rel))]
      .filter((r) => r !== dupOf && r !== coadd && r !== plain && !a.manifest.missing.includes(r))
      .slice(0, 64)
    const list = join(tmp(t, 'desfs-names-'), 'names')
    writeFileSync(list, many.map((r) => join(Q, 'by-name', basename(r))).join('\n') + '\n')
    const par = await run('sh', ['-c', 'xargs -P 32 -n 1 readlink < "$0"', list], { timeoutMs: 120_000 })
    t.equal(par.code, 0, `no lookup failed ${par.stderr.split('\n')[0]}`)
    t.same(
      par.stdout.split('\n').filter(Boolean).sort(),
      many.map((r) => '../../' + r).sort(),
      `${many.length} lookups, 32 at a time, all resolve`,
    )
  })

  await t.test('sync and cache pin take .desfs paths: the files they select', async (t) => {
    const cli = (...args: string[]) => run(process.execPath, [DESFS, ...args, '--state-dir', d.stateDir], { timeoutMs: 120_000 })
    const paths = (out: string) =>
      out
        .split('\n')
        .map((l) => /^\s*\S+ \S+\s+(OPS\/\S+)/.exec(l)?.[1])
        .filter((x): x is string => !!x)
        .sort()
    const [tile, band] = [TILES[1]!, 'i']
    const byRecipe = await cli('sync', '--tilename', tile, '--band', band, '--dry-run')
    t.equal(byRecipe.code, 0, byRecipe.stderr)
    const expected = paths(byRecipe.stdout)
    t.ok(expected.length > 0, `the tile has files (${expected.length})`)
    const byDir = await cli('sync', join(Q, 'recipes', 'tile', tile, band), '--dry-run')
    t.equal(byDir.code, 0, byDir.stderr)
    t.same(paths(byDir.stdout), expected, 'sync of the recipe directory plans the same files as --tilename/--band')
    const byTile = await cli('sync', join(Q, 'recipes', 'tile', tile), '--dry-run')
    t.equal(byTile.code, 0, byTile.stderr)
    t.ok(
      expected.every((p) => paths(byTile.stdout).includes(p)) && paths(byTile.stdout).length > expected.length,
      'a level above: every band of the tile',
    )
    const headers = await cli('headers', join(Q, 'recipes', 'tile', tile, band), '--keys', 'BAND')
    t.equal(headers.code, 0, headers.stderr)
    t.same(
      headers.stdout
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split('\t')[0])
        .sort(),
      expected,
      'desfs headers of the directory: one row per file it selects',
    )
    const name = basename(coadd)
    // From inside the mount, relative to the working directory (sent along to the daemon).
    const pin = await run(process.execPath, [DESFS, 'cache', 'pin', join('by-name', name), '--state-dir', d.stateDir], {
      cwd: Q,
      timeoutMs: 60_000,
    })
    t.equal(pin.code, 0, pin.stderr)
    t.equal(pin.stdout, 'desfs: pinned 1 files\n')
    const pinned = await cli('cache', 'ls', '--pinned')
    t.match(pinned.stdout, new RegExp(`^P .* ${coadd.replace(/[.]/g, '\\.')}$`, 'm'), 'the file the link names is pinned')
    const unlistable = await cli('sync', join(Q, 'recipes', 'exposure'), '--dry-run')
    t.equal(unlistable.code, 2, 'a level that cannot be listed: exit 2')
    t.match(
      unlistable.stderr,
      /^desfs: \S+\/recipes\/exposure: this level cannot be listed \(its recipe gives no values query\); name a value below it\n$/,
    )
    const unknown = await cli('cache', 'pin', join(Q, 'by-name', 'D99999999_nothing.fits.fz'))
    t.equal(unknown.code, 2, 'an unknown name: exit 2')
    t.match(unknown.stderr, /^desfs: \S+nothing\.fits\.fz: no such query directory, value or file name\n$/)
  })

  await t.test('a DB replaced while mounted drops the kept results', async (t) => {
    const dir = join(Q, 'recipes', 'tile', TILES[0]!, 'r')
    const before = await readdir(dir)
    const victim = before.find((n) => /red-immask|immasked/.test(n)) ?? before[0]!
    await readlink(join(Q, 'by-name', victim))
    const copy = join(dbDir, 'next.db')
    copyFileSync(db, copy)
    const w = new Database(copy)
    w.prepare("DELETE FROM Y6A2_FILE_ARCHIVE_INFO WHERE FILENAME || coalesce(COMPRESSION, '') = ? OR FILENAME = ?").run(victim, victim)
    w.close()
    const swaps = () => (d.log().match(/ info new tree in service /g) ?? []).length
    const n0 = swaps()
    renameSync(copy, db)
    t.ok(await until(() => swaps() > n0, 60_000, 100), 'the new DB is in service')
    const after = await readdir(dir)
    t.notOk(after.includes(victim), `${victim} vanished from the recipe directory`)
    t.equal(after.length, before.length - 1, 'and nothing else changed')
    t.equal(await code(() => lstat(join(Q, 'by-name', victim))), 'ENOENT', 'by-name no longer finds it')
  })
})
