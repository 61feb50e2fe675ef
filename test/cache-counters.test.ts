// Each figure the store and the fetcher keep (what `desfs status` and `desfs cache stats` show) is
// counted once and feeds its metric in the daemon's registry: the figures and the metrics move in step.
import t from 'tap'
import { Counters } from '../cache/counters.js'
import { blockAdler32 } from '../cache/block.js'
import { cacheMetrics, fetchMetrics } from '../cache/metrics.js'
import { metrics } from '../daemon/metrics.js'
import { fetcherOver, testStore } from './fakes/fetcher-over.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError } from '../cache/sources/source.js'
import { FakeClock, ScriptedSource } from './fakes/scripted-source.js'
import { tmp } from './helpers.js'

const BS = 65536

t.test('Counters: add updates the figure and feeds its metric once, with its label', async (t) => {
  const fed: [number, string | undefined][] = []
  const c = new Counters({ a: (n, label) => fed.push([n, label]), b: null })
  c.add('a')
  c.add('a', 5, 'x')
  c.add('b', 2)
  t.same(c.values, { a: 6, b: 2 }, 'the figures')
  t.same(
    fed,
    [
      [1, undefined],
      [5, 'x'],
    ],
    'the metric was fed each add of a, and nothing for b (it feeds none)',
  )
  t.same(Object.keys(c.values), ['a', 'b'], 'figures keep the order they were declared in')
})

t.test("the fetcher's figures and its metrics move in step", async (t) => {
  const src = new ScriptedSource('counted', [{ deliver: 100, fail: new SourceError('network', 'connection reset') }])
  const store = testStore(tmp(t), { limit: 256 << 20, blockSize: BS })
  t.teardown(() => store.close())
  const clock = new FakeClock()
  const fetcher = fetcherOver(new SourceSet([src], { clock, downAfter: 3, downMs: 10_000 }), store, {
    smallFileBytes: 0,
    backoffMs: 10,
    runBytes: BS,
    clock,
    random: () => 0.5,
  })
  const metric = async () => ({
    requests: await metrics.value(fetchMetrics.requests, { source: 'counted' }),
    bytesFetched: await metrics.value(fetchMetrics.bytesFetched, { source: 'counted' }),
    retries: await metrics.value(fetchMetrics.retries),
    failures: await metrics.value(fetchMetrics.failures),
    memoryHits: await metrics.value(fetchMetrics.hits, { tier: 'memory' }),
    diskHits: await metrics.value(fetchMetrics.hits, { tier: 'disk' }),
    networkReads: await metrics.value(fetchMetrics.hits, { tier: 'network' }),
  })
  const before = await metric()
  const file = store.file('OPS/counted.fits', 4 * BS, null)
  const dest = Buffer.alloc(BS)
  t.equal(await fetcher.readInto(file, 0, BS, dest, () => true), BS, 'a read from the network, after one failed try')
  await fetcher.settled()
  t.equal(await fetcher.readInto(file, 0, BS, dest, () => true), BS, 'the same block again, from memory')
  const after = await metric()
  const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]]))
  t.same(delta, fetcher.stats, 'each figure equals what its metric gained')
  t.match(
    fetcher.stats,
    { requests: 2, retries: 1, networkReads: 1, memoryHits: 1, bytesFetched: BS },
    'and the figures are the ones this did',
  )
})

t.test("the store's eviction figures and their metrics move in step", async (t) => {
  const store = testStore(tmp(t), { limit: 256 << 20, blockSize: BS })
  t.teardown(() => store.close())
  const files = await metrics.value(cacheMetrics.evictedFiles)
  const blocks = await metrics.value(cacheMetrics.evictedBlocks)
  const f = store.file('OPS/evicted.fits', 3 * BS, null)
  for (let i = 0; i < 3; i++) t.ok(await f.writeBlock(i, [Buffer.alloc(BS, i)], blockAdler32([Buffer.alloc(BS, i)])), `block ${i} stored`)
  const res = await store.evict(['OPS'])
  t.equal(res.files, 1, 'one file evicted')
  t.equal(store.stats.filesEvicted, 1)
  t.equal(store.stats.bytesEvicted, 3 * BS)
  t.equal((await metrics.value(cacheMetrics.evictedFiles)) - files, 1, 'the files metric gained one')
  t.equal((await metrics.value(cacheMetrics.evictedBlocks)) - blocks, 3, "the blocks metric gained the file's three blocks")
})
