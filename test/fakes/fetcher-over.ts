// Tests build a Fetcher from a set of sources the way cache/setup.ts does: the set wrapped in the
// read policies and failover (readSource), the options of both given as one object (clock and random
// among them); the block store they use, in the test's temp dir; and a read as a reader of the mount
// makes it.
import { join } from 'node:path'
import { BlockStore, type StoreOptions } from '../../cache/block-store.js'
import { Fetcher, newReadPattern, type FetcherOptions, type ReadPattern } from '../../cache/fetcher.js'
import type { BlockCache } from '../../cache/block-cache.js'
import { readSource, type ReadPolicy } from '../../cache/setup.js'
import { SourceSet } from '../../cache/sources/source-set.js'
import type { Source } from '../../cache/sources/source.js'
import { FakeClock } from './scripted-source.js'

export type ReadPathOptions = Partial<FetcherOptions & ReadPolicy>

export function fetcherOver(set: SourceSet, store: BlockCache, opts: ReadPathOptions = {}): Fetcher {
  return new Fetcher(readSource(set, opts), store, opts)
}

/** A block store in `dir`/cache with no free-space floor and no background check during the test. */
export function testStore(dir: string, opts: Partial<StoreOptions> & { blockSize: number }): BlockStore {
  return new BlockStore(join(dir, 'cache'), { limit: 256 << 20, minFree: 0, cleanupDelayMs: 3_600_000, ...opts })
}

/**
 * The read path of the in-process tests over scripted sources: a store of `blockSize` blocks, a fake
 * clock, the sources in a set (down after 3 failures, for 10 s), and a fetcher with runs of 4 blocks,
 * a window of 16, no whole-file fetch of small files and 10 ms backoff without jitter; `opts` adds
 * or overrides. The store closes at teardown.
 */
export function fakeReadPath(
  t: { teardown(fn: () => unknown): void },
  dir: string,
  sources: Source[],
  blockSize: number,
  opts: ReadPathOptions = {},
) {
  const store = testStore(dir, { blockSize })
  t.teardown(() => store.close())
  const clock = new FakeClock()
  const set = new SourceSet(sources, { clock, downAfter: 3, downMs: 10_000 })
  const fetcher = fetcherOver(set, store, {
    smallFileBytes: 0,
    backoffMs: 10,
    runBytes: 4 * blockSize,
    maxWindowBytes: 16 * blockSize,
    clock,
    random: () => 0.5,
    ...opts,
  })
  return { store, clock, set, fetcher }
}

/** Bytes [pos, pos+len) of a file read through the fetcher, as a reader would. */
export async function readThrough(
  fetcher: Fetcher,
  file: ReturnType<BlockStore['file']>,
  pos: number,
  len: number,
  pattern: ReadPattern = newReadPattern(),
): Promise<Buffer> {
  const dest = Buffer.alloc(len)
  const n = await fetcher.readInto(file, pos, len, dest, () => true, pattern)
  return dest.subarray(0, n)
}
