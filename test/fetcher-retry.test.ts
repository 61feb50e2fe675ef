// The fetcher's tries against a scripted source, in this process: errors use up the tries per
// source, a server asking us to slow down (429) is waited out without using them up (to a bound),
// and a failed run rejects every block it was to bring.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { BlockStore } from '../cache/block-store.js'
import { Fetcher } from '../cache/fetcher.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError, type ReadOptions, type Source } from '../cache/sources/source.js'
import { tmp } from './helpers.js'

const SIZE = 3 * 65536 + 100

/** Serves SIZE deterministic bytes after failing the first reads with the scripted errors. */
class ScriptedSource implements Source {
  readonly name = 'scripted'
  readonly identity = 'scripted:test'
  readonly authoritative = true
  reads = 0
  constructor(private script: SourceError[]) {}
  locate(rel: string): string {
    return `scripted:${rel}`
  }
  async read(_rel: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    this.reads++
    const err = this.script.shift()
    if (err) throw err
    const b = Buffer.allocUnsafe(end - start)
    for (let i = 0; i < b.length; i++) b[i] = (start + i) % 251
    opts.onData(b)
  }
  list(): Promise<null> {
    return Promise.resolve(null)
  }
  stat(): Promise<null> {
    return Promise.resolve(null)
  }
  close(): Promise<void> {
    return Promise.resolve()
  }
}

async function fetchAll(t: Test, script: SourceError[]): Promise<{ source: ScriptedSource; result: number | Error }> {
  const store = new BlockStore(join(tmp(t), 'cache'), { limit: 64 << 20, blockSize: 65536, minFree: 0, cleanupDelayMs: 3_600_000 })
  t.teardown(() => store.close())
  const source = new ScriptedSource(script)
  const fetcher = new Fetcher(new SourceSet([source]), store, { backoffMs: 1, maxBackoffMs: 5, attemptsPerSource: 3 })
  const file = store.file('OPS/x.fits', SIZE, null)
  const result = await fetcher.fetchWhole(file).catch((err: Error) => err)
  return { source, result }
}

const throttled = () => new SourceError('throttled', 'HTTP 429, slow down', 429, 1)
const broken = () => new SourceError('server', 'HTTP 503', 503)

t.test('server errors use up the tries; the last error is what the reader gets', async (t) => {
  const { source, result } = await fetchAll(t, [broken(), broken(), broken(), broken()])
  t.equal(source.reads, 3, 'three tries, then no more')
  t.ok(result instanceof SourceError && result.kind === 'server', `the run failed with the server's error (${String(result)})`)
})

t.test('429s are waited out without using up the tries', async (t) => {
  const { source, result } = await fetchAll(t, [throttled(), throttled(), throttled(), throttled(), broken(), broken()])
  t.equal(result, SIZE, 'the file arrived after four 429s and two errors, with three tries')
  t.equal(source.reads, 7)
})

t.test('but not forever: a source that only throttles fails the run', async (t) => {
  const { source, result } = await fetchAll(t, Array.from({ length: 100 }, throttled))
  t.ok(result instanceof SourceError && result.kind === 'throttled', `the run failed as throttled (${String(result)})`)
  t.ok(source.reads > 3 && source.reads < 20, `after a bounded number of requests (${source.reads})`)
})
