// What a Fetcher is told (its options, with the defaults the daemon starts from) and the figures it
// keeps. The tries, backoff and stall guard are the read policy's (setup.ts, readSource).

export interface FetcherOptions {
  /** Files up to this size are fetched whole on their first read. */
  smallFileBytes: number
  /** Upper bound of the read-ahead window, bytes. */
  maxWindowBytes: number
  /** The first read-ahead window and the unit it grows by, bytes (read-ahead.ts). */
  readAheadStepBytes: number
  /**
   * Bytes a handle reads sequentially before read-ahead starts: more than the kernel asks for a
   * header read (up to 256 KiB at the start of a file) or a cutout's run of tiles, whose own
   * read-ahead doubles from 64 KiB while a reader goes on in order.
   */
  readAheadAfterBytes: number
  /** Bytes per ranged GET when reading ahead (several run in parallel). */
  runBytes: number
  /** Bytes that may be in flight (being fetched, or fetched and not yet stored) at once. */
  memoryBudget: number
  /** Recently fetched blocks kept in memory (also what serves reads when the disk is full). */
  recentBytes: number
  /**
   * The reader's deadline (the mount's read timeout), ms; 0 for none. A reader waiting for the
   * network gives up just before it, so the block is marked failed before the kernel asks again.
   */
  readerDeadlineMs: number
  /** How long a block a reader could not get fails the next readers at once, ms. */
  failFastMs: number
}

export const DEFAULT_FETCHER_OPTIONS: FetcherOptions = {
  smallFileBytes: 4 << 20,
  maxWindowBytes: 64 << 20,
  readAheadStepBytes: 1 << 20,
  readAheadAfterBytes: 1 << 20,
  runBytes: 8 << 20,
  memoryBudget: 128 << 20,
  recentBytes: 32 << 20,
  readerDeadlineMs: 0,
  failFastMs: 3000,
}

export interface FetchStats {
  requests: number
  bytesFetched: number
  retries: number
  failures: number
  memoryHits: number
  diskHits: number
  networkReads: number
}
