// The read policies as Source wrappers, each alone over a scripted source with a fake clock, in this
// process: withRetry (backoff grows, Retry-After honoured, throttled waits free, resume at the first
// missing byte, a short body is a failed try, errors not worth a retry and a called-off read end the
// tries at once, listings retried), the stall guard, and failover (the next source at the first
// missing byte, a source marked down skipped, and one marked down mid-retry tried no more).
import t from 'tap'
import { withRetry } from '../cache/sources/with-retry.js'
import { stallGuard } from '../cache/sources/stall-guard.js'
import { FailoverSource } from '../cache/sources/failover.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { readSource } from '../cache/setup.js'
import { fetchCounters } from '../cache/metrics.js'
import { SourceError, type FileFacts, type ReadOptions, type Source } from '../cache/sources/source.js'
import type { RetryPolicy } from '../cache/retry.js'
import { FakeClock, ScriptedSource, expected, type Step } from './fakes/scripted-source.js'

const policy: RetryPolicy = { tries: 4, baseMs: 10, maxMs: 1_000, maxThrottledWaits: 2 }
const broken = (): Step => ({ fail: new SourceError('server', 'HTTP 503', 503) })
const reset = (deliver: number): Step => ({ deliver, fail: new SourceError('network', 'connection reset') })

/** Reads [start, end) through `src`; resolves with the bytes delivered and the error, if any. */
async function readAll(src: Source, start: number, end: number, signal?: AbortSignal): Promise<{ got: Buffer; err?: SourceError }> {
  const parts: Buffer[] = []
  try {
    await src.read('OPS/f.fits', start, end, { signal, onData: (c) => parts.push(c) })
    return { got: Buffer.concat(parts) }
  } catch (err) {
    return { got: Buffer.concat(parts), err: err as SourceError }
  }
}

/** A source whose reads resolve after delivering only `short` bytes, `times` times. */
class ShortBody extends ScriptedSource {
  constructor(
    private short: number,
    private times: number,
  ) {
    super('short')
  }
  override async read(rel: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    if (this.times-- <= 0) return super.read(rel, start, end, opts)
    this.calls.push({ rel, start, end })
    opts.onData(expected(start, start + this.short))
  }
}

t.test('withRetry: the wait doubles from its base with each try used up', async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [broken(), broken(), broken()])
  let retries = 0
  const { got, err } = await readAll(
    withRetry(src, policy, clock, () => 0.5, { retrying: () => retries++ }),
    0,
    1000,
  )
  t.equal(err, undefined, 'the fourth try succeeds')
  t.same(got, expected(0, 1000))
  t.same(clock.sleeps, [10, 20, 40], 'waits of 10, 20, 40 ms')
  t.equal(retries, 3, 'three retries counted')
})

t.test('withRetry: the tries are bounded; the last error is what the caller gets', async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [broken(), broken(), broken(), broken(), broken()])
  const { err } = await readAll(
    withRetry(src, policy, clock, () => 0.5),
    0,
    1000,
  )
  t.equal(err?.kind, 'server')
  t.equal(src.calls.length, 4, 'four tries, then no more')
})

t.test("withRetry: a server's Retry-After is honoured, and a throttled answer does not use up a try", async (t) => {
  const clock = new FakeClock()
  const throttled = (ms: number): Step => ({ fail: new SourceError('throttled', 'HTTP 429', 429, ms) })
  const src = new ScriptedSource('s', [throttled(700), throttled(300), broken(), broken(), broken()])
  const { err } = await readAll(
    withRetry(src, policy, clock, () => 0.5),
    0,
    1000,
  )
  t.equal(err, undefined, 'two 429s and three errors fit in four tries')
  t.equal(src.calls.length, 6)
  t.same(clock.sleeps.slice(0, 2), [700, 300], 'the waits the server asked for')
})

t.test('withRetry: each retry asks for the first byte not yet delivered', async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [reset(3000), reset(500)])
  const { got, err } = await readAll(
    withRetry(src, policy, clock, () => 0.5),
    100,
    10_100,
  )
  t.equal(err, undefined)
  t.same(got, expected(100, 10_100), 'every byte once, in order')
  t.same(
    src.calls.map((c) => c.start),
    [100, 3100, 3600],
    'resumed at 3100, then at 3600',
  )
})

t.test('withRetry: a body that ends early is a failed try, resumed where it stopped', async (t) => {
  const clock = new FakeClock()
  const once = new ShortBody(400, 1)
  const r = await readAll(
    withRetry(once, policy, clock, () => 0.5),
    0,
    1000,
  )
  t.equal(r.err, undefined)
  t.same(r.got, expected(0, 1000))
  t.same(
    once.calls.map((c) => c.start),
    [0, 400],
  )
  const always = new ShortBody(400, 10)
  const short = await readAll(
    withRetry(always, { ...policy, tries: 1 }, clock, () => 0.5),
    0,
    1000,
  )
  t.equal(short.err?.kind, 'protocol', 'with no try left, the short body is the error')
  t.match(short.err?.message, /ended 600 bytes short/)
})

t.test('withRetry: an error not worth a retry ends the tries at once', async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [{ fail: new SourceError('forbidden', 'HTTP 403', 403) }])
  const failed: string[] = []
  const { err } = await readAll(
    withRetry(src, policy, clock, () => 0.5, { failed: (e) => failed.push(e.kind) }),
    0,
    1000,
  )
  t.equal(err?.kind, 'forbidden')
  t.equal(src.calls.length, 1, 'one request')
  t.same(clock.sleeps, [], 'no wait')
  t.same(failed, ['forbidden'], 'its owner heard of the failed try')
})

t.test("withRetry: a caller's signal that aborts ends the tries at once, as 'cancelled'", async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [broken(), broken(), broken()])
  const ac = new AbortController()
  const failed: string[] = []
  const wrapped = withRetry(src, policy, clock, () => 0.5, {
    failed: (e) => failed.push(e.kind),
    retrying: () => ac.abort(), // called off while waiting for the retry
  })
  const { err } = await readAll(wrapped, 0, 1000, ac.signal)
  t.equal(err?.kind, 'cancelled')
  t.equal(src.calls.length, 1, 'no request after the abort')
  const before = new AbortController()
  before.abort()
  t.equal((await readAll(wrapped, 0, 1000, before.signal)).err?.kind, 'cancelled', 'already aborted: no request at all')
  t.equal(src.calls.length, 1)
  t.same(failed, ['server'])
})

t.test("withRetry: its owner's stop ends the tries between two (the source was marked down)", async (t) => {
  const clock = new FakeClock()
  const src = new ScriptedSource('s', [broken(), broken(), broken()])
  const { err } = await readAll(
    withRetry(src, policy, clock, () => 0.5, { stop: () => true }),
    0,
    1000,
  )
  t.equal(err?.kind, 'server', 'the last error')
  t.equal(src.calls.length, 1)
})

/** A source whose listings and stats fail with `errors` in turn, then answer. */
class FlakyFacts extends ScriptedSource {
  lists = 0
  stats = 0
  constructor(private errors: SourceError[]) {
    super('flaky')
  }
  override list(): Promise<Map<string, FileFacts> | null> {
    this.lists++
    const e = this.errors.shift()
    return e ? Promise.reject(e) : Promise.resolve(new Map([['d/a.fits', { size: 5, adler32: null, mtime: null }]]))
  }
  override stat(): Promise<FileFacts | null> {
    this.stats++
    const e = this.errors.shift()
    return e ? Promise.reject(e) : Promise.resolve({ size: 5, adler32: null, mtime: null })
  }
}

t.test('withRetry: listings and facts are retried the same way, bounded', async (t) => {
  const clock = new FakeClock()
  const src = new FlakyFacts([new SourceError('server', 'HTTP 502', 502), new SourceError('network', 'reset')])
  const listing = await withRetry(src, policy, clock, () => 0.5).list('d')
  t.equal(listing?.get('d/a.fits')?.size, 5, 'the third PROPFIND answers')
  t.equal(src.lists, 3)
  const none = new FlakyFacts(Array.from({ length: 10 }, () => new SourceError('server', 'HTTP 500', 500)))
  const err = await withRetry(none, policy, clock, () => 0.5)
    .stat('d/a.fits')
    .catch((e: SourceError) => e)
  t.equal((err as SourceError).kind, 'server')
  t.equal(none.stats, 4, 'four tries')
})

t.test('stallGuard: a read that brings nothing fails as a timeout saying so; a quick one passes', async (t) => {
  let sawAbort = false
  class Silent extends ScriptedSource {
    override read(_rel: string, _s: number, _e: number, ro: ReadOptions): Promise<void> {
      return new Promise((_, reject) => {
        ro.signal?.addEventListener('abort', () => {
          sawAbort = true
          reject(new SourceError('network', 'aborted'))
        })
      })
    }
  }
  const silent = new Silent('silent')
  const { err } = await readAll(stallGuard(silent, 1024, 20), 0, 1000)
  t.equal(err?.kind, 'timeout', `the guard's error (${err?.message})`)
  t.match(err?.message, /silent silent:OPS\/f\.fits bytes=0-999: no data for 0\.02s \(stalled\)/)
  t.ok(sawAbort, 'the request was aborted')
  const quick = await readAll(stallGuard(new ScriptedSource('quick'), 1024, 20), 0, 1000)
  t.equal(quick.err, undefined)
  t.same(quick.got, expected(0, 1000))
})

/** Failover over `sources` read as they are (no tries around them). */
function plainFailover(set: SourceSet): FailoverSource {
  return new FailoverSource(set, (s) => s, fetchCounters(), new FakeClock())
}

t.test('failover: the next source is asked from the first byte the last one did not bring', async (t) => {
  const a = new ScriptedSource('a', [{ deliver: 3000, fail: new SourceError('forbidden', 'HTTP 403', 403) }])
  const b = new ScriptedSource('b')
  const parts: Buffer[] = []
  let served = ''
  await plainFailover(new SourceSet([a, b])).read('OPS/f.fits', 0, 10_000, {
    onData: (c) => parts.push(c),
    onServed: (s) => (served = s.name),
  })
  t.same(Buffer.concat(parts), expected(0, 10_000), 'every byte once')
  t.same(b.calls, [{ rel: 'OPS/f.fits', start: 3000, end: 10_000 }], 'b from byte 3000')
  t.equal(served, 'b')
})

t.test('failover: a source marked down is skipped; every one down fails at once', async (t) => {
  const clock = new FakeClock()
  const a = new ScriptedSource('a')
  const b = new ScriptedSource('b')
  const set = new SourceSet([a, b], { clock, downAfter: 1 })
  set.noteFailure(a, new SourceError('unreachable', 'connection refused'))
  const { err } = await readAll(plainFailover(set), 0, 1000)
  t.equal(err, undefined)
  t.equal(a.calls.length, 0, 'a not asked')
  t.equal(b.calls.length, 1)
  set.noteFailure(b, new SourceError('unreachable', 'connection refused'))
  const none = await readAll(plainFailover(set), 0, 1000).catch((e: SourceError) => ({ err: e }))
  t.match(none.err?.message, /no source reachable/)
})

t.test('readSource: a source marked down between two tries is tried no more, and the next one serves', async (t) => {
  const clock = new FakeClock()
  const refused = () => ({ fail: new SourceError('unreachable', 'connection refused') })
  const a = new ScriptedSource('a', [refused(), refused(), refused()])
  const b = new ScriptedSource('b')
  const set = new SourceSet([a, b], { clock, downAfter: 1 })
  const src = readSource(set, { attemptsPerSource: 4, backoffMs: 10, clock, random: () => 0.5, minRate: 1, rateWindowMs: 60_000 })
  const { got, err } = await readAll(src, 0, 1000)
  t.equal(err, undefined)
  t.same(got, expected(0, 1000))
  t.equal(a.calls.length, 1, 'a asked once: its failure marked it down')
  t.ok(set.isDown(a))
  t.equal(src.count.values.requests, 2, 'two requests counted')
  t.equal(src.count.bySource.b, 1000, "b's bytes counted")
})
