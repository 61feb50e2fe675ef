// A mountpoint that cannot work, and a negative size, each get one line naming the real cause (not
// "the kernel refused the mount", not a parser's "argument is ambiguous"), before anything is built.
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { desfs, makeArchive, tmp } from './helpers.js'

t.test('bad mountpoints and a negative cache size are one line each, naming the cause', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false, fpack: 'never' })
  const dir = tmp(t)
  const nonEmpty = join(dir, 'DESDATA')
  mkdirSync(nonEmpty)
  writeFileSync(join(nonEmpty, 'notes.txt'), 'mine\n')
  const env = {
    ...process.env,
    DESFS_CONFIG: join(dir, 'none'),
    DESFS_STATE_DIR: join(dir, 'state'),
    DESFS_CACHE_DIR: join(dir, 'cache'),
    DES_ARCHIVE_ACCESS_DB: a.db,
  }
  const cases: [string[], RegExp][] = [
    [
      [nonEmpty],
      /mountpoint .*DESDATA is not empty \(1 entries, e\.g\. notes\.txt\): the mount would hide them; choose an empty directory/,
    ],
    [['/'], /cannot mount on \/: choose an empty directory/],
    [['/proc/self'], /cannot mount on \/proc\/self \(\/proc\/\d+ is inside \/proc, a kernel file system\)/],
    [[join(dir, 'new'), '--cache-size', '-1'], /cache_size \(from flag --cache-size\): '-1' is not a size/],
  ]
  if (process.getuid?.() === 0) mkdirSync(join(dir, 'new'))
  for (const [args, want] of cases) {
    const r = await desfs(['mount', ...args, '--foreground'], { env, timeoutMs: 60_000 })
    t.not(r.code, 0, `desfs mount ${args.join(' ')} fails`)
    t.match(r.stderr, want, args.join(' '))
    t.equal(r.stderr.trim().split('\n').length, 1, 'in one line')
    t.notMatch(r.stderr, /kernel refused|ambiguous/, 'naming the real cause')
  }
})
