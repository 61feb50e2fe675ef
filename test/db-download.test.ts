// `desfs db download` and `desfs db info`, run as users run them (the CLI in a child process) against
// a web server on 127.0.0.1 that can drop connections mid-body.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { FileServer } from './archive/file-server.js'
import { desfs, needTool, run, tmp } from './helpers.js'

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex')

/** A small DB shaped like the metadata DB, with an incompressible filler so the payload spans several MB. */
function makeDb(path: string, fillerBytes = 3 << 20): void {
  const db = new Database(path)
  db.exec('CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, PATH TEXT, COMPRESSION TEXT, DESFILE_ID INTEGER)')
  db.exec('CREATE TABLE Y6A2_IMAGE (FILENAME TEXT, BAND TEXT, EXPNUM INTEGER, CCDNUM INTEGER)')
  db.exec('CREATE TABLE FILLER (B BLOB)')
  const fai = db.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, ?, ?)')
  const img = db.prepare('INSERT INTO Y6A2_IMAGE VALUES (?, ?, ?, ?)')
  const fill = db.prepare('INSERT INTO FILLER VALUES (?)')
  db.transaction(() => {
    for (let i = 0; i < 2000; i++) {
      const f = `D00${700000 + (i >> 6)}_r_c${String((i % 62) + 1).padStart(2, '0')}_r4056p01_immasked.fits`
      fai.run(f, `OPS/finalcut/Y6A1/20181129-r4056/D00${700000 + (i >> 6)}/p01/red/immask`, '.fz', i)
      img.run(f, 'r', 700000 + (i >> 6), (i % 62) + 1)
    }
    for (let n = 0; n < fillerBytes; n += 64 * 1024) fill.run(randomBytes(64 * 1024))
  })()
  db.close()
}

async function zstd(t: Test, input: string, output: string): Promise<void> {
  const r = await run('zstd', ['-q', '-3', '-f', input, '-o', output])
  t.equal(r.code, 0, `zstd compressed ${input} ${r.stderr}`)
}

/** Files the download leaves next to the DB (partials, temp DBs); there should be none after it ends. */
function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.includes('.download'))
}

t.test('db download', async (t) => {
  if (!needTool(t, 'zstd', 'zstd')) return
  const dir = tmp(t)
  const src = join(dir, 'source.db')
  makeDb(src)
  await zstd(t, src, join(dir, 'good.db.zst'))
  const zsize = statSync(join(dir, 'good.db.zst')).size
  const server = await new FileServer().start()
  t.teardown(() => server.stop())
  server.files.set('/good.db.zst', join(dir, 'good.db.zst'))
  const home = join(dir, 'home')
  const dest = join(home, '.des_archive_access', 'metadata.db')
  const env = { ...process.env, HOME: home, DESFS_CONFIG: join(dir, 'no-config'), DES_ARCHIVE_ACCESS_DB: '' }
  const dl = (url: string, extra: string[] = []) =>
    desfs(['db', 'download', '--url', url, '--db', dest, ...extra], { env, timeoutMs: 60_000 })

  await t.test('downloads, decompresses, checks and installs the DB', async (t) => {
    const r = await dl(`${server.url}/good.db.zst`)
    t.equal(r.code, 0, `exit 0 (${r.stderr})`)
    t.match(r.stdout, /downloaded .*good\.db\.zst to .*metadata\.db/)
    t.equal(sha(dest), sha(src), 'the installed DB is the source DB, byte for byte')
    t.equal(statSync(join(home, '.des_archive_access')).mode & 0o777, 0o700, 'the DB directory is created 0700')
    t.same(leftovers(join(home, '.des_archive_access')), [], 'no partial or temporary file is left')
    t.equal(
      Math.floor(statSync(dest).mtimeMs / 1000),
      Math.floor(statSync(join(dir, 'good.db.zst')).mtimeMs / 1000),
      'the DB carries the published date',
    )
  })

  await t.test('db info lists tables, row counts, date and size', async (t) => {
    const r = await desfs(['db', 'info', '--db', dest], { env })
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /Y6A2_FILE_ARCHIVE_INFO\s+2000 rows/)
    t.match(r.stdout, /Y6A2_IMAGE\s+2000 rows/)
    t.match(r.stdout, new RegExp(`size\\s+.*\\(${statSync(dest).size} bytes\\)`))
    t.match(r.stdout, /modified\s+\d{4}-\d\d-\d\dT/)
    const j = JSON.parse((await desfs(['db', 'info', '--db', dest, '--json'], { env })).stdout) as {
      tables: { name: string; rows: number }[]
    }
    t.same(
      j.tables.map((x) => x.name),
      ['FILLER', 'Y6A2_FILE_ARCHIVE_INFO', 'Y6A2_IMAGE'],
    )
  })

  await t.test('an up-to-date DB is not downloaded again unless --force', async (t) => {
    server.log.length = 0
    const r = await dl(`${server.url}/good.db.zst`)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /up to date/)
    t.equal(server.log.filter((x) => x.method === 'GET').length, 0, 'only a HEAD was made')
    const ino = statSync(dest).ino
    const f = await dl(`${server.url}/good.db.zst`, ['--force'])
    t.equal(f.code, 0, f.stderr)
    t.not(statSync(dest).ino, ino, '--force replaced the file (by rename: a new inode)')
  })

  // Bytes the client had buffered but not yet written when a connection dropped are fetched again
  // (undici discards them with the error), so the checks are: every retry asks for exactly the bytes
  // after those already on disk, progress is never lost, and nothing starts again from zero.
  const resumes = (stderr: string) => [...stderr.matchAll(/(?:connection lost at|resuming at) (\d+) bytes/g)].map((m) => Number(m[1]))
  const ranges = () => server.log.filter((x) => x.method === 'GET').map((g) => (g.range ? Number(/bytes=(\d+)-/.exec(g.range)![1]) : 0))

  await t.test('a dropped connection is resumed with a Range request in the same run', async (t) => {
    server.log.length = 0
    server.dropAfterBytes = 700_000
    server.dropCount = 2
    const r = await dl(`${server.url}/good.db.zst`, ['--force'])
    t.equal(r.code, 0, `exit 0 (${r.stderr})`)
    const at = resumes(r.stderr)
    t.equal(at.length, 2, 'two drops, two resumes')
    t.same(ranges(), [0, ...at], 'each retry asks for the bytes after those on disk')
    t.ok(at[0]! > 0 && at[1]! > at[0]!, `progress kept (${at.join(', ')})`)
    t.equal(
      server.sent('/good.db.zst'),
      2 * 700_000 + (zsize - at[1]!),
      'the two cut bodies, then only the rest: nothing from the start again',
    )
    t.equal(sha(dest), sha(src))
  })

  await t.test('an interrupted download resumes in the next run, and the old DB stays until then', async (t) => {
    const before = sha(dest)
    server.log.length = 0
    server.dropAfterBytes = 300_000
    server.dropCount = 100
    const r1 = await dl(`${server.url}/good.db.zst`, ['--force'])
    t.equal(r1.code, 4, 'gives up with exit 4 after its attempts')
    const m = /download interrupted at (\d+) of \d+ bytes .*run desfs db download again to resume/.exec(r1.stderr)
    t.ok(m, `says it can be resumed: ${r1.stderr}`)
    const stoppedAt = Number(m?.[1])
    t.ok(stoppedAt > 300_000, 'several pieces made it to disk')
    t.equal(sha(dest), before, 'the existing DB is untouched')
    t.ok(existsSync(`${dest}.download`), 'the compressed partial is kept')
    server.dropCount = 0
    server.log.length = 0
    const r2 = await dl(`${server.url}/good.db.zst`, ['--force'])
    t.equal(r2.code, 0, r2.stderr)
    t.same(resumes(r2.stderr), [stoppedAt], 'the second run resumes where the first stopped')
    t.match(r2.stdout, /resumed at/)
    t.same(ranges(), [stoppedAt], 'and asks only for the rest')
    t.equal(server.sent('/good.db.zst'), zsize - stoppedAt, 'the rest, once')
    t.equal(sha(dest), sha(src))
    t.same(leftovers(join(home, '.des_archive_access')), [])
  })

  await t.test('a payload corrupt anywhere is called corrupt, never a lost connection', async (t) => {
    // node:zlib's decoder (Node 22.15+) fails while the download waits for it to drain; that failure
    // is the payload's fault, not the network's (no "connection lost ... resuming").
    const good = sha(dest)
    const source = readFileSync(join(dir, 'good.db.zst'))
    for (const at of [0.2, 0.35, 0.5, 0.65, 0.8, 0.95]) {
      const bad = Buffer.from(source)
      for (let i = 0; i < 64; i++) bad[Math.min(bad.length - 1, Math.floor(bad.length * at) + i * 97)]! ^= 0x5a
      const name = `corrupt-${at}.db.zst`
      writeFileSync(join(dir, name), bad)
      server.files.set(`/${name}`, join(dir, name))
      const r = await dl(`${server.url}/${name}`, ['--force'])
      t.equal(r.code, 1, `${name}: exit 1`)
      t.match(
        r.stderr,
        /^desfs: the download from .* is corrupt \(zstd: [^\n]*\); it was removed and .*metadata\.db was not touched[^\n]*\n?$/,
        `${name}: one line saying it is corrupt (${r.stderr.trim()})`,
      )
      t.equal(sha(dest), good, `${name}: the DB is unchanged`)
    }
  })

  await t.test('bad payloads are rejected and the existing DB is not touched', async (t) => {
    const good = sha(dest)
    const ino = statSync(dest).ino
    // Corrupt compressed data (bytes flipped in the middle).
    const corrupt = readFileSync(join(dir, 'good.db.zst'))
    for (let i = 0; i < 64; i++) corrupt[Math.floor(corrupt.length / 2) + i * 97]! ^= 0x5a
    writeFileSync(join(dir, 'corrupt.db.zst'), corrupt)
    server.files.set('/corrupt.db.zst', join(dir, 'corrupt.db.zst'))
    // Valid zstd, but not SQLite.
    writeFileSync(join(dir, 'text'), randomBytes(200_000).toString('base64'))
    await zstd(t, join(dir, 'text'), join(dir, 'text.db.zst'))
    server.files.set('/text.db.zst', join(dir, 'text.db.zst'))
    // Valid zstd of a SQLite file missing its last pages (a truncated DB that still opens).
    writeFileSync(join(dir, 'half'), readFileSync(src).subarray(0, statSync(src).size - 3 * 4096))
    await zstd(t, join(dir, 'half'), join(dir, 'half.db.zst'))
    server.files.set('/half.db.zst', join(dir, 'half.db.zst'))
    // SQLite, but not the metadata DB.
    const other = new Database(join(dir, 'other.db'))
    other.exec('CREATE TABLE T (X)')
    other.close()
    await zstd(t, join(dir, 'other.db'), join(dir, 'other.db.zst'))
    server.files.set('/other.db.zst', join(dir, 'other.db.zst'))

    const cases: [string, RegExp][] = [
      ['corrupt.db.zst', /is corrupt \(zstd: .*\); it was removed and .*metadata\.db was not touched/],
      ['text.db.zst', /not a readable SQLite database.*was not touched/],
      ['half.db.zst', /(truncated: \d+ bytes, its header says \d+|database disk image is malformed).*was not touched/],
      ['other.db.zst', /no usable file table.*was not touched/],
    ]
    for (const [name, why] of cases) {
      const r = await dl(`${server.url}/${name}`, ['--force'])
      t.equal(r.code, 1, `${name}: exit 1`)
      t.match(r.stderr, why, `${name}: says why`)
      t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
      t.equal(sha(dest), good, `${name}: the DB is unchanged`)
      t.equal(statSync(dest).ino, ino, `${name}: the DB file was not replaced`)
      t.same(leftovers(join(home, '.des_archive_access')), [], `${name}: nothing left behind`)
    }
  })

  await t.test('an uncompressed URL downloads and resumes too', async (t) => {
    server.files.set('/plain.db', src)
    server.log.length = 0
    server.dropAfterBytes = 1_000_000
    server.dropCount = 1
    const r = await dl(`${server.url}/plain.db`, ['--force'])
    t.equal(r.code, 0, r.stderr)
    t.same(ranges(), [0, ...resumes(r.stderr)], 'resumed after the bytes on disk')
    t.equal(sha(dest), sha(src))
  })

  await t.test('a missing URL is a one-line error', async (t) => {
    const r = await dl(`${server.url}/nope.db.zst`, ['--force'])
    t.equal(r.code, 4)
    t.match(r.stderr, /HTTP 404 \(not found: check --url/)
  })
})
