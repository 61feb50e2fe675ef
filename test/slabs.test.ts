// The memory GET bodies are read into, and its reuse (cache/sources/slabs.ts): a slab is used again
// only once all it lent was given back, which a run does once it is over and its blocks are on disk
// (taken out of the recent blocks in memory first, for a reader's run); a slab used again is
// detached, so a view held by mistake reads as empty and a read of it fails rather than serve other
// bytes. In this process, through the fetcher, over a source that delivers views of slabs as the
// HTTP client does.
import t from 'tap'
import { SlabPool, SLAB_BYTES, slabs } from '../cache/sources/slabs.js'
import { copyFromBlock } from '../cache/block.js'
import { newReadPattern } from '../cache/fetcher.js'
import { MemoryBlockCache } from '../cache/memory-block-cache.js'
import { SourceSet } from '../cache/sources/source-set.js'
import type { FileFacts, ReadOptions, Source } from '../cache/sources/source.js'
import { FakeClock, expected } from './fakes/scripted-source.js'
import { fetcherOver } from './fakes/fetcher-over.js'

t.test('a slab is reused once sealed and every byte it lent is back; old views then read as empty', async (t) => {
  const pool = new SlabPool()
  const a = pool.take()
  a.fill(7)
  const v1 = a.subarray(0, 1000)
  const v2 = a.subarray(1000, 3000)
  pool.lend(v1)
  pool.lend(v2)
  pool.seal(a)
  pool.giveBack([v1])
  t.equal(pool.reused, 0, 'half given back: not reused')
  pool.giveBack([v2.subarray(0, 500), v2.subarray(500)])
  t.equal(pool.reused, 1, 'all given back (in pieces): reused')
  t.equal(v1.length, 0, 'an old view is detached: empty, never the next bytes')
  const b = pool.take()
  t.equal(b.length, SLAB_BYTES, 'the next slab taken is the reused one, whole')
  t.equal(pool.taken, 1, 'no new memory was taken for it')
  pool.lend(b.subarray(0, 10))
  pool.giveBack([v1, v2]) // old views of the same memory: ignored
  pool.seal(b)
  t.equal(pool.reused, 1, "old views given back again do not count against the slab's new life")

  const c = pool.take()
  pool.lend(c.subarray(0, 10))
  pool.giveBack([c.subarray(0, 10)])
  t.equal(pool.reused, 1, 'not reused before it is sealed (reads may still land in it)')
  pool.seal(c)
  t.equal(pool.reused, 2, 'reused once sealed')

  const d = pool.take()
  pool.lend(d.subarray(0, 10))
  pool.seal(d)
  pool.giveBack([d.subarray(0, 20)])
  t.equal(pool.reused, 2, 'more given back than lent (a bug): left to the garbage collector, not reused')

  const held = [v1, Buffer.from('ab')]
  t.throws(
    () => copyFromBlock(held, 0, 2, Buffer.alloc(4), 0),
    /memory was reused while it was still held/,
    'a block with a detached part is not served',
  )
})

/** Serves expected() bytes as views of slabs of the shared pool, as get-pool.ts does; optionally held halfway. */
class SlabSource implements Source {
  readonly name = 'slabbed'
  readonly identity = 'slabbed'
  readonly authoritative = true
  private gate: Promise<void> | undefined
  private open: (() => void) | undefined
  halfway: (() => void) | undefined
  hold(): void {
    this.gate = new Promise((r) => (this.open = r))
  }
  release(): void {
    this.open?.()
    this.gate = undefined
  }
  locate(rel: string): string {
    return rel
  }
  async read(_rel: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    const bytes = expected(start, end)
    let slab = slabs.take()
    let used = 0
    for (let at = 0; at < bytes.length;) {
      if (at >= bytes.length / 2 && this.gate) {
        this.halfway?.()
        await this.gate
      }
      if (SLAB_BYTES - used < 20_000) {
        slabs.seal(slab)
        slab = slabs.take()
        used = 0
      }
      const n = Math.min(20_000, bytes.length - at)
      const view = slab.subarray(used, used + n)
      bytes.copy(view, 0, at, at + n)
      used += n
      at += n
      slabs.lend(view)
      opts.onData(view)
    }
    slabs.seal(slab)
  }
  list(): Promise<Map<string, FileFacts> | null> {
    return Promise.resolve(null)
  }
  stat(): Promise<FileFacts | null> {
    return Promise.resolve(null)
  }
  close(): Promise<void> {
    return Promise.resolve()
  }
}

const BS = 64 * 1024
const SIZE = 40 * BS

function setup(maxBlocks = Infinity) {
  const cache = new MemoryBlockCache(BS, maxBlocks)
  const src = new SlabSource()
  const clock = new FakeClock()
  const fetcher = fetcherOver(new SourceSet([src], { clock }), cache, { smallFileBytes: 0, runBytes: SIZE, clock }) // one run per file
  const read = async (file: ReturnType<MemoryBlockCache['file']>, pos: number, len: number) => {
    const dest = Buffer.alloc(len)
    const n = await fetcher.readInto(file, pos, len, dest, () => true, newReadPattern())
    return dest.subarray(0, n)
  }
  const sync = (name: string) => fetcher.fetchWhole(cache.file(name, SIZE, null), new AbortController().signal)
  return { cache, src, fetcher, read, sync }
}

/** One turn of the event loop: a run gives its memory back in the turn after it ends (runs.ts). */
const turn = () => new Promise((r) => setImmediate(r))

t.test("a run gives its memory back once over, a sync's or a reader's, and the reader's bytes stay right", async (t) => {
  const { cache, src, fetcher, read, sync } = setup()
  const before = slabs.reused
  t.equal(await sync('OPS/synced.fits'), SIZE, 'a sync fetched a file whole')
  await turn()
  t.ok(slabs.reused > before, `its slabs were given back and reused (${slabs.reused - before})`)
  const synced = cache.file('OPS/synced.fits', SIZE, null)
  t.ok((await read(synced, 3 * BS + 5, 2 * BS)).equals(expected(3 * BS + 5, 5 * BS + 5)), 'and its stored bytes are right')

  // A reader joins a sync's run halfway through: the run serves it, and memory keeps the later blocks.
  const joined = cache.file('OPS/joined.fits', SIZE, null)
  src.hold()
  const halfway = new Promise<void>((r) => (src.halfway = r))
  const job = fetcher.fetchWhole(joined, new AbortController().signal)
  await halfway
  // Blocks 16-19 arrived and are not stored yet (a run stores 1 MiB at a time): the reader joins the run.
  const reading = read(joined, 17 * BS, 6 * BS)
  await turn()
  const reusedBefore = slabs.reused
  src.release()
  t.ok((await reading).equals(expected(17 * BS, 23 * BS)), "the reader who joined the sync's run got the right bytes")
  t.equal(await job, SIZE, 'and the sync finished')
  await fetcher.settled()
  t.equal(slabs.reused, reusedBefore, 'nothing given back in the turn the run ended (a reader may still be copying a block)')
  await turn()
  t.ok(slabs.reused > reusedBefore, `the next turn, the run the reader joined gave its memory back (${slabs.reused - reusedBefore})`)

  // More syncs take the reused slabs; the blocks are read from the cache now, not from that memory.
  for (let i = 0; i < 3; i++) await sync(`OPS/more${i}.fits`)
  await turn()
  const { memoryHits, diskHits } = fetcher.stats
  t.ok((await read(joined, 24 * BS, 6 * BS)).equals(expected(24 * BS, 30 * BS)), 'read again after later syncs reused slabs: still right')
  t.equal(fetcher.stats.memoryHits, memoryHits, 'not from memory: the run took its blocks out of it before giving them back')
  t.equal(fetcher.stats.diskHits, diskHits + 1, 'from the cache')
  t.ok((await read(joined, 0, SIZE)).equals(expected(0, SIZE)), 'the whole file: right')
})

t.test("a sync's blocks that could not be stored stay in memory for readers, and their memory is not reused", async (t) => {
  const { cache, read, fetcher, sync } = setup(8) // room for 8 blocks only
  await t.rejects(sync('OPS/full.fits'), /could not be stored/, 'a sync into a full cache fails')
  await turn()
  const reused = slabs.reused
  const other = setup()
  for (let i = 0; i < 3; i++) await other.sync(`OPS/other${i}.fits`) // these runs reuse every slab given back
  await turn()
  t.ok(slabs.reused > reused, 'other syncs reused memory meanwhile')
  const full = cache.file('OPS/full.fits', SIZE, null)
  const memoryHits = fetcher.stats.memoryHits
  t.ok((await read(full, 12 * BS, 6 * BS)).equals(expected(12 * BS, 18 * BS)), 'the refused blocks, read: right')
  t.equal(fetcher.stats.memoryHits, memoryHits + 1, 'from memory (they are nowhere else)')
})
