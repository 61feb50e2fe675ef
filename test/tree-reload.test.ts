// The metadata DB replaced while mounted: the new tree is built in the background and swapped in
// without unmounting (listings never mixed, the kernel's cached names dropped, open files still
// readable); a truncated, corrupt or non-SQLite replacement and a deleted index file are reported
// and never produce a wrong listing.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { spawn } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
  closeSync,
  statSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { makeArchive, startServer, startDaemon, run, desfs, tmp, until, PYTHON, type DaemonFixture, md5 } from './helpers.js'
import { findAll } from './tree-fixtures.js'

t.jobs = 1

/** A copy of the DB without some files' rows. */
function dbWithout(src: string, out: string, drop: Set<string>): void {
  copyFileSync(src, out)
  const db = new Database(out)
  const del = db.prepare("DELETE FROM Y6A2_FILE_ARCHIVE_INFO WHERE PATH || '/' || FILENAME || coalesce(COMPRESSION, '') = ?")
  db.transaction(() => drop.forEach((p) => del.run(p)))()
  db.exec('VACUUM')
  db.close()
}

/** Replaces the DB the way des-archive-access does: a complete new file renamed over the old one. */
function replaceDb(target: string, content: Buffer | string): void {
  const tmpFile = `${target}.download`
  writeFileSync(tmpFile, content)
  renameSync(tmpFile, target)
}

/** Waits until the daemon's log has one more line matching `re` than it had before `action`. */
async function logAfter(t: Test, d: DaemonFixture, re: RegExp, action: () => void | Promise<void>): Promise<string> {
  const count = () => (d.log().match(new RegExp(re.source, 'g')) ?? []).length
  const before = count()
  await action()
  const ok = await until(() => count() > before, 60_000, 100)
  t.ok(ok, `the log says ${re.source}`)
  return d.log().match(new RegExp(re.source, 'g'))?.[before] ?? ''
}

t.test('the DB replaced while mounted', async (t) => {
  const a = makeArchive(t, { exposures: 3, ccds: 4, hostile: false, fpack: 'never', largeFileBytes: 8 << 20 })
  const { server, tokenFile } = await startServer(t, a.root)
  const all = new Map(a.manifest.files.map((f) => [f.rel, f.size]))
  const big = a.manifest.largeFile!
  const immask = a.manifest.files.filter((f) => f.kind === 'red_immask').map((f) => f.rel)
  const exp0 = dirname(immask[0]!)
  const inExp0 = immask.filter((p) => dirname(p) === exp0).sort()
  const lastExp = `D${String(a.manifest.exposures[2]!.expnum).padStart(8, '0')}`
  // DB1 lacks the last exposure and one file of the first; DB2 has those but lacks the big file
  // (which a reader holds open) and another file of the first exposure.
  const added = new Set([...all.keys()].filter((p) => p.includes(`/${lastExp}/`)).concat(inExp0[3]!))
  const removed = new Set([big, inExp0[0]!])
  const dir = tmp(t, 'desfs-reload-')
  const db = join(dir, 'metadata.db')
  const db1 = join(dir, 'one.db')
  const db2 = join(dir, 'two.db')
  dbWithout(a.db, db1, added)
  dbWithout(a.db, db2, removed)
  const want1 = new Map([...all].filter(([p]) => !added.has(p)))
  const want2 = new Map([...all].filter(([p]) => !removed.has(p)))
  copyFileSync(db1, db)
  const d = await startDaemon(t, { db, archive: server.archiveUrl, tokenFile })

  const first = await findAll(d.mnt)
  t.same(first.files, want1, 'mounted: the first DB (every file stat-ed, so the kernel caches them all)')

  await t.test('a replacement that adds and removes files is swapped in without unmounting', async (t) => {
    // A reader opens the big file and reads its first bytes before the swap, the rest after.
    const reader = spawn(
      PYTHON,
      [
        '-c',
        'import sys,hashlib\nf=open(sys.argv[1],"rb"); h=hashlib.md5(); h.update(f.read(65536)); print("opened", flush=True)\nsys.stdin.readline()\nwhile True:\n  b=f.read(1<<20)\n  if not b: break\n  h.update(b)\nprint(h.hexdigest(), flush=True)',
        join(d.mnt, big),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    )
    const lines = createInterface({ input: reader.stdout! })
    const out: string[] = []
    lines.on('line', (l) => out.push(l))
    t.ok(await until(() => out.includes('opened'), 30_000), 'the reader has the file open')
    // Meanwhile a lister lists the changing directory over and over, until its stdin is closed.
    const lister = spawn(
      PYTHON,
      [
        '-c',
        'import os,sys,select\nwhile True:\n  print(",".join(sorted(os.listdir(sys.argv[1]))), flush=True)\n  if select.select([sys.stdin],[],[],0.005)[0] and not sys.stdin.readline(): break',
        join(d.mnt, exp0),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    )
    const listings: string[] = []
    createInterface({ input: lister.stdout! }).on('line', (l) => listings.push(l))
    const listerDone = new Promise((r) => lister.on('exit', r))
    t.ok(await until(() => listings.length > 0, 30_000), 'the lister listed the directory before the swap')

    const mountsBefore = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(d.mnt)).length
    await logAfter(t, d, / info new tree in service /, () => replaceDb(db, readFileSync(db2)))
    t.equal(
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.includes(d.mnt)).length,
      mountsBefore,
      'never unmounted',
    )

    const after = await findAll(d.mnt)
    t.same(after.files, want2, 'the mount now shows the new DB: added files present, removed ones gone')
    const r0 = await run('stat', [join(d.mnt, inExp0[0]!)])
    t.not(r0.code, 0, 'a removed file no longer resolves, though the kernel had it cached')
    // Once the mount shows the new DB, the lister lists once more, then stops.
    const seen = listings.length
    t.ok(await until(() => listings.length > seen, 30_000), 'the lister listed the directory after the swap')
    lister.stdin!.end()
    const r = await run('cat', [join(d.mnt, inExp0[3]!)], { binary: true })
    t.equal(md5(Buffer.from(r.stdout, 'latin1')), md5(readFileSync(join(a.root, inExp0[3]!))), 'an added file reads right')

    reader.stdin!.end('go\n')
    t.ok(await until(() => out.length >= 2, 60_000), 'the reader finished')
    t.equal(
      out[1],
      md5(readFileSync(join(a.root, big))),
      'the open file read to the end with the right bytes, though removed from the tree',
    )
    // The kernel cannot drop a name in use; once the reader has closed it, the name goes too.
    const gone = await until(async () => (await run('stat', [join(d.mnt, big)])).code !== 0, 10_000, 200)
    t.ok(gone, 'once closed, the removed file no longer resolves')

    await listerDone
    const names = (s: Iterable<string>) =>
      [...s]
        .filter((p) => dirname(p) === exp0)
        .map((p) => p.slice(exp0.length + 1))
        .sort()
        .join(',')
    const allowed = new Set([names(want1.keys()), names(want2.keys())])
    t.equal(listings[0], names(want1.keys()), 'its first listing (before the swap) was the old one')
    t.equal(listings.at(-1), names(want2.keys()), 'its last listing (after the swap) the new one')
    t.same(
      [...new Set(listings)].filter((l) => !allowed.has(l)),
      [],
      'every listing was the old one or the new one, never a mix or an empty one',
    )
  })

  const stateFiles = () => readdirSync(d.stateDir).filter((n) => /^tree-.*\.sqlite$/.test(n))

  await t.test('the index file deleted while mounted: served from the open file, then rebuilt', async (t) => {
    t.equal(stateFiles().length, 1, 'one index file (the old one was removed after the swap)')
    const file = join(d.stateDir, stateFiles()[0]!)
    await logAfter(t, d, / info new tree in service /, async () => {
      rmSync(file)
      const during = await findAll(d.mnt)
      t.same(during.files, want2, 'right after the deletion the mount still answers, from the open index')
    })
    t.ok(existsSync(file), 'the index file is back')
    t.match(d.log(), /tree index file deleted or replaced; rebuilding it/)
    t.same((await findAll(d.mnt)).files, want2, 'the same tree from the rebuilt index')
  })

  const good = readFileSync(db2)
  const bad: [string, () => Buffer | string, RegExp][] = [
    [
      'truncated',
      () => good.subarray(0, Math.floor(good.length / 2)),
      /still serving the previous tree: metadata DB \S+ is not a readable SQLite database \(truncated: \d+ bytes, its header says \d+\)/,
    ],
    [
      'not SQLite',
      () => 'PATH,FILENAME\nOPS/evil,passwd\n'.repeat(500),
      /still serving the previous tree: metadata DB \S+ is not a readable SQLite database \(the file does not start with the SQLite header\)/,
    ],
    [
      'corrupt (garbage pages after the schema)',
      () => {
        const b = Buffer.from(good)
        const pageSize = b.readUInt16BE(16)
        b.fill(0xa5, pageSize)
        return b
      },
      /still serving the previous tree: cannot build the tree from \S+ \(database disk image is malformed\)/,
    ],
  ]
  for (const [what, content, message] of bad) {
    await t.test(`a ${what} replacement is reported and the old tree stays`, async (t) => {
      const line = await logAfter(t, d, /error still serving the previous tree: .*/, () => replaceDb(db, content()))
      t.match(line, message, 'one line naming the problem')
      t.match(line, /re-download it/, 'and the fix')
      t.same((await findAll(d.mnt)).files, want2, 'the listing is unchanged')
      t.equal(stateFiles().length, 1, 'no index file left behind for the bad DB')
    })
  }

  await t.test('a good DB after bad ones is swapped in', async (t) => {
    await logAfter(t, d, / info new tree in service /, () => replaceDb(db, readFileSync(db1)))
    t.same((await findAll(d.mnt)).files, want1, 'back to the first DB')
    const st = await desfs(['status', '--state-dir', d.stateDir, '--json'])
    const status = JSON.parse(st.stdout) as { tree: { reload: { reloads: number; state: string } } }
    t.equal(status.tree.reload.state, 'watching')
    t.equal(status.tree.reload.reloads, 3, 'three swaps: the new DB, the deleted index, the first DB again')
  })
})

t.test('a build in progress is not swapped in when the DB changes again under it', async (t) => {
  // Unit-level: prepareTreeIndex notices a DB replaced during its build and builds again.
  const { prepareTreeIndex } = await import('../daemon/catalog/catalog.js')
  const dir = tmp(t)
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false, fpack: 'never' })
  const db = join(dir, 'metadata.db')
  copyFileSync(a.db, db)
  let replaced = false
  const p = prepareTreeIndex({ dbPath: db, stateDir: dir }, () => {
    if (replaced) return
    replaced = true
    // Same content, new inode: what a re-download gives.
    const fd = openSync(`${db}.new`, 'w')
    writeSync(fd, readFileSync(a.db))
    closeSync(fd)
    renameSync(`${db}.new`, db)
  })
  t.ok(replaced, 'the DB was replaced during the build')
  t.equal(
    p?.dbFile,
    JSON.stringify({ dev: statSync(db).dev, ino: statSync(db).ino, size: statSync(db).size, mtimeMs: Math.floor(statSync(db).mtimeMs) }),
    'the index returned matches the DB now in place',
  )
  t.equal(readdirSync(dir).filter((n) => n.startsWith('tree-')).length, 1, 'the index of the replaced file was removed')
})
