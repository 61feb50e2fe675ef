// Tests build a Fetcher from a set of sources the way cache/setup.ts does: the set wrapped in the
// failover source, the options of both given as one object (clock and random among them); the block
// store they use, in the test's temp dir; and a read as a reader of the mount makes it.
import { join } from 'node:path'
import { BlockStore, type StoreOptions } from '../../cache/block-store.js'
import { Fetcher, newReadPattern, type FetcherOptions, type ReadPattern } from '../../cache/fetcher.js'
import type { BlockCache } from '../../cache/block-cache.js'
import { failover, type FailoverOptions } from '../../cache/sources/failover.js'
import type { SourceSet } from '../../cache/sources/source-set.js'

export type ReadPathOptions = Partial<FetcherOptions & FailoverOptions>

export function fetcherOver(set: SourceSet, store: BlockCache, opts: ReadPathOptions = {}): Fetcher {
  return new Fetcher(failover(set, opts), store, opts)
}

/** A block store in `dir`/cache with no free-space floor and no background check during the test. */
export function testStore(dir: string, opts: Partial<StoreOptions> & { blockSize: number }): BlockStore {
  return new BlockStore(join(dir, 'cache'), { limit: 256 << 20, minFree: 0, cleanupDelayMs: 3_600_000, ...opts })
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
