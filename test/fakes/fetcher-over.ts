// Tests build a Fetcher from a set of sources the way cache/setup.ts does: the set wrapped in the
// failover source, the options of both given as one object (clock and random among them).
import { Fetcher, type FetcherOptions } from '../../cache/fetcher.js'
import type { BlockStore } from '../../cache/block-store.js'
import { failover, type FailoverOptions } from '../../cache/sources/failover.js'
import type { SourceSet } from '../../cache/sources/source-set.js'

export type ReadPathOptions = Partial<FetcherOptions & FailoverOptions>

export function fetcherOver(set: SourceSet, store: BlockStore, opts: ReadPathOptions = {}): Fetcher {
  return new Fetcher(failover(set, opts), store, opts)
}
