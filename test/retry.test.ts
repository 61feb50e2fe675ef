// The one retry policy (cache/retry.ts), on its own with a fake clock: the wait doubles from its base
// with jitter, honours Retry-After up to the cap, tries are bounded, and throttled answers are waited
// out without using up a try, up to their own bound.
import t from 'tap'
import { Retrier, backoffDelay } from '../cache/retry.js'
import { FakeClock } from './fakes/scripted-source.js'

t.test('backoffDelay: doubling, jitter in [0.5, 1.5), Retry-After, cap', async (t) => {
  const p = { baseMs: 100, maxMs: 1000 }
  t.same(
    [1, 2, 3, 4, 5].map((n) => backoffDelay(n, p, 0, () => 0.5)),
    [100, 200, 400, 800, 1000],
    'doubles, then the cap',
  )
  t.equal(
    backoffDelay(2, p, 0, () => 0),
    100,
    'jitter down to half',
  )
  t.ok(backoffDelay(2, p, 0, () => 0.9999) > 299.9, 'and up to one and a half')
  t.equal(
    backoffDelay(1, p, 700, () => 0.5),
    700,
    'a longer Retry-After is honoured',
  )
  t.equal(
    backoffDelay(1, p, 60_000, () => 0.5),
    1000,
    'up to the cap',
  )
  t.equal(
    backoffDelay(0, p, 0, () => 0.5),
    100,
    'retry 0 waits the first step, not less',
  )
})

t.test('Retrier: bounded tries, throttled waits on top (bounded too), waits on the clock', async (t) => {
  const clock = new FakeClock()
  const r = new Retrier({ tries: 3, baseMs: 100, maxMs: 10_000, maxThrottledWaits: 2 }, clock, () => 0.5)
  const log: string[] = []
  const outcomes = [{ throttled: true, retryAfterMs: 2000 }, {}, { throttled: true }, { throttled: true }, {}, {}]
  for (const o of outcomes) {
    log.push(`try ${r.attempt}`)
    if (!r.failed(o)) break
    await r.wait()
  }
  t.same(
    log,
    ['try 1', 'try 1', 'try 2', 'try 2', 'try 3'],
    'two 429s did not use up tries; the third counted; then the errors ran out the tries',
  )
  t.same(clock.sleeps, [2000, 100, 100, 200], 'Retry-After first, then the backoff by tries used up')
  t.notOk(r.more)
  const aborted = new AbortController()
  aborted.abort()
  const r2 = new Retrier({ tries: 2, baseMs: 100, maxMs: 1000 }, clock)
  r2.failed({ throttled: true })
  r2.failed({ throttled: true })
  t.notOk(r2.more, 'without a throttled bound a 429 uses up a try like any error')
  await r2.wait(aborted.signal)
  t.equal(clock.sleeps.length, 4, 'an aborted wait returns at once, without waiting')
})
