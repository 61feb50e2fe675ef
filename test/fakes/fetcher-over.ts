// Tests build a Fetcher from a set of sources the way cache/setup.ts does: the set wrapped in the
// failover source, the options of both given as one object (clock and random among them).
import { Fetcher, type FetcherOptions } from '../../cache/fetcher.js'
import type { BlockCache } from '../../cache/block-cache.js'
import { failover, type FailoverOptions } from '../../cache/sources/failover.js'
import type { SourceSet } from '../../cache/sources/source-set.js'

export type ReadPathOptions = Partial<FetcherOptions & FailoverOptions>

export function fetcherOver(set: SourceSet, store: BlockCache, opts: ReadPathOptions = {}): Fetcher {
  return new Fetcher(failover(set, opts), store, opts)
}
