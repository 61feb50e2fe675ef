// The fetcher's tries against a scripted source, in this process: errors use up the tries per
// source, a server asking us to slow down (429) is waited out without using them up (to a bound),
// a failed run rejects every block it was to bring, backoff doubles with jitter and honours
// Retry-After up to its cap (a fake clock records every wait), and a body cut short resumes at the
// first byte not received.
import t, { type Test } from 'tap'
import { BlockStore } from '../cache/block-store.js'
import { fetcherOver, type ReadPathOptions, testStore } from './fakes/fetcher-over.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError } from '../cache/sources/source.js'
import { FakeClock, ScriptedSource, expected, type Step } from './fakes/scripted-source.js'
import { tmp } from './helpers.js'

const SIZE = 3 * 65536 + 100

async function fetchAll(
  t: Test,
  script: Step[],
  opts: ReadPathOptions = {},
  random = () => 0.5,
): Promise<{ source: ScriptedSource; clock: FakeClock; store: BlockStore; result: number | Error }> {
  const store = testStore(tmp(t), { limit: 64 << 20, blockSize: 65536 })
  t.teardown(() => store.close())
  const source = new ScriptedSource('scripted', script)
  const clock = new FakeClock()
  const fetcher = fetcherOver(new SourceSet([source], { clock }), store, {
    backoffMs: 1,
    maxBackoffMs: 5,
    attemptsPerSource: 3,
    clock,
    random,
    ...opts,
  })
  const file = store.file('OPS/x.fits', SIZE, null)
  const result = await fetcher.fetchWhole(file).catch((err: Error) => err)
  return { source, clock, store, result }
}

const throttled = (retryAfterMs = 1): Step => ({ fail: new SourceError('throttled', 'HTTP 429, slow down', 429, retryAfterMs) })
const broken = (): Step => ({ fail: new SourceError('server', 'HTTP 503', 503) })

t.test('server errors use up the tries; the last error is what the reader gets', async (t) => {
  const { source, result } = await fetchAll(t, [broken(), broken(), broken(), broken()])
  t.equal(source.calls.length, 3, 'three tries, then no more')
  t.ok(result instanceof SourceError && result.kind === 'server', `the run failed with the server's error (${String(result)})`)
})

t.test('429s are waited out without using up the tries', async (t) => {
  const { source, result } = await fetchAll(t, [throttled(), throttled(), throttled(), throttled(), broken(), broken()])
  t.equal(result, SIZE, 'the file arrived after four 429s and two errors, with three tries')
  t.equal(source.calls.length, 7)
})

t.test('but not forever: a source that only throttles fails the run', async (t) => {
  const { source, result } = await fetchAll(
    t,
    Array.from({ length: 100 }, () => throttled()),
  )
  t.ok(result instanceof SourceError && result.kind === 'throttled', `the run failed as throttled (${String(result)})`)
  t.ok(source.calls.length > 3 && source.calls.length < 20, `after a bounded number of requests (${source.calls.length})`)
})

t.test('backoff doubles from its base, with jitter, and never waits longer than its cap', async (t) => {
  const opts = { backoffMs: 100, maxBackoffMs: 1000, attemptsPerSource: 6 }
  const { clock, result } = await fetchAll(t, [broken(), broken(), broken(), broken(), broken()], opts)
  t.equal(result, SIZE, 'the sixth try brought the file')
  t.same(clock.sleeps, [100, 200, 400, 800, 1000], 'jitter factor 1 (random 0.5): 100, 200, 400, 800, then the cap')
  const low = await fetchAll(t, [broken(), broken()], opts, () => 0)
  t.same(low.clock.sleeps, [50, 100], 'jitter spans half the delay below (random 0)...')
  const high = await fetchAll(t, [broken(), broken()], opts, () => 0.999)
  t.ok(
    high.clock.sleeps[0]! > 149 && high.clock.sleeps[0]! < 150 && high.clock.sleeps[1]! > 299 && high.clock.sleeps[1]! < 300,
    `...and half above (random ~1: ${high.clock.sleeps.join(', ')})`,
  )
})

t.test("a server's Retry-After is honoured when longer than the backoff, up to the cap", async (t) => {
  const opts = { backoffMs: 100, maxBackoffMs: 5000, attemptsPerSource: 4 }
  const { clock, result } = await fetchAll(t, [throttled(3000), broken(), throttled(60_000)], opts)
  t.equal(result, SIZE)
  // The 429s did not use up tries, so the attempt number (and the backoff) stays at the first step.
  t.same(clock.sleeps, [3000, 100, 5000], 'waits 3 s as asked, then its own backoff, then at most the cap')
})

t.test('a body cut short resumes at the first byte not received, and the bytes come out right', async (t) => {
  const cut = 65536 + 1234
  const { source, store, result } = await fetchAll(t, [
    { deliver: cut, fail: new SourceError('network', 'connection reset') },
    { deliver: 10, fail: new SourceError('timeout', 'stalled') },
  ])
  t.equal(result, SIZE, 'the file arrived')
  t.same(
    source.calls.map((c) => [c.start, c.end]),
    [
      [0, SIZE],
      [cut, SIZE],
      [cut + 10, SIZE],
    ],
    'each retry asks only for what is missing',
  )
  const f = store.file('OPS/x.fits', SIZE, null)
  const got = Buffer.alloc(SIZE)
  t.ok(await f.readInto(got, 0, SIZE), 'every block is in the cache')
  t.ok(got.equals(expected(0, SIZE)), 'with the bytes the source sent, in order across the cuts')
})
