// Runs of blocks in flight (cache/runs.ts): a block's promise is made when asked for, before or
// after the block came; a run's promise of all its blocks; a body that ends without settling a block
// fails it rather than hang its waiters; a run for jobs is called off only when every job is
// cancelled, and never once a reader joined; a block is forgotten only by the run that brings it.
import t from 'tap'
import { Run, Runs } from '../cache/runs.js'
import type { CachedBlocks } from '../cache/block-cache.js'

const blk = (s: string) => [Buffer.from(s)]
const file = { key: 'k1', relPath: 'a/b.fits', blockSize: 4, size: 16, blocks: 4 } as unknown as CachedBlocks
const store = { hold: () => undefined, release: () => undefined }

t.test('a block asked for before and after it came', async (t) => {
  const run = new Run('k', 10, 13, undefined)
  const early = run.block(10)
  run.resolve(10, blk('a'))
  t.same(await early, blk('a'))
  t.same(await run.block(10), blk('a'), 'asked for after it came')
  run.reject(11, new Error('reset'))
  await t.rejects(run.block(11), /reset/)
  run.resolve(11, blk('late'))
  await t.rejects(run.block(11), /reset/, 'a block settles once')
})

t.test('all of a run: resolves when every block came, rejects at the first failure', async (t) => {
  const ok = new Run('k', 0, 2, undefined)
  let done = false
  const all = ok.delivered().then(() => (done = true))
  ok.resolve(0, blk('a'))
  await new Promise((r) => setImmediate(r))
  t.notOk(done, 'not before the last block')
  ok.resolve(1, blk('b'))
  await all
  t.ok(done)
  await t.resolves(ok.delivered(), 'asked for after')

  const bad = new Run('k', 0, 3, undefined)
  bad.resolve(0, blk('a'))
  bad.reject(1, new Error('stalled'))
  await t.rejects(bad.delivered(), /stalled/, 'asked for after the failure')
})

t.test('a body that ends without settling a block fails it; the run is forgotten once done', async (t) => {
  const runs = new Runs(store, async (_f, run) => {
    run.resolve(run.first, blk('aaaa'))
  })
  runs.start(file, 0, 2)
  const second = runs.run('k1', 1)!.block(1)
  t.ok(runs.has('k1', 0) && runs.has('k1', 1), 'both in flight')
  await t.rejects(second, /neither delivered nor failed/)
  await runs.settled()
  t.notOk(runs.has('k1', 0) || runs.has('k1', 1), 'forgotten once the run ended')
  t.equal(runs.bytes, 0)
})

t.test('called off only when every job is cancelled, never once a reader joined', async (t) => {
  const a = new AbortController()
  const b = new AbortController()
  const run = new Run('k', 0, 1, a.signal)
  run.join(b.signal)
  t.ok(run.jobsOnly)
  a.abort()
  t.notOk(run.stop.signal.aborted, 'one job left')
  b.abort()
  t.ok(run.stop.signal.aborted, 'all cancelled: called off')

  const c = new AbortController()
  const read = new Run('k', 0, 1, c.signal)
  read.join(undefined)
  t.notOk(read.jobsOnly, 'a reader joined')
  c.abort()
  t.notOk(read.stop.signal.aborted, 'a reader must never see a cancelled fetch')
})

t.test('a block is forgotten only by the run bringing it', async (t) => {
  let release!: () => void
  const runs = new Runs(store, (_f, run) => new Promise<void>((r) => (release = r)).then(() => run.failRest(new Error('x'))))
  runs.start(file, 0, 1)
  const first = runs.run('k1', 0)!
  runs.forget(first, 0)
  t.notOk(runs.has('k1', 0), 'forgotten')
  runs.start(file, 0, 1)
  const second = runs.run('k1', 0)!
  t.not(first, second)
  runs.forget(first, 0)
  t.equal(runs.run('k1', 0), second, 'an older run does not forget the newer one')
  release()
  release()
  await runs.settled()
})
