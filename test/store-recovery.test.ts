// The block store in this process, on what its record promises after the fact: eviction takes the
// least recently used file first and passes over files in use and pinned ones (until unpinned); a
// record reopened over a data file that is missing, shorter, or corrupt forgets (and persists that
// it forgot) exactly the blocks it cannot back, and the fetcher then fetches those again.
import t, { type Test } from 'tap'
import { openSync, writeSync, closeSync, truncateSync, rmSync } from 'node:fs'
import { BlockStore, cacheKey, type CachedFile } from '../cache/block-store.js'
import { adler32 } from '../cache/adler32.js'
import { fetcherOver } from './fakes/fetcher-over.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { ScriptedSource, expected } from './fakes/scripted-source.js'
import { tmp } from './helpers.js'

const BS = 65536

function open(t: Test, dir: string, limit = 64 * BS, pinLimit = limit): BlockStore {
  const s = new BlockStore(dir, { limit, blockSize: BS, lowWater: 0.75, pinLimit, minFree: 0, cleanupDelayMs: 3_600_000 })
  t.teardown(() => s.close())
  return s
}

/** Stores every block of a file with the bytes a ScriptedSource would serve. */
async function fill(f: CachedFile): Promise<void> {
  for (let i = 0; i < f.blocks; i++) {
    const b = expected(i * BS, i * BS + f.blockLength(i))
    t.ok(await f.writeBlock(i, b, adler32(b)), `${f.relPath} block ${i} stored`)
  }
}

t.test('eviction order: least recently used first, passing over files in use and pinned files', async (t) => {
  const s = open(t, tmp(t), 4 * BS)
  const evicted: string[] = []
  const names = new Map<string, string>()
  s.onEvict((key) => evicted.push(names.get(key) ?? key))
  // Every listener hears each eviction, not only the last one added.
  const heardToo: string[] = []
  s.onEvict((key) => heardToo.push(names.get(key) ?? key))
  const file = (n: string) => {
    names.set(cacheKey(n), n)
    return s.file(n, BS, null)
  }
  for (const n of ['a', 'b', 'c', 'd']) await fill(file(n))
  s.touch(file('a')) // order now: b c d a
  s.hold(file('b'))
  s.pin([{ rel: 'c', size: BS }])
  await fill(file('e'))
  t.same(evicted, ['d'], 'b is open and c pinned: d, the next least recently used, goes')
  await fill(file('f'))
  t.same(evicted, ['d', 'a'], 'then a (touched before e and f were written)')
  s.release(file('b'))
  await fill(file('g'))
  t.same(evicted, ['d', 'a', 'b'], 'b, closed now, is the least recently used')
  t.equal(s.unpin(['c']), 1)
  await fill(file('h'))
  t.same(evicted, ['d', 'a', 'b', 'c'], 'c, unpinned, is the oldest and goes next')
  t.same(heardToo, evicted, 'a second listener hears every eviction too')
  t.same(
    s.entries().map((e) => e.path),
    ['e', 'f', 'g', 'h'],
    'what is left on record',
  )
  t.ok(s.bytes <= 4 * BS, 'within the bound throughout')
})

t.test('pins survive a restart and an evict-all, and count against the cap', async (t) => {
  const dir = tmp(t)
  let s: BlockStore | undefined = new BlockStore(dir, {
    limit: 4 * BS,
    blockSize: BS,
    pinLimit: 2 * BS,
    minFree: 0,
    cleanupDelayMs: 3_600_000,
  })
  await fill(s.file('p', 2 * BS, null))
  await fill(s.file('q', BS, null))
  s.pin([{ rel: 'p', size: 2 * BS }])
  await s.close()
  s = open(t, dir, 4 * BS, 2 * BS)
  const r = await s.evict([''])
  t.same([r.files, r.skippedPinned], [1, 1], 'evict-all takes q and passes over the pinned p')
  t.same(
    s.entries().map((e) => [e.path, e.pinned, e.bytes]),
    [['p', true, 2 * BS]],
    'p is still cached and pinned after the restart',
  )
  t.throws(() => s!.pin([{ rel: 'q', size: BS }]), /over the pin cap/, 'the cap counts the pin kept across the restart')
})

t.test('a record reopened over a missing or shorter data file forgets the blocks it cannot back, for good', async (t) => {
  const dir = tmp(t)
  let s = new BlockStore(dir, { limit: 64 * BS, blockSize: BS, minFree: 0, cleanupDelayMs: 3_600_000 })
  await fill(s.file('gone', 2 * BS, null))
  await fill(s.file('short', 3 * BS, null))
  await fill(s.file('idle', 2 * BS, null))
  await s.close()
  rmSync(s.dataPath(cacheKey('gone')))
  truncateSync(s.dataPath(cacheKey('short')), BS + 100)
  rmSync(s.dataPath(cacheKey('idle')))

  s = new BlockStore(dir, { limit: 64 * BS, blockSize: BS, minFree: 0, cleanupDelayMs: 3_600_000 })
  t.equal(s.bytes, 7 * BS, 'the record still claims every block before anything is opened')
  const out = Buffer.alloc(100)
  const gone = s.file('gone', 2 * BS, null)
  t.notOk(await gone.readInto(out, 0, 100), 'a block of the missing data file is not served')
  t.equal(gone.present.size, 0, 'every block of it is forgotten')
  const short = s.file('short', 3 * BS, null)
  t.ok(await short.readInto(out, 0, 100), 'the block the shorter file still holds is served')
  t.ok(out.equals(expected(0, 100)), 'with its bytes')
  t.same([...short.present.keys()], [0], 'the blocks past its end are forgotten')
  const cleaned = await s.cleanup()
  t.equal(cleaned.evicted, 1, 'the background check drops the record of the file nobody opened (idle)')
  t.same(
    s
      .entries()
      .filter((e) => e.bytes > 0)
      .map((e) => [e.path, e.bytes]),
    [['short', BS]],
    'what the record holds now',
  )
  await s.close()

  s = open(t, dir)
  t.equal(s.bytes, BS, 'after another restart the record still holds only what is on disk')
  t.equal(s.file('gone', 2 * BS, null).present.size, 0)
  t.same([...s.file('short', 3 * BS, null).present.keys()], [0])
})

t.test('a corrupt block on disk is refetched by the fetcher, and the reader gets the right bytes', async (t) => {
  const dir = tmp(t)
  let s = new BlockStore(dir, { limit: 64 * BS, blockSize: BS, minFree: 0, cleanupDelayMs: 3_600_000 })
  await fill(s.file('OPS/f.fits', 3 * BS, null))
  await s.close()
  const fd = openSync(s.dataPath(cacheKey('OPS/f.fits')), 'r+')
  writeSync(fd, Buffer.from([expected(BS + 9, BS + 10)[0]! ^ 0xff]), 0, 1, BS + 9)
  closeSync(fd)

  s = open(t, dir)
  const src = new ScriptedSource()
  const fetcher = fetcherOver(new SourceSet([src]), s, { smallFileBytes: 0 })
  const f = s.file('OPS/f.fits', 3 * BS, null)
  const dest = Buffer.alloc(3 * BS)
  t.equal(await fetcher.readInto(f, 0, 3 * BS, dest, () => true), 3 * BS)
  t.ok(dest.equals(expected(0, 3 * BS)), 'every byte right, the flipped one too')
  t.same(
    src.calls.map((c) => [c.start, c.end]),
    [[BS, 2 * BS]],
    'only the corrupt block was fetched again',
  )
  await fetcher.settled()
  t.ok(f.has(1), 'and it is back in the cache')
})
