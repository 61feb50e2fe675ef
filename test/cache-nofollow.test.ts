// Nothing in the cache dir or the state dir is reached through a symbolic link: links planted at a
// data file, at a data/xx directory, at the cache record or at the jobs directory are removed or
// refused, and the files they point to (victims inside this test's temporary directory) are left as
// they were. The block store runs in this process.
import t from 'tap'
import { existsSync, lchownSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { BlockStore, cacheKey } from '../cache/block-store.js'
import { adler32 } from '../cache/adler32.js'
import { ensurePrivateDir } from '../daemon/state-dir.js'
import { JobManager } from '../daemon/jobs/jobs.js'
import { desfs, tmp } from './helpers.js'

const BS = 64 * 1024

function open(dir: string) {
  return new BlockStore(dir, { limit: 64 * BS, blockSize: BS, minFree: 0, cleanupDelayMs: 3_600_000 })
}

const block = (i: number) => Buffer.alloc(BS, 0x41 + i)

/** A victim file (and the directory it is in) that desfs must never touch. */
function victim(base: string, content = 'precious\n'): { dir: string; file: string } {
  const dir = join(base, 'victim')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'precious.txt')
  writeFileSync(file, content)
  return { dir, file }
}

t.test('a link planted at a data file is removed, not written through', async (t) => {
  const base = tmp(t)
  const v = victim(base)
  const s = open(join(base, 'cache'))
  t.teardown(() => s.close())
  const path = s.dataPath(cacheKey('OPS/a.fits'))
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  symlinkSync(v.file, path)
  const f = s.file('OPS/a.fits', 2 * BS, null)
  t.ok(await f.writeBlock(0, block(0), adler32(block(0))), 'the block is stored')
  t.equal(readFileSync(v.file, 'utf8'), 'precious\n', 'the victim is untouched')
  t.ok(lstatSync(path).isFile(), 'the data file is a regular file now')
  const back = Buffer.alloc(BS)
  t.ok(await f.readInto(back, 0, BS), 'and reads back')
  t.ok(back.equals(block(0)))
})

t.test('a link planted at a data directory is removed: no file is made where it points', async (t) => {
  const base = tmp(t)
  const v = victim(base)
  const s = open(join(base, 'cache'))
  t.teardown(() => s.close())
  const path = s.dataPath(cacheKey('OPS/b.fits'))
  symlinkSync(v.dir, dirname(path))
  const f = s.file('OPS/b.fits', BS, null)
  t.ok(await f.writeBlock(0, block(1), adler32(block(1))), 'the block is stored')
  t.same(readdirSync(v.dir), ['precious.txt'], 'nothing was created in the directory the link pointed to')
  t.ok(lstatSync(dirname(path)).isDirectory(), 'the data directory is a real directory now')
  t.ok(lstatSync(path).isFile())
})

t.test('the background cleanup never lists or removes files through a linked data directory', async (t) => {
  const base = tmp(t)
  const v = victim(base)
  const s = open(join(base, 'cache'))
  t.teardown(() => s.close())
  symlinkSync(v.dir, join(base, 'cache', 'data', 'ab'))
  await s.cleanup()
  t.ok(existsSync(v.file), 'the file the link led to is still there')
  t.equal(readFileSync(v.file, 'utf8'), 'precious\n')
  t.notOk(existsSync(join(base, 'cache', 'data', 'ab')), 'the link itself was removed')
})

t.test('a data file swapped for a link while the cache runs is not served', async (t) => {
  const base = tmp(t)
  const v = victim(base, 'X'.repeat(BS))
  const s = open(join(base, 'cache'))
  t.teardown(() => s.close())
  const f = s.file('OPS/c.fits', BS, null)
  t.ok(await f.writeBlock(0, block(2), adler32(block(2))))
  await f.closeFd() // as when the file goes idle
  const path = s.dataPath(f.key)
  symlinkSync(v.file, path + '.new')
  renameSync(path + '.new', path)
  const back = Buffer.alloc(BS)
  t.notOk(await f.readInto(back, 0, BS), 'the read misses (the block is fetched again)')
  t.notOk(back.equals(readFileSync(v.file)), 'the link target is not served as the block')
  t.notOk(f.has(0), 'the block is no longer on record')
  t.equal(readFileSync(v.file, 'utf8'), 'X'.repeat(BS), 'the victim is untouched')
})

t.test('a cache record that is a link is refused', async (t) => {
  const base = tmp(t)
  const v = victim(base, '')
  const dir = join(base, 'cache')
  mkdirSync(dir, { mode: 0o700 })
  symlinkSync(v.file, join(dir, 'cache.sqlite'))
  t.throws(() => open(dir), /cache record .*cache\.sqlite is a symbolic link.*remove it/)
  t.equal(readFileSync(v.file, 'utf8'), '', 'the file it points to was not made a database')
})

t.test('a jobs directory that is a link is replaced by a real one', async (t) => {
  const base = tmp(t)
  const v = victim(base)
  const state = join(base, 'state')
  mkdirSync(state, { mode: 0o700 })
  symlinkSync(v.dir, join(state, 'jobs'))
  const jobs = new JobManager(state)
  t.teardown(() => jobs.close())
  t.ok(lstatSync(join(state, 'jobs')).isDirectory(), 'jobs is a real directory')
  t.same(readdirSync(v.dir), ['precious.txt'])
})

t.test(
  'a state dir that is a link made by another user is refused',
  { skip: process.getuid?.() !== 0 && 'needs root to give a link another owner' },
  async (t) => {
    const base = tmp(t)
    const mine = join(base, 'mine')
    mkdirSync(mine, { mode: 0o700 })
    const planted = join(base, 'state')
    symlinkSync(mine, planted)
    lchownSync(planted, 65534, 65534)
    t.throws(() => ensurePrivateDir(planted, 'state dir'), /state dir .* is a symbolic link made by another user \(uid 65534\)/)
    const own = join(base, 'own-link')
    symlinkSync(mine, own)
    t.doesNotThrow(() => ensurePrivateDir(own, 'state dir'), 'a link of our own (~/.cache -> /scratch) is fine')
  },
)

t.test('desfs mount does not append its log through a link in the state dir', async (t) => {
  const base = tmp(t)
  const v = victim(base)
  const state = join(base, 'state')
  mkdirSync(state, { mode: 0o700 })
  mkdirSync(join(base, 'mnt'))
  symlinkSync(v.file, join(state, 'desfs.log'))
  const env = { ...process.env, DESFS_CONFIG: join(base, 'no-config'), HOME: base }
  // No DB and no archive are needed: the log is opened before the daemon starts.
  const r = await desfs(
    [
      'mount',
      join(base, 'mnt'),
      '--state-dir',
      state,
      '--cache-dir',
      join(base, 'cache'),
      '--db',
      join(base, 'none.db'),
      '--archive',
      'http://127.0.0.1:9/x',
    ],
    { env, timeoutMs: 30_000 },
  )
  t.not(r.code, 0, 'the mount is refused')
  t.match(r.stderr, /^desfs: cannot open the log .*desfs\.log \(it is a symbolic link: remove it\)\n$/, 'with one line that says why')
  t.equal(readFileSync(v.file, 'utf8'), 'precious\n', 'the victim is untouched')
})
