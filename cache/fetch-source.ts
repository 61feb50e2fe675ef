// What the fetcher reads through: one Source standing for every configured source (in the daemon,
// setup.ts's readSource: failover over the sources with their tries and stall guard, each a wrapper
// the fetcher knows nothing of; anything with these few members in a test). Beyond
// reading bytes the fetcher needs only what its whole-file checksum asks of it: to leave out the
// source that sent a damaged copy, to hear which source served a read, and to read a file without
// the site caches for a while. The figures of the reads (requests, bytes per source, retries) are
// counted where the requests are made, so they are kept here and the fetcher adds its own to them.
import type { FetchCounters } from './metrics.js'
import type { ReadOptions, Source, SourceError } from './sources/source.js'

export interface SteeredReadOptions extends ReadOptions {
  /** Sources not to ask this time (they sent bytes that failed the archive's checksum). */
  avoid?: ReadonlySet<Source>
  /** Told which source brought the last bytes of a read that succeeded. */
  onServed?: (source: Source) => void
}

export interface FetchSource extends Source {
  read(relPath: string, start: number, end: number, opts: SteeredReadOptions): Promise<void>
  /** The read path's figures: the requests counted here, the fetcher's hits beside them; status reads them. */
  readonly count: FetchCounters
  /** `source` sent bytes that failed the archive's checksum: it counts against its health. */
  noteDamaged(source: Source, err: SourceError): void
  /** Sources a read would still try, leaving out `avoid` and those marked down. */
  others(avoid: ReadonlySet<Source>): Source[]
  /** Reads `relPath` without the site caches for a while (its copy there is damaged). */
  distrust(relPath: string): void
  /** Whether `relPath` is being read without the site caches. */
  distrusting(relPath: string): boolean
}
