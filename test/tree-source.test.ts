// Where the tree comes from: the DESDM table found whatever the case of its table and column names,
// a --tree-query for other layouts, and a clear refusal for a DB that has neither.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startDaemon, desfs, tmp } from './helpers.js'
import { seededTree, findAll } from './tree-fixtures.js'

t.jobs = 1

const NO_ARCHIVE = 'http://127.0.0.1:9' // sizes are pre-seeded: the archive is never asked

async function mountsAll(t: Test, s: ReturnType<typeof seededTree>, flags: string[] = []) {
  const d = await startDaemon(t, { db: s.db, archive: NO_ARCHIVE, stateDir: s.stateDir, flags })
  const got = await findAll(d.mnt)
  t.equal(got.files.size, s.sizes.size, `every file (${s.sizes.size})`)
  t.same(
    [...got.files].filter(([p, size]) => s.sizes.get(p) !== size),
    [],
    'the same paths and sizes',
  )
  return d
}

t.test('the file table is found whatever the case of its names', async (t) => {
  const s = seededTree(t, 3000, { table: 'y6a2_file_archive_info', columns: ['path', 'FileName', 'compression'] })
  const d = await mountsAll(t, s)
  t.match(d.log(), /table=y6a2_file_archive_info/)
})

t.test('--tree-query reads another layout', async (t) => {
  const s = seededTree(t, 3000, { table: 'files', columns: ['dir', 'name', 'ext'], hostile: true })
  const d = await mountsAll(t, s, ['--tree-query', 'SELECT dir, name, ext FROM files'])
  t.match(d.log(), /table="custom tree query"/)
  t.match(d.log(), /metadata rows refused: skipped 18 rows/, 'hostile rows are refused from a custom query too')
})

t.test('a DB without a usable file table fails at start, naming what was looked for', async (t) => {
  const cases: [string, string, RegExp][] = [
    [
      'no such table',
      'CREATE TABLE Y6A2_IMAGE (FILENAME TEXT)',
      /has no usable file table \(looked for a table named like Y6A2_FILE_ARCHIVE_INFO with PATH and FILENAME columns; found Y6A2_IMAGE\)/,
    ],
    [
      'the table without a PATH column',
      'CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, COMPRESSION TEXT)',
      /has no usable file table \(looked for a table named like Y6A2_FILE_ARCHIVE_INFO with PATH and FILENAME columns; found Y6A2_FILE_ARCHIVE_INFO\)/,
    ],
    ['an empty database', '', /has no usable file table \(.*found no tables\)/],
  ]
  for (const [what, sql, message] of cases) {
    await t.test(what, async (t) => {
      const dir = tmp(t)
      const db = join(dir, 'metadata.db')
      const sq = new Database(db)
      sq.exec(sql || 'CREATE TABLE x (a); DROP TABLE x')
      sq.close()
      mkdirSync(join(dir, 'mnt'))
      const r = await desfs(
        [
          'mount',
          join(dir, 'mnt'),
          '--foreground',
          '--db',
          db,
          '--archive',
          NO_ARCHIVE,
          '--state-dir',
          join(dir, 'state'),
          '--cache-dir',
          join(dir, 'cache'),
        ],
        {
          timeoutMs: 30_000,
          env: { ...process.env, DESFS_CONFIG: join(dir, 'none') },
        },
      )
      t.equal(r.code, 3)
      t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr.trim()}`)
      t.match(r.stderr, message)
      t.match(r.stderr, /--tree-query/, 'and the way out')
    })
  }
  await t.test('a --tree-query that does not run, or returns too few columns', async (t) => {
    const s = seededTree(t, 300)
    for (const [q, message] of [
      ['SELECT nope FROM nowhere', /--tree-query does not run on .*: no such table: nowhere/],
      [
        'SELECT PATH, FILENAME FROM Y6A2_FILE_ARCHIVE_INFO',
        /--tree-query must return three columns \(path, filename, compression\); it returns 2/,
      ],
    ] as const) {
      mkdirSync(join(s.dir, 'mnt'), { recursive: true })
      const r = await desfs(
        [
          'mount',
          join(s.dir, 'mnt'),
          '--foreground',
          '--db',
          s.db,
          '--archive',
          NO_ARCHIVE,
          '--state-dir',
          s.stateDir,
          '--cache-dir',
          join(s.dir, 'cache'),
          '--tree-query',
          q,
        ],
        {
          timeoutMs: 30_000,
          env: { ...process.env, DESFS_CONFIG: join(s.dir, 'none') },
        },
      )
      t.equal(r.code, 2, q)
      t.match(r.stderr.trim(), message)
    }
  })
})
