// The block store on its own (no mount): the size bound, LRU order across restarts, pins and their
// cap, files in use, crash leftovers cleaned in the background, and SigV4 against AWS's example.
import t from 'tap'
import { existsSync, readdirSync, writeFileSync, mkdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { BlockStore, cacheKey, type CachedFile } from '../cache/block-store.js'
import { adler32 } from '../cache/adler32.js'
import { archivePath } from '../daemon/control/routes-cache.js'
import { parseSources } from '../daemon/config.js'
import { tmp } from './helpers.js'

const BS = 64 * 1024

function open(dir: string, limit: number, extra: Partial<ConstructorParameters<typeof BlockStore>[1]> = {}) {
  return new BlockStore(dir, { limit, blockSize: BS, lowWater: 0.75, minFree: 0, cleanupDelayMs: 3_600_000, ...extra })
}

/** Writes every block of a file (deterministic bytes), as the fetcher would. */
async function fill(f: CachedFile, blocks = f.blocks): Promise<boolean[]> {
  const out: boolean[] = []
  for (let i = 0; i < blocks; i++) {
    const b = Buffer.alloc(f.blockLength(i), (i * 7 + f.relPath.length) & 0xff)
    out.push(await f.writeBlock(i, b, adler32(b)))
  }
  return out
}

t.test('the bound holds and the least recently used files go first, down to the low-water mark', async (t) => {
  const dir = tmp(t)
  const s = open(dir, 8 * BS)
  t.teardown(() => s.close())
  const files = ['a', 'b', 'c', 'd'].map((n) => s.file(`OPS/${n}.fits`, 2 * BS, null))
  for (const f of files) await fill(f)
  t.equal(s.bytes, 8 * BS, 'four 2-block files fill the 8-block cache')
  s.touch(files[0]!) // a is now the most recently used
  const e = s.file('OPS/e.fits', 2 * BS, null)
  await fill(e)
  t.ok(s.bytes <= 8 * BS, `still within the bound (${s.bytes / BS} blocks)`)
  const left = s.entries().map((x) => x.path)
  t.notOk(left.includes('OPS/b.fits'), 'b (least recently used) was evicted')
  t.ok(left.includes('OPS/a.fits'), 'a (touched) was kept')
  t.ok(left.includes('OPS/e.fits'), 'the new file is cached')
  t.equal(s.summary().filesEvicted, 1, 'one eviction made room down to the low-water mark for both new blocks')
  await new Promise((r) => setTimeout(r, 20))
  t.notOk(existsSync(s.dataPath(cacheKey('OPS/b.fits'))), "b's data file is gone")
})

t.test('files in use and pinned files are never evicted; with nothing evictable blocks are not stored', async (t) => {
  const dir = tmp(t)
  const s = open(dir, 4 * BS, { pinLimit: 2 * BS })
  t.teardown(() => s.close())
  const a = s.file('A', 2 * BS, null)
  const b = s.file('B', 2 * BS, null)
  await fill(a)
  await fill(b)
  s.hold(a)
  s.pin([{ rel: 'B', size: 2 * BS }])
  const c = s.file('C', 2 * BS, null)
  t.same(await fill(c), [false, false], 'no room: the blocks are served from memory, not stored')
  t.equal(s.bytes, 4 * BS, 'nothing was evicted')
  t.equal(s.summary().notStored, 2)
  t.throws(
    () => s.pin([{ rel: 'C', size: 2 * BS }]),
    /cannot pin 1 files \(128 KiB\): pinned files would take 256 KiB, over the pin cap of 128 KiB \(128 KiB pinned now\)/,
    'pinning beyond the cap is refused with the numbers',
  )
  s.release(a)
  t.same(await fill(c), [true, true], 'once A is closed it can go')
  t.same(
    s.entries().map((x) => x.path),
    ['B', 'C'],
  )
  t.equal((await s.evict(['B'])).skippedPinned, 1, 'evict skips pinned files')
  t.equal(s.unpin(['B']), 1)
  const r = await s.evict([''], { dryRun: true })
  t.same([r.files, r.bytes], [2, 4 * BS], 'a dry run counts everything')
  t.equal(s.bytes, 4 * BS, 'and changes nothing')
})

t.test('a restart keeps the cache, its LRU order and its pins; leftovers of a crash are cleaned in the background', async (t) => {
  const dir = tmp(t)
  let s = open(dir, 6 * BS)
  for (const n of ['x', 'y', 'z']) await fill(s.file(n, 2 * BS, null))
  s.touch(s.file('x', 2 * BS, null))
  s.pin([{ rel: 'y', size: 2 * BS }])
  await s.close()
  // A crash leftover: a data file with no record.
  const orphan = join(dir, 'data', 'ff', 'ff' + '0'.repeat(30))
  mkdirSync(join(dir, 'data', 'ff'), { recursive: true })
  writeFileSync(orphan, Buffer.alloc(BS))
  s = open(dir, 6 * BS)
  t.teardown(() => s.close())
  t.equal(s.bytes, 6 * BS, 'the cache survived')
  const x = s.file('x', 2 * BS, null)
  t.equal(x.present.size, 2, 'blocks are known after the restart')
  t.equal(x.verified.size, 0, 'but not trusted until checked')
  t.ok(await x.verifyBlock(0), 'a good block passes its check')
  await fill(s.file('w', 2 * BS, null))
  t.same(
    s
      .entries()
      .map((e) => e.path)
      .sort(),
    ['w', 'x', 'y'],
    'z, least recently used before the restart, went first; y is pinned',
  )
  const res = await s.cleanup()
  t.equal(res.orphans, 1, 'the orphan data file was found')
  t.notOk(existsSync(orphan), 'and removed')
})

t.test('a block whose bytes changed on disk is dropped, not served', async (t) => {
  const dir = tmp(t)
  let s = open(dir, 8 * BS)
  await fill(s.file('f', 3 * BS, null))
  await s.close()
  const data = s.dataPath(cacheKey('f'))
  const buf = Buffer.from([0x55])
  const { openSync, writeSync, closeSync } = await import('node:fs')
  const fd = openSync(data, 'r+')
  writeSync(fd, buf, 0, 1, BS + 17)
  closeSync(fd)
  s = open(dir, 8 * BS)
  t.teardown(() => s.close())
  const f = s.file('f', 3 * BS, null)
  const out = Buffer.alloc(100)
  t.ok(await f.readInto(out, 0, 100), 'block 0 reads')
  t.notOk(await f.readInto(out, BS, 100), 'block 1 fails its check')
  t.notOk(f.has(1), 'and is dropped')
  t.equal(s.bytes, 2 * BS, 'the record shrank with it')
  t.ok(statSync(data).size >= 3 * BS)
  t.equal(readdirSync(join(dir, 'data')).length, 1)
})

t.test('paths given to desfs cache map to archive paths without touching the mount', async (t) => {
  t.equal(archivePath('OPS/a/b.fits', '/home/u', '/mnt/D'), 'OPS/a/b.fits')
  t.equal(archivePath('/mnt/D/OPS/a/', undefined, '/mnt/D'), 'OPS/a')
  t.equal(archivePath('b.fits', '/mnt/D/OPS/a', '/mnt/D'), 'OPS/a/b.fits')
  t.equal(archivePath('/mnt/D', undefined, '/mnt/D'), '')
  t.throws(() => archivePath('/etc/passwd', undefined, '/mnt/D'), /not under the mount/)
  t.throws(() => archivePath('OPS/../../x', '/home', '/mnt/D'), /'\.\.' is not allowed/)
})

t.test('the sources setting', async (t) => {
  t.same(parseSources('auto', { mirror: true, s3: true }), ['mirror', 'archive', 's3'])
  t.same(parseSources('auto', { mirror: false, s3: false }), ['archive'])
  t.same(parseSources('s3, archive', { mirror: false, s3: true }), ['s3', 'archive'])
  t.throws(() => parseSources('s3', { mirror: false, s3: false }), /s3_url is not set/)
  t.throws(() => parseSources('ftp', { mirror: false, s3: false }), /'ftp' is not a source/)
})
