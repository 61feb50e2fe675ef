// The fetcher over the in-memory block cache (cache/memory-block-cache.ts), in this process with a
// scripted source and a fake clock (no disk store, no FUSE): fetched blocks are stored and later
// readers are served from the cache without a request; a whole file that does not match the
// archive's Adler-32 is dropped and its fetch fails; a cache that refuses blocks still lets readers
// have their bytes (from memory).
import t, { type Test } from 'tap'
import { newReadPattern, type Block, type Fetcher } from '../cache/fetcher.js'
import { MemoryBlockCache, type MemoryFile } from '../cache/memory-block-cache.js'
import { adler32, adler32Hex } from '../cache/adler32.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError } from '../cache/sources/source.js'
import { fetchMetrics } from '../cache/metrics.js'
import { metrics } from '../daemon/metrics.js'
import { FakeClock, ScriptedSource, expected, type Step } from './fakes/scripted-source.js'
import { fetcherOver } from './fakes/fetcher-over.js'

const BS = 64 * 1024

function setup(cache: MemoryBlockCache, script: Step[] = [], runBytes = 4 * BS) {
  const src = new ScriptedSource('scripted', script)
  const clock = new FakeClock()
  const fetcher = fetcherOver(new SourceSet([src], { clock }), cache, {
    smallFileBytes: 0,
    runBytes,
    backoffMs: 1,
    attemptsPerSource: 2,
    clock,
    random: () => 0.5,
  })
  return { src, fetcher }
}

async function read(fetcher: Fetcher, file: MemoryFile, pos: number, len: number): Promise<Buffer> {
  const dest = Buffer.alloc(len)
  const n = await fetcher.readInto(file, pos, len, dest, () => true, newReadPattern())
  return dest.subarray(0, n)
}

t.test('fetched blocks are stored in the cache; another fetcher over it reads them without a request', async (t: Test) => {
  const cache = new MemoryBlockCache(BS)
  const one = setup(cache)
  const file = cache.file('OPS/a.fits', 4 * BS + 100, null)
  t.ok((await read(one.fetcher, file, BS - 5, BS + 10)).equals(expected(BS - 5, 2 * BS + 5)), 'the bytes are right')
  await one.fetcher.settled()
  t.same(
    [0, 1, 2, 3, 4].map((i) => file.has(i)),
    [true, true, true, false, false],
    'the three blocks the read spans are stored',
  )
  t.equal(cache.inUse('OPS/a.fits'), false, 'and the file is no longer in use once the fetch is done')
  const two = setup(cache)
  t.ok((await read(two.fetcher, file, 2 * BS, BS)).equals(expected(2 * BS, 3 * BS)), 'a second fetcher reads block 2 right')
  t.equal(two.src.calls.length, 0, 'from the cache: no request')
  t.equal(two.fetcher.stats.diskHits, 1, 'counted as a hit of the cache')
})

t.test("a whole file that does not match the archive's checksum is dropped, and fetching it whole fails", async (t: Test) => {
  const size = 3 * BS + 7
  const right = adler32Hex(adler32(expected(0, size)))
  const cache = new MemoryBlockCache(BS)
  const dropped: string[] = []
  const good = cache.file('OPS/good.fits', size, right)
  const bad = cache.file('OPS/bad.fits', size, right)
  const { fetcher } = setup(cache)
  t.equal(await fetcher.fetchWhole(good), size, 'the right file is fetched whole')
  t.equal(good.complete, true, 'and stays in the cache')
  // One block per request: the blocks are stored one by one, and the last completes the file, whose
  // check is then the cache's (a run of the whole file is checked before anything is stored).
  const damaged = setup(cache, [{ corrupt: true }], BS).fetcher
  // The fetchers made over the cache listen for drops too: listen beside them.
  cache.onEvict((key) => dropped.push(key))
  // (The message is the one for blocks not stored, as over the disk store: the file was dropped.)
  await t.rejects(damaged.fetchWhole(bad), /OPS\/bad\.fits: could not be stored/, 'a damaged copy fails the fetch')
  t.same(dropped, [bad.key], 'the damaged file was dropped, and the fetcher told')
  t.equal(
    [0, 1, 2, 3].some((i) => bad.has(i)),
    false,
    'none of its blocks is left',
  )
  t.equal(cache.storedBlocks, 4, "only the right file's blocks are held")
})

t.test('a cache that refuses blocks (full) still lets the reader have its bytes, from memory', async (t: Test) => {
  const cache = new MemoryBlockCache(BS, 2)
  const { fetcher, src } = setup(cache)
  const file = cache.file('OPS/c.fits', 4 * BS, null)
  t.ok((await read(fetcher, file, 0, 4 * BS)).equals(expected(0, 4 * BS)), 'all four blocks read right')
  await fetcher.settled()
  t.equal(cache.storedBlocks, 2, 'two were stored, the rest refused')
  const calls = src.calls.length
  t.ok((await read(fetcher, file, 3 * BS, BS)).equals(expected(3 * BS, 4 * BS)), 'a refused block is read again right')
  t.equal(src.calls.length, calls, 'from the recent blocks in memory: no new request')
})

t.test('the bytes asked of the fetcher have a metric of their own, failed reads counted too', async (t: Test) => {
  const text = await metrics.render()
  t.match(text, /\ndesfs_fetcher_asked_bytes_total \d+\n/, 'named for what it counts')
  t.notMatch(text, /desfs_served_bytes_total/, 'the old name, which read like the bytes readers got, is gone')
  const cache = new MemoryBlockCache(BS)
  const { fetcher } = setup(cache, [{}, { fail: new SourceError('not_found', 'HTTP 404: gone', 404) }])
  const before = await metrics.value(fetchMetrics.bytesAsked)
  t.equal((await read(fetcher, cache.file('OPS/d.fits', 4 * BS, null), 10, 100)).length, 100, 'a read of 100 bytes')
  await t.rejects(read(fetcher, cache.file('OPS/gone.fits', 4 * BS, null), 0, 50), /404/, 'a read of 50 that fails')
  t.equal(await metrics.value(fetchMetrics.bytesAsked), before + 150, 'both counted: 150 bytes asked')
})

t.test("a sync's blocks are stored, not kept in memory, and a reader later gets them from the cache", async (t: Test) => {
  const cache = new MemoryBlockCache(BS)
  const { fetcher, src } = setup(cache)
  const file = cache.file('OPS/e.fits', 4 * BS, null)
  const forLater: (boolean | undefined)[] = []
  const writeBlocks = file.writeBlocks.bind(file)
  file.writeBlocks = (first: number, blocks: Block[], adlers: number[], later?: boolean) => {
    forLater.push(later)
    return writeBlocks(first, blocks, adlers)
  }
  t.equal(await fetcher.fetchWhole(file, new AbortController().signal), 4 * BS, 'fetched whole for a job')
  t.ok(forLater.length > 0 && forLater.every((x) => x === true), 'stored for later (around the page cache, on disk)')
  const calls = src.calls.length
  t.ok((await read(fetcher, file, BS, BS)).equals(expected(BS, 2 * BS)), 'a reader gets block 1 right')
  t.equal(src.calls.length, calls, 'without a request')
  t.same([fetcher.stats.memoryHits, fetcher.stats.diskHits], [0, 1], 'from the cache, not from memory')
})

t.test("a run's blocks are stored together, not one by one", async (t: Test) => {
  const cache = new MemoryBlockCache(BS)
  const { fetcher } = setup(cache)
  const file = cache.file('OPS/f.fits', 4 * BS, null)
  const stores: number[][] = []
  const writeBlocks = file.writeBlocks.bind(file)
  file.writeBlocks = (first: number, blocks: Block[], adlers: number[], later?: boolean) => {
    stores.push([first, blocks.length, later ? 1 : 0])
    return writeBlocks(first, blocks, adlers)
  }
  t.ok((await read(fetcher, file, 0, 4 * BS)).equals(expected(0, 4 * BS)), 'the four blocks read right')
  await fetcher.settled()
  t.same(stores, [[0, 4, 0]], "one store of blocks 0-3, not for later (a reader's: through the page cache)")
  t.equal(cache.storedBlocks, 4)
})
