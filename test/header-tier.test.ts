// The header tier (cache/header-tier.ts) on a block store of its own: a file evicted with header
// ranges keeps exactly the blocks holding them (bytes equal, others absent, space accounted, across a
// restart), `cache evict` still removes it whole, the tier's own bound deletes its oldest files, and a
// crash between the record's change and the data file's rewrite serves nothing wrong.
import t, { type Test } from 'tap'
import { existsSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { BlockStore, cacheKey, type CachedFile } from '../cache/block-store.js'
import { BlockRecord } from '../cache/block-record.js'
import { adler32 } from '../cache/adler32.js'
import { tmp } from './helpers.js'

const BS = 64 * 1024

function open(dir: string, limit: number, headerTierLimit: number) {
  return new BlockStore(dir, { limit, blockSize: BS, lowWater: 0.75, minFree: 0, cleanupDelayMs: 3_600_000, headerTierLimit })
}

/** The bytes of block `i` of a file (deterministic). */
const blockBytes = (f: CachedFile, i: number) => Buffer.alloc(f.blockLength(i), (i * 7 + f.relPath.length) & 0xff)

/** Writes every block of a file, as the fetcher would. */
async function fill(f: CachedFile): Promise<void> {
  for (let i = 0; i < f.blocks; i++) {
    const b = blockBytes(f, i)
    if (!(await f.writeBlock(i, b, adler32(b)))) throw new Error(`block ${i} of ${f.relPath} not stored`)
  }
}

/** Waits until no data file is being removed or rewritten. */
async function settled(s: BlockStore): Promise<void> {
  for (let i = 0; i < 100 && s.unlinking.size; i++) await Promise.all([...s.unlinking.values()])
}

/** Block `i` as the cache serves it from disk, or undefined when it is not there. */
async function served(f: CachedFile, i: number): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(f.blockLength(i))
  return (await f.readInto(buf, i * BS, buf.length)) ? buf : undefined
}

// The header of HDU 0 in block 0, that of HDU 1 in block 5 (8 blocks in all).
const HEADERS: [number, number][] = [
  [0, 2880],
  [5 * BS + 100, 2880],
]

t.test('an evicted file with header ranges keeps exactly its header blocks', async (t) => {
  const dir = tmp(t)
  let s = open(dir, 16 * BS, 4 * BS)
  t.teardown(() => s.close())
  const keep = (rel: string) => (rel === 'OPS/h.fits' ? HEADERS : undefined)
  s.tier.keep = keep
  await fill(s.file('OPS/h.fits', 8 * BS, null))
  await fill(s.file('OPS/a.fits', 8 * BS, null))
  t.equal(s.bytes, 16 * BS, 'the cache is full')
  await fill(s.file('OPS/b.fits', 4 * BS, null)) // h is the least recently used
  await settled(s)
  const h = s.entries('OPS/h.fits')[0]
  t.ok(h, 'h is still cached')
  t.equal(h?.bytes, 2 * BS, 'with two blocks')
  t.equal(h?.tier, true, 'in the header tier')
  t.same(
    s.entries().map((e) => e.path),
    ['OPS/a.fits', 'OPS/b.fits', 'OPS/h.fits'],
    'a, the next least recently used, is kept: h freed enough',
  )
  t.equal(s.bytes, (2 + 8 + 4) * BS, 'space on record: the kept blocks only')
  t.equal(s.summary().headerTierBytes, 2 * BS)
  t.equal(s.summary().bytesEvicted, 6 * BS, 'the blocks let go of count as evicted')
  const data = s.dataPath(cacheKey('OPS/h.fits'))
  t.ok(statSync(data).blocks * 512 <= 2 * BS + 16384, `the data file holds about two blocks (${statSync(data).blocks * 512} bytes)`)
  t.notOk(existsSync(`${data}.tier`), 'no temporary file left')

  const check = async (t: Test, s: BlockStore) => {
    const f = s.file('OPS/h.fits', 8 * BS, null)
    t.same([...f.present.keys()].sort(), [0, 5], 'blocks 0 and 5 present')
    for (let i = 0; i < 8; i++) {
      const got = await served(f, i)
      if (i === 0 || i === 5) t.same(got, blockBytes(f, i), `block ${i}: the same bytes, from disk`)
      else t.equal(got, undefined, `block ${i} is not served from the cache`)
    }
  }
  await t.test('read back', (t) => check(t, s))
  await s.close()
  s = open(dir, 16 * BS, 4 * BS)
  s.tier.keep = keep
  t.equal(s.entries('OPS/h.fits')[0]?.tier, true, 'still in the tier after a restart')
  t.equal(s.bytes, 14 * BS)
  await t.test('read back after a restart', (t) => check(t, s))

  await t.test('a data block written to it: an ordinary cached file again', async (t) => {
    const f = s.file('OPS/h.fits', 8 * BS, null)
    const b = blockBytes(f, 3)
    t.ok(await f.writeBlock(3, b, adler32(b)))
    t.equal(s.entries('OPS/h.fits')[0]?.tier, false)
    t.equal(s.summary().headerTierBytes, 0)
  })

  await t.test('cache evict removes it whole', async (t) => {
    const answer = await s.evict(['OPS/h.fits'])
    t.equal(answer.files, 1)
    t.same(s.entries('OPS/h.fits'), [])
    t.notOk(existsSync(data), 'its data file is gone')
  })
})

t.test("the tier's bound deletes its least recently used files whole", async (t) => {
  const dir = tmp(t)
  const s = open(dir, 12 * BS, 2 * BS)
  t.teardown(() => s.close())
  s.tier.keep = () => [[0, 2880]] // every file: one header block
  const names = ['f1', 'f2', 'f3', 'f4', 'f5', 'f6'].map((n) => `OPS/${n}.fits`)
  for (const n of names) {
    await fill(s.file(n, 4 * BS, null))
    await settled(s)
    t.ok(s.tier.bytes <= 2 * BS, `tier within its bound after ${n} (${s.tier.bytes / BS} blocks)`)
    t.ok(s.bytes <= 12 * BS, 'cache within its bound')
  }
  const tier = s
    .entries()
    .filter((e) => e.tier)
    .map((e) => e.path)
  t.equal(tier.length, 2, 'two header blocks in the tier')
  t.notOk(s.entries('OPS/f1.fits').length, 'the first file demoted has left the tier since, whole')
  t.notOk(existsSync(s.dataPath(cacheKey('OPS/f1.fits'))), 'its data file too')
  // The tier's files are the most recently demoted: the files before those still whole in the cache.
  const whole = s
    .entries()
    .filter((e) => !e.tier)
    .map((e) => e.path)
  const lastTier = Math.max(...tier.map((p) => names.indexOf(p)))
  t.ok(
    whole.every((p) => names.indexOf(p) > lastTier),
    `tier ${tier.join(' ')}, whole ${whole.join(' ')}`,
  )
})

t.test('a file whose headers cannot be kept (its data file is gone) is evicted whole', async (t) => {
  const dir = tmp(t)
  const s = open(dir, 16 * BS, 4 * BS)
  t.teardown(() => s.close())
  s.tier.keep = () => HEADERS
  await fill(s.file('OPS/h.fits', 8 * BS, null))
  await fill(s.file('OPS/a.fits', 8 * BS, null))
  unlinkSync(s.dataPath(cacheKey('OPS/h.fits')))
  await fill(s.file('OPS/b.fits', 4 * BS, null))
  const done = await Promise.race([settled(s).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())])
  t.ok(done, 'the eviction ended')
  t.same(s.entries('OPS/h.fits'), [], 'h is gone from the cache')
  t.equal(s.tier.bytes, 0)
})

t.test('a crash between the record and the rewrite serves nothing wrong', async (t) => {
  const dir = tmp(t)
  let s = open(dir, 16 * BS, 4 * BS)
  t.teardown(() => s.close())
  await fill(s.file('OPS/h.fits', 8 * BS, null))
  await s.close()
  const key = cacheKey('OPS/h.fits')
  const data = s.dataPath(key)
  // The crash: the record says only blocks 0 and 5 (the tier's first step), the old data file is
  // still in place, and the new one was half written.
  const record = new BlockRecord(dir, BS, { entry: () => undefined, writeError: () => undefined, lost: () => undefined })
  t.ok(record.demote(key, [1, 2, 3, 4, 6, 7]))
  record.close()
  writeFileSync(`${data}.tier`, Buffer.alloc(3000, 0x55))

  s = open(dir, 16 * BS, 4 * BS)
  t.equal(s.entries('OPS/h.fits')[0]?.bytes, 2 * BS, 'the record names two blocks')
  const f = s.file('OPS/h.fits', 8 * BS, null)
  for (let i = 0; i < 8; i++) {
    const got = await served(f, i)
    if (i === 0 || i === 5) t.same(got, blockBytes(f, i), `block ${i}: right bytes`)
    else t.equal(got, undefined, `block ${i}: not served`)
  }
  const res = await s.cleanup()
  t.ok(res.orphans >= 1, 'the half-written file is an orphan')
  t.notOk(existsSync(`${data}.tier`), 'removed')
  // The old data file holds more than the record says: the check may evict it; either way only
  // recorded blocks, with their own bytes, are served.
  await settled(s)
  const g = s.file('OPS/h.fits', 8 * BS, null)
  for (const i of g.present.keys()) t.same(await served(g, i), blockBytes(g, i), `block ${i} after the check`)
  t.ok(s.bytes <= 2 * BS)
})

t.test("the check leaves alone a data file's rewrite in progress, and removes one left by a crash", async (t) => {
  const dir = tmp(t)
  const s = open(dir, 16 * BS, 4 * BS)
  t.teardown(() => s.close())
  await fill(s.file('OPS/h.fits', 8 * BS, null))
  const key = cacheKey('OPS/h.fits')
  const tierFile = `${s.dataPath(key)}.tier`
  // A rewrite under way, as evict() runs it: the key is in `unlinking` while `<key>.tier` is written.
  let end = () => {}
  s.unlinking.set(key, new Promise<void>((resolve) => (end = resolve)))
  writeFileSync(tierFile, Buffer.alloc(3000, 0x55))
  const during = await s.cleanup()
  t.ok(existsSync(tierFile), 'the rewrite in progress is not deleted under it')
  t.equal(during.orphans, 0)
  end()
  s.unlinking.delete(key)
  const after = await s.cleanup()
  t.notOk(existsSync(tierFile), 'with no rewrite running it is an orphan, removed')
  t.equal(after.orphans, 1)
  t.equal(s.entries('OPS/h.fits')[0]?.bytes, 8 * BS, 'the file itself is untouched')
})
