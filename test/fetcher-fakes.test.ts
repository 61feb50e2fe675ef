// The fetcher and the source set against scripted sources, in this process (no FUSE, no sockets):
// one request per block however many readers want it, the read-ahead window growing with a
// sequential reader and falling back on a seek, the memory budget bounding read-ahead, failover to
// the next source, and a source marked down (and back up) on a fake clock.
import t, { type Test } from 'tap'
import { Fetcher, newReadPattern, type FetchSource } from '../cache/fetcher.js'
import { fetchCounters } from '../cache/metrics.js'
import { readThrough as read, fakeReadPath, type ReadPathOptions, testStore } from './fakes/fetcher-over.js'
import { SourceError } from '../cache/sources/source.js'
import { ScriptedSource, expected } from './fakes/scripted-source.js'
import { tmp } from './helpers.js'

const BS = 65536

// Read-ahead steps of one block, starting after half a block: the policy's figures scaled to BS.
function setup(t: Test, sources: ScriptedSource[], opts: ReadPathOptions = {}) {
  return fakeReadPath(t, tmp(t), sources, BS, { readAheadStepBytes: BS, readAheadAfterBytes: BS / 2, ...opts })
}

t.test('single-flight: ten readers of one block make one request, and all get its bytes', async (t) => {
  const src = new ScriptedSource()
  const { store, fetcher } = setup(t, [src])
  const file = store.file('OPS/a.fits', 8 * BS, null)
  src.hold()
  const readers = Array.from({ length: 10 }, (_, i) => read(fetcher, file, 3 * BS + i * 100, 1000))
  await new Promise((r) => setImmediate(r))
  t.same(
    src.calls.map((c) => [c.start, c.end]),
    [[3 * BS, 4 * BS]],
    'one request, for block 3 only, while all ten wait',
  )
  src.release()
  const got = await Promise.all(readers)
  t.ok(
    got.every((b, i) => b.equals(expected(3 * BS + i * 100, 3 * BS + i * 100 + 1000))),
    'every reader got its own slice right',
  )
  await fetcher.settled()
  t.equal(src.calls.length, 1, 'still one request once the block is stored')
  t.equal((await read(fetcher, file, 3 * BS, 10)).length, 10, 'a later reader is served without one')
  t.equal(src.calls.length, 1)
})

t.test('read-ahead: the window doubles per step entered while reading sequentially, and falls back to one block on a seek', async (t) => {
  const src = new ScriptedSource()
  const { store, fetcher } = setup(t, [src])
  const file = store.file('OPS/b.fits', 64 * BS, null)
  const p = newReadPattern()
  const windows: number[] = []
  for (let blk = 0; blk < 6; blk++) {
    const got = await read(fetcher, file, blk * BS, BS, p)
    t.ok(got.equals(expected(blk * BS, (blk + 1) * BS)), `block ${blk} read right`)
    windows.push(p.windowBytes / BS)
    await fetcher.settled()
  }
  t.same(windows, [1, 2, 4, 8, 16, 16], 'doubling from one block up to the cap (16 blocks)')
  const furthest = Math.max(...src.calls.map((c) => c.end))
  t.ok(furthest > 6 * BS + 8 * BS, `the source was asked for bytes well ahead of the reader (up to block ${furthest / BS})`)
  const asked = src.calls.reduce((n, c) => n + c.end - c.start, 0)
  t.equal(
    asked,
    new Set(src.calls.flatMap((c) => Array.from({ length: (c.end - c.start) / BS }, (_, i) => c.start / BS + i))).size * BS,
    'no byte was asked for twice',
  )

  await read(fetcher, file, 40 * BS + 5, 100, p)
  t.equal(p.windowBytes, BS, 'a seek far ahead resets the window to one block')
  await read(fetcher, file, 5, 100, p)
  t.equal(p.windowBytes, BS, 'so does a seek back')
  const before = src.calls.length
  await read(fetcher, file, 41 * BS, 3000, newReadPattern())
  await fetcher.settled()
  t.equal(src.calls.length, before + 1, 'a fresh handle reading a small piece fetches its block and nothing ahead')
})

t.test("the memory budget: read-ahead waits for room, a reader's own block never does", async (t) => {
  const runSeq = async (budgetBlocks: number) => {
    const src = new ScriptedSource()
    const { store, fetcher } = setup(t, [src], { memoryBudget: budgetBlocks * BS, runBytes: BS })
    const file = store.file('OPS/c.fits', 32 * BS, null)
    const p = newReadPattern()
    src.hold()
    // Three sequential reads issued at once (the kernel does that): blocks 0-2 and read-ahead.
    const reads = [0, 1, 2].map((b) => read(fetcher, file, b * BS, BS, p))
    await new Promise((r) => setImmediate(r))
    const blocks = src.calls.map((c) => c.start / BS).sort((a, b) => a - b)
    const peak = src.maxInflightBytes
    // The reader's own next block is fetched even with the budget spent.
    const own = read(fetcher, file, 20 * BS, 10, newReadPattern())
    await new Promise((r) => setImmediate(r))
    const ownAsked = src.calls.some((c) => c.start === 20 * BS)
    src.release()
    await Promise.all([...reads, own])
    await fetcher.settled()
    return { blocks, peak, ownAsked }
  }
  const tight = await runSeq(3)
  t.ok(tight.peak <= 3 * BS, `in flight at most the budget of 3 blocks (${tight.peak / BS}), blocks ${tight.blocks.join(',')}`)
  t.ok(tight.ownAsked, "a reader's block beyond the budget is still fetched")
  const roomy = await runSeq(64)
  t.ok(roomy.blocks.length > tight.blocks.length, `with room, read-ahead goes further (${roomy.blocks.join(',')})`)
})

t.test('failover: a source that cannot connect is tried its tries, then the next one serves', async (t) => {
  const down = new SourceError('unreachable', 'connect ECONNREFUSED 127.0.0.1:9')
  const a = new ScriptedSource(
    'a',
    Array.from({ length: 50 }, () => ({ fail: down })),
  )
  const b = new ScriptedSource('b')
  const { store, clock, fetcher } = setup(t, [a, b], { attemptsPerSource: 2 })
  const one = store.file('OPS/d1.fits', 2 * BS, null)
  t.ok((await read(fetcher, one, 0, 1000)).equals(expected(0, 1000)), 'the bytes came from the second source')
  t.equal(a.calls.length, 2, 'the first source was tried twice (its tries)')
  t.equal(b.calls.length, 1)

  const two = store.file('OPS/d2.fits', 2 * BS, null)
  await read(fetcher, two, 0, 10)
  t.equal(a.calls.length, 3, 'a third connection failure in a row...')
  const three = store.file('OPS/d3.fits', 2 * BS, null)
  await read(fetcher, three, 0, 10)
  t.equal(a.calls.length, 3, '...marks it down: the next fetch does not ask it')
  t.equal(b.calls.length, 3)

  clock.advance(10_001)
  const four = store.file('OPS/d4.fits', 2 * BS, null)
  await read(fetcher, four, 0, 10)
  t.equal(a.calls.length, 4, 'once its down time has passed it is asked again')
})

t.test('every source down: reads fail at once with one clear error, without asking any source', async (t) => {
  const down = () => ({ fail: new SourceError('unreachable', 'connect ECONNREFUSED 127.0.0.1:9') })
  const a = new ScriptedSource('a', Array.from({ length: 50 }, down))
  const { store, clock, fetcher } = setup(t, [a], { attemptsPerSource: 3 })
  const err = await read(fetcher, store.file('OPS/e1.fits', 2 * BS, null), 0, 10).catch((e: Error) => e)
  t.ok(err instanceof SourceError && err.kind === 'unreachable', `the first read fails after its tries (${String(err)})`)
  t.equal(a.calls.length, 3)
  const sleptBefore = clock.sleeps.length
  const err2 = await read(fetcher, store.file('OPS/e2.fits', 2 * BS, null), 0, 10).catch((e: Error) => e)
  t.match(String(err2), /no source reachable/, 'the next fails with "no source reachable"')
  t.equal(a.calls.length, 3, 'without a request')
  t.equal(clock.sleeps.length, sleptBefore, 'and without waiting')
})

t.test('the fetcher reads through any FetchSource: no SourceSet and no failover around a plain source', async (t) => {
  const src = new ScriptedSource()
  const count = fetchCounters()
  const damaged: string[] = []
  // The least a FetchSource is: one source's reads, counted here, with nothing to steer.
  const plain: FetchSource = {
    name: 'plain',
    identity: 'plain',
    authoritative: true,
    count,
    locate: (rel) => rel,
    read: (rel, start, end, ro) =>
      src.read(rel, start, end, {
        signal: ro.signal,
        onData: (c) => {
          count.add('bytesFetched', c.length, 'plain')
          ro.onData(c)
        },
      }),
    list: () => Promise.resolve(null),
    stat: () => Promise.resolve(null),
    close: () => Promise.resolve(),
    noteDamaged: (s) => void damaged.push(s.name),
    others: () => [],
    distrust: () => undefined,
    distrusting: () => false,
  }
  const store = testStore(tmp(t), { limit: 64 << 20, blockSize: BS })
  t.teardown(() => store.close())
  const fetcher = new Fetcher(plain, store, { smallFileBytes: 0 })
  const file = store.file('OPS/p.fits', 4 * BS, null)
  t.ok((await read(fetcher, file, BS - 10, 20)).equals(expected(BS - 10, BS + 10)), 'the bytes are right')
  await fetcher.settled()
  t.same(
    src.calls.map((c) => [c.start, c.end]),
    [[0, 2 * BS]],
    'one request for the two blocks the read spans',
  )
  t.same(fetcher.bytesBySource, { plain: 2 * BS }, "the source's own figures are the fetcher's")
  t.equal(fetcher.stats.networkReads, 1, 'and the fetcher adds its own beside them')
  t.same(damaged, [], 'no copy was found damaged')
})
