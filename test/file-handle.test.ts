// Open-file handles (cache/file-handle.ts), in this process with a scripted source (no FUSE): an open
// handle makes its file the most recently used and keeps it from eviction until it is closed; the
// last close of a file says so, once; reads go through the fetcher with the handle's own pattern.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { BlockStore, type CachedFile } from '../cache/block-store.js'
import { FileHandles } from '../cache/file-handle.js'
import { adler32 } from '../cache/adler32.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { ScriptedSource, expected } from './fakes/scripted-source.js'
import { fetcherOver } from './fakes/fetcher-over.js'
import { tmp } from './helpers.js'

const BS = 64 * 1024

function setup(t: Test, limit: number) {
  const store = new BlockStore(join(tmp(t), 'cache'), { limit, blockSize: BS, lowWater: 0.75, minFree: 0, cleanupDelayMs: 3_600_000 })
  t.teardown(() => store.close())
  const src = new ScriptedSource()
  // Read-ahead steps of one block, starting after half a block: the policy's figures scaled to BS.
  const fetcher = fetcherOver(new SourceSet([src]), store, {
    smallFileBytes: 0,
    runBytes: 4 * BS,
    maxWindowBytes: 8 * BS,
    readAheadStepBytes: BS,
    readAheadAfterBytes: BS / 2,
  })
  return { store, src, fetcher, files: new FileHandles(store, fetcher) }
}

/** Writes every block of a file, as the fetcher would. */
async function fill(f: CachedFile): Promise<void> {
  for (let i = 0; i < f.blocks; i++) {
    const b = Buffer.alloc(f.blockLength(i), i + 1)
    await f.writeBlock(i, b, adler32(b))
  }
}

const cached = (store: BlockStore) => store.entries().map((e) => e.path)

t.test('opening a file makes it the most recently used: the next eviction takes another', async (t) => {
  const { store, files } = setup(t, 4 * BS)
  const a = files.file('OPS/a.fits', 2 * BS, null)
  const b = files.file('OPS/b.fits', 2 * BS, null)
  await fill(a)
  await fill(b)
  t.equal(files.open('OPS/a.fits', a).close(), true, 'opened and closed again: no other use was left')
  await fill(files.file('OPS/c.fits', 2 * BS, null))
  t.same(cached(store).sort(), ['OPS/a.fits', 'OPS/c.fits'], 'b, used least recently, was evicted; a, opened since, was kept')
})

t.test('an open file is never evicted; it is in use until its last handle closes, and a handle closes once', async (t) => {
  const { store, files } = setup(t, 4 * BS)
  const a = files.file('OPS/a.fits', 2 * BS, null)
  const b = files.file('OPS/b.fits', 2 * BS, null)
  await fill(a)
  await fill(b)
  const h1 = files.open('OPS/a.fits', a)
  const h2 = files.open('OPS/a.fits', a)
  store.touch(b) // a is the least recently used now, but open
  await fill(files.file('OPS/c.fits', 2 * BS, null))
  t.same(cached(store).sort(), ['OPS/a.fits', 'OPS/c.fits'], 'b was evicted in place of the open file a')
  t.equal(store.inUse('OPS/a.fits'), true, 'a is in use while open')
  t.equal(h1.close(), false, 'the first close leaves a use (the other handle)')
  t.equal(store.inUse('OPS/a.fits'), true, 'still in use')
  t.equal(h1.close(), false, 'closing the same handle again ends no use of the other')
  t.equal(store.inUse('OPS/a.fits'), true, 'still in use after the double close')
  t.equal(h2.close(), true, 'the last close says no use is left')
  t.equal(store.inUse('OPS/a.fits'), false, 'and the file is no longer in use')
  t.equal(h2.close(), false, 'a second close of it says nothing more')
})

t.test("a handle's sequential reads grow its read-ahead: the source is asked beyond what was read", async (t) => {
  const { src, fetcher, files } = setup(t, 64 << 20)
  const size = 16 * BS
  const h = files.open('OPS/big.fits', files.file('OPS/big.fits', size, null))
  t.teardown(() => h.close())
  for (let pos = 0; pos < 4 * BS; pos += BS) {
    const dest = Buffer.alloc(BS)
    t.equal(await h.read(pos, BS, dest, () => true), BS)
    t.ok(dest.equals(expected(pos, pos + BS)), `bytes at ${pos} are right`)
  }
  await fetcher.settled()
  const furthest = Math.max(...src.calls.map((c) => c.end))
  t.ok(furthest > 5 * BS, `read-ahead fetched up to ${furthest / BS} blocks, past the 4 read`)
  // A fresh handle on the same file starts with a pattern of its own: one read far into the file
  // is a reader's own block, with no read-ahead after it.
  const other = files.open('OPS/big.fits', files.file('OPS/big.fits', size, null))
  t.teardown(() => other.close())
  const before = src.calls.length
  await other.read(14 * BS, 10, Buffer.alloc(10), () => true)
  await fetcher.settled()
  t.same(
    src.calls.slice(before).map((c) => [c.start, c.end]),
    [[14 * BS, 15 * BS]],
    "the other handle's first read fetched its own block only",
  )
})

t.test('what a reader got is counted as cached once it is asked: the bytes served from memory are on disk', async (t) => {
  const { files } = setup(t, 64 << 20)
  const size = 4 * BS
  const h = files.open('OPS/read.fits', files.file('OPS/read.fits', size, null))
  const dest = Buffer.alloc(size)
  // The reader is answered as the blocks arrive; their writes to the cache file end afterwards.
  t.equal(await h.read(0, size, dest, () => true), size)
  t.ok(dest.equals(expected(0, size)), 'the bytes are right')
  h.close()
  t.equal(await files.cachedBytes('OPS/read.fits'), size, 'user.desfs.cached counts every block the reader got')
  t.equal(await files.cachedBytes('OPS/never.fits'), 0, 'a file never read has nothing cached (and nothing to wait for)')
})

t.test('reads the plane served from the cache itself move read-ahead on (readSeen), towards what is missing', async (t) => {
  const { store, src, fetcher, files } = setup(t, 64 << 20)
  const size = 24 * BS
  const file = files.file('OPS/half.fits', size, null)
  // The first 8 blocks are cached: the plane serves reads of them without asking JavaScript.
  for (let i = 0; i < 8; i++) await file.writeBlock(i, expected(i * BS, (i + 1) * BS), adler32(expected(i * BS, (i + 1) * BS)))
  const h = files.open('OPS/half.fits', file)
  t.teardown(() => h.close())
  // What the plane tells of a sequential reader: one read per step it enters.
  for (let pos = 0; pos < 6 * BS; pos += BS) h.readSeen(pos, BS)
  await fetcher.settled()
  t.ok(src.calls.length > 0, 'the source was asked although no read reached JavaScript')
  t.ok(
    src.calls.every((c) => c.start >= 8 * BS),
    `only for blocks not cached: ${src.calls.map((c) => `${c.start / BS}-${c.end / BS}`).join(', ')}`,
  )
  t.ok(Math.max(...src.calls.map((c) => c.end)) > 8 * BS, 'ahead of the reader, before it reaches the first missing block')
  t.ok(store.cachedBytes('OPS/half.fits') > 8 * BS, 'and stored')
})

t.test("a read that misses asks for its own blocks before its read-ahead's", async (t) => {
  const { src, fetcher, files } = setup(t, 64 << 20)
  const size = 32 * BS
  const h = files.open('OPS/order.fits', files.file('OPS/order.fits', size, null))
  t.teardown(() => h.close())
  // A sequential reader whose read-ahead is running: each read past the fetched ones misses.
  for (let pos = 0; pos < 2 * BS; pos += BS) await h.read(pos, BS, Buffer.alloc(BS), () => true)
  await fetcher.settled()
  const before = src.calls.length
  // The next block not fetched yet: a read of it is still in order (within the window's slack).
  const pos = Math.max(...src.calls.map((c) => c.end))
  t.ok(pos < 8 * BS, `fetched up to block ${pos / BS} so far`)
  const dest = Buffer.alloc(BS)
  t.equal(await h.read(pos, BS, dest, () => true), BS)
  t.ok(dest.equals(expected(pos, pos + BS)), 'the bytes are right')
  await fetcher.settled()
  const calls = src.calls.slice(before)
  t.ok(calls.length > 1, `the read and its read-ahead: ${calls.map((c) => `${c.start / BS}-${c.end / BS}`).join(', ')}`)
  t.equal(calls[0]!.start, pos, "the reader's own block first")
})
