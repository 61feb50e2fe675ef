// The grain of fetching, against a scripted source (no FUSE, no sockets): a new cache dir gets
// 32 KiB blocks, so a small read fetches 32 KiB, not a MiB; a read spanning several missing blocks
// fetches them in one request; a sequential reader still gets MiB-sized runs (read-ahead counted in
// bytes); a cache dir made with 1 MiB blocks keeps them.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { BlockStore } from '../cache/block-store.js'
import { newReadPattern } from '../cache/fetcher.js'
import { readThrough as read, fetcherOver, type ReadPathOptions } from './fakes/fetcher-over.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { FakeClock, ScriptedSource, expected } from './fakes/scripted-source.js'
import { tmp } from './helpers.js'

const KiB = 1024
const MiB = 1 << 20
/** A new cache dir's block size (store-options.ts). */
const BS = 32 * KiB

function setup(t: Test, dir = join(tmp(t), 'cache'), blockSize?: number, opts: ReadPathOptions = {}) {
  const store = new BlockStore(dir, { limit: 1 << 30, minFree: 0, cleanupDelayMs: 3_600_000, ...(blockSize ? { blockSize } : {}) })
  const src = new ScriptedSource()
  const clock = new FakeClock()
  // The daemon's fetcher options, but for whole-file fetching of small files (these are large).
  const fetcher = fetcherOver(new SourceSet([src], { clock }), store, { smallFileBytes: 0, clock, random: () => 0.5, ...opts })
  return { store, src, fetcher, close: () => store.close() }
}

const asked = (src: ScriptedSource) => src.calls.reduce((n, c) => n + c.end - c.start, 0)

t.test('a new cache dir has 32 KiB blocks: a header read fetches 32 KiB, a seek to the end another 32 KiB', async (t) => {
  const { store, src, fetcher, close } = setup(t)
  t.teardown(close)
  t.equal(store.blockSize, BS)
  const file = store.file('OPS/g1.fits', 16 * MiB, null)
  t.ok((await read(fetcher, file, 0, 2880)).equals(expected(0, 2880)), 'the header reads right')
  t.ok((await read(fetcher, file, 16 * MiB - 2880, 2880)).equals(expected(16 * MiB - 2880, 16 * MiB)), 'so does the end')
  await fetcher.settled()
  t.same(
    src.calls.map((c) => [c.start, c.end]),
    [
      [0, BS],
      [16 * MiB - BS, 16 * MiB],
    ],
    'two requests of one block each',
  )
})

t.test('a read spanning several missing blocks fetches them in one request', async (t) => {
  const { store, src, fetcher, close } = setup(t)
  t.teardown(close)
  const file = store.file('OPS/g2.fits', 16 * MiB, null)
  // What the kernel sends for a random read: 128 KiB, here not aligned to blocks (five of them).
  const pos = 3 * MiB + 1000
  t.ok((await read(fetcher, file, pos, 128 * KiB)).equals(expected(pos, pos + 128 * KiB)), 'the bytes are right')
  await fetcher.settled()
  t.same(
    src.calls.map((c) => [c.start, c.end]),
    [[3 * MiB, 3 * MiB + 5 * BS]],
    'one request for the five blocks it touches',
  )
})

t.test('a sequential reader in 128 KiB reads gets MiB-sized runs: few requests, each byte once', async (t) => {
  const { store, src, fetcher, close } = setup(t)
  t.teardown(close)
  const size = 64 * MiB
  const file = store.file('OPS/g3.fits', size, null)
  const p = newReadPattern()
  for (let pos = 0; pos < size; pos += 128 * KiB) {
    const got = await read(fetcher, file, pos, 128 * KiB, p)
    if (!got.equals(expected(pos, pos + 128 * KiB))) t.fail(`bytes at ${pos} wrong`)
  }
  await fetcher.settled()
  t.equal(asked(src), size, 'every byte fetched once')
  const sizes = src.calls.map((c) => c.end - c.start)
  // Demand reads until read-ahead starts (1 MiB: eight here, where the kernel's would grow), then a
  // window from 1 MiB doubling up to runs of 8 MiB: about twenty requests, against 512 for one per
  // 128 KiB read.
  t.ok(sizes.length <= size / (8 * MiB) + 12, `${sizes.length} requests: ${sizes.map((b) => (b / MiB).toFixed(2)).join(', ')} MiB`)
  t.ok(sizes.filter((b) => b >= 4 * MiB).reduce((n, b) => n + b, 0) >= size / 2, 'most bytes come in requests of 4 MiB or more')
})

t.test('reading headers of a multi-extension file (each a 2880-byte read after a seek) never starts read-ahead', async (t) => {
  const { store, src, fetcher, close } = setup(t)
  t.teardown(close)
  const file = store.file('OPS/g4.fits', 64 * MiB, null)
  const p = newReadPattern()
  // One handle, as astropy keeps: a header of a few 2880-byte records at each HDU, then a seek over its data.
  for (let hdu = 0; hdu < 8; hdu++) for (let r = 0; r < 4; r++) await read(fetcher, file, hdu * 8 * MiB + r * 2880, 2880, p)
  await fetcher.settled()
  t.equal(asked(src), 8 * BS, 'one block per header')
})

t.test('a cache dir made with 1 MiB blocks keeps them (and fetches a MiB for a header read)', async (t) => {
  const dir = join(tmp(t), 'cache')
  const first = setup(t, dir, MiB)
  t.equal(first.store.blockSize, MiB)
  await first.close()
  const again = setup(t, dir)
  t.teardown(again.close)
  t.equal(again.store.blockSize, MiB, 'the recorded block size, not the new default')
  await read(again.fetcher, again.store.file('OPS/g5.fits', 16 * MiB, null), 0, 2880)
  t.same(
    again.src.calls.map((c) => c.end - c.start),
    [MiB],
  )
})
