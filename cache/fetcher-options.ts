// What a Fetcher is told (its options, with the defaults the daemon starts from), what it takes
// from its surroundings (time and chance, faked in tests), and the figures it keeps.
import type { Clock } from './clock.js'

export interface FetcherOptions {
  /** Tries per source before moving on to the next one. */
  attemptsPerSource: number
  /** First retry delay; doubles with each retry, with jitter. */
  backoffMs: number
  /** Longest wait between tries, whatever the server's Retry-After says. */
  maxBackoffMs: number
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
  /** A request body slower than this (bytes/s) over one rate window fails. */
  minRate: number
  /** Window over which the minimum rate is checked, ms; also the longest silence tolerated. */
  rateWindowMs: number
  /**
   * The reader's deadline (the mount's read timeout), ms; 0 for none. A reader waiting for the
   * network gives up just before it, so the block is marked failed before the kernel asks again.
   */
  readerDeadlineMs: number
  /** How long a block a reader could not get fails the next readers at once, ms. */
  failFastMs: number
}

export const DEFAULT_FETCHER_OPTIONS: FetcherOptions = {
  attemptsPerSource: 4,
  backoffMs: 200,
  maxBackoffMs: 10_000,
  smallFileBytes: 4 << 20,
  maxWindowBytes: 64 << 20,
  readAheadStepBytes: 1 << 20,
  readAheadAfterBytes: 1 << 20,
  runBytes: 8 << 20,
  memoryBudget: 128 << 20,
  recentBytes: 32 << 20,
  minRate: 64 << 10,
  rateWindowMs: 10_000,
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

/** What a Fetcher takes from its surroundings besides its options: time and chance (fakes in tests). */
export interface FetcherDeps {
  /** Backoff waits go through it. */
  clock: Clock
  /** Jitter, in [0, 1). */
  random: () => number
}
