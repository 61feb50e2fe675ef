// Failover as a Source: a read goes to the sources of a set in order, each with its own tries, and
// moves on to the next when one cannot serve it. Every request has a deadline on its progress (the
// stall guard, rate-guard.ts); failures are retried with exponential backoff and jitter, or after the
// server's Retry-After (retry.ts), each retry resuming at the first byte not yet received. A site
// cache (a source that serves bytes only) is tried once: the archive behind it is its retry. The
// set's health rule applies throughout: a source marked down is not asked until its time has passed.
// The fetcher reads through one of these, so that the retry and failover policy lives here alone.
import { Retrier } from '../retry.js'
import { rateGuard } from '../rate-guard.js'
import { fetchCounters, fetchMetrics, type FetchCounters } from '../metrics.js'
import { systemClock, type Clock } from '../clock.js'
import type { FetchSource, SteeredReadOptions } from '../fetch-source.js'
import { SourceError, type FileFacts, type ReadOptions, type Source } from './source.js'
import type { SourceSet } from './source-set.js'
import { log } from '../../daemon/log.js'

/** Waits a source may ask for (429, SlowDown) per read, on top of the tries for errors. */
const MAX_THROTTLED_WAITS = 8

/** How long a file whose copy at a site cache failed the archive's checksum is read without it, ms. */
const DISTRUST_MS = 3_600_000
/** Files remembered so at most (expired ones are dropped first). */
const MAX_DISTRUSTED = 10_000

export interface FailoverOptions {
  /** Tries per source before moving on to the next one. */
  attemptsPerSource: number
  /** First retry delay; doubles with each retry, with jitter. */
  backoffMs: number
  /** Longest wait between tries, whatever the server's Retry-After says. */
  maxBackoffMs: number
  /** A request body slower than this (bytes/s) over one rate window fails. */
  minRate: number
  /** Window over which the minimum rate is checked, ms. */
  rateWindowMs: number
  clock: Clock
  /** Jitter, in [0, 1). */
  random: () => number
}

/** The tries, backoff and stall guard the daemon starts from. */
export const DEFAULT_FAILOVER_OPTIONS: FailoverOptions = {
  attemptsPerSource: 4,
  backoffMs: 200,
  maxBackoffMs: 10_000,
  minRate: 64 << 10,
  rateWindowMs: 10_000,
  clock: systemClock,
  random: Math.random,
}

export class FailoverSource implements FetchSource {
  readonly name = 'failover'
  readonly authoritative = true
  readonly identity: string
  private inflightRequests = 0
  /** Files whose copy at a site cache was damaged, until when they are read without it. */
  private distrusted = new Map<string, number>()
  private opts: FailoverOptions
  /** Requests, bytes and retries per source, counted here; the fetcher adds its hits. */
  readonly count: FetchCounters = fetchCounters()

  constructor(
    readonly set: SourceSet,
    opts: Partial<FailoverOptions> = {},
  ) {
    this.opts = { ...DEFAULT_FAILOVER_OPTIONS, ...opts }
    this.identity = set.identity
  }

  locate(relPath: string): string {
    return this.set.locate(relPath)
  }

  /**
   * Reads `relPath` without the site caches for a while: its bytes failed the archive's checksum,
   * and a site cache would serve the same damaged copy again. No-op without a site cache.
   */
  distrust(relPath: string): void {
    if (!this.set.sources.some((s) => s.bytesOnly)) return
    const now = this.opts.clock.now()
    if (this.distrusted.size >= MAX_DISTRUSTED) {
      for (const [k, until] of this.distrusted) if (until <= now) this.distrusted.delete(k)
      if (this.distrusted.size >= MAX_DISTRUSTED) this.distrusted.clear()
    }
    log.warn('reading the file without the site cache for a while: it did not match the archive checksum', { path: relPath })
    this.distrusted.set(relPath, now + DISTRUST_MS)
  }

  /** Whether `relPath` is being read without the site caches (see distrust). */
  distrusting(relPath: string): boolean {
    return (this.distrusted.get(relPath) ?? 0) > this.opts.clock.now()
  }

  noteDamaged(source: Source, err: SourceError): void {
    this.set.noteFailure(source, err)
  }

  /** Sources a read would still try, leaving out `avoid` and those marked down. */
  others(avoid: ReadonlySet<Source>): Source[] {
    return this.set.sources.filter((s) => !avoid.has(s) && !this.set.isDown(s))
  }

  /**
   * Reads bytes [start, end) from the first source that can serve them, resuming on the next source
   * where the last one stopped. Rejects with the last source's error (a 'cancelled' one when the
   * signal aborts): the prefix delivered before that stays delivered.
   */
  async read(relPath: string, start: number, end: number, ro: SteeredReadOptions): Promise<void> {
    let pos = start
    let lastErr: SourceError | undefined
    let candidates: Source[]
    try {
      const noSite = this.distrusting(relPath)
      candidates = this.set.candidates().filter((s) => !ro.avoid?.has(s) && !(noSite && s.bytesOnly))
    } catch (err) {
      throw err as SourceError
    }
    const cancelled = () => new SourceError('cancelled', `${relPath}: fetch called off (every sync that wanted it was cancelled)`)
    outer: for (const [n, source] of candidates.entries()) {
      if (n > 0 && lastErr)
        log.warn('reading from the next source', {
          failed: candidates[n - 1]!.name,
          source: source.name,
          path: relPath,
          error: lastErr.message,
        })
      // A site cache is not worth waiting for: the archive behind it is the retry.
      const policy = source.bytesOnly
        ? { tries: 1, baseMs: 0, maxMs: 0 }
        : {
            tries: this.opts.attemptsPerSource,
            baseMs: this.opts.backoffMs,
            maxMs: this.opts.maxBackoffMs,
            maxThrottledWaits: MAX_THROTTLED_WAITS,
          }
      const tries = new Retrier(policy, this.opts.clock, this.opts.random)
      // Every request to this source but the first waits first (after a 429 on the first try too).
      for (let asked = false; tries.more && pos < end; asked = true) {
        if (asked) {
          this.count.add('retries')
          // A read called off stops waiting at once (the check below ends it).
          await tries.wait(ro.signal)
        }
        if (ro.signal?.aborted) throw cancelled()
        if (this.set.isDown(source)) continue outer
        lastErr = await this.request(source, relPath, pos, end, ro, (got) => {
          pos += got
        })
        if (!lastErr && pos < end)
          lastErr = new SourceError('protocol', `${source.name} ${source.locate(relPath)}: the read ended ${end - pos} bytes short`)
        if (!lastErr) {
          this.set.noteSuccess(source)
          ro.onServed?.(source)
          return
        }
        if (ro.signal?.aborted) throw cancelled()
        this.set.noteFailure(source, lastErr)
        log.warn('fetch failed', {
          source: source.name,
          path: relPath,
          bytes: `${pos}-${end - 1}`,
          attempt: tries.attempt,
          error: lastErr.message,
        })
        if (!lastErr.retryable) continue outer
        // The try did not bring every byte (an error, or a body that ended early): it is used up,
        // unless the server asked us to slow down (429, SlowDown): it is up and answering, so
        // waiting as it asks does not use up a try, up to a bound. A reader's deadline still bounds
        // its own wait.
        tries.failed({ throttled: lastErr.kind === 'throttled', retryAfterMs: lastErr.retryAfterMs })
      }
    }
    throw lastErr ?? new SourceError('network', 'no source could serve the file')
  }

  /** One request to one source under the stall guard; resolves with its error, or undefined once every byte came. */
  private async request(
    source: Source,
    relPath: string,
    start: number,
    end: number,
    ro: ReadOptions,
    advanced: (n: number) => void,
  ): Promise<SourceError | undefined> {
    const what = `${source.name} ${source.locate(relPath)} bytes=${start}-${end - 1}`
    this.count.add('requests', 1, source.name)
    const guard = rateGuard(end - start, this.opts.minRate, this.opts.rateWindowMs)
    fetchMetrics.inflightRequests.set(++this.inflightRequests)
    const t0 = performance.now()
    try {
      await source.read(relPath, start, end, {
        signal: ro.signal ? AbortSignal.any([guard.signal, ro.signal]) : guard.signal,
        onData: (chunk) => {
          guard.got(chunk.length)
          this.count.add('bytesFetched', chunk.length, source.name)
          advanced(chunk.length)
          ro.onData(chunk)
        },
      })
      return undefined
    } catch (err) {
      let e = err instanceof SourceError ? err : new SourceError('protocol', (err as Error).message)
      if (guard.reason) e = new SourceError('timeout', `${what}: ${guard.reason}`)
      if (!ro.signal?.aborted) fetchMetrics.errors.inc({ source: source.name, kind: e.kind })
      return e
    } finally {
      guard.done()
      fetchMetrics.inflightRequests.set(--this.inflightRequests)
      fetchMetrics.latency.observe({ source: source.name }, (performance.now() - t0) / 1000)
    }
  }

  list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    return this.set.list(relDir, signal)
  }

  stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    return this.set.stat(relPath, signal)
  }

  close(): Promise<void> {
    return this.set.close()
  }
}

/** The sources of a set as one Source with the tries, stall guard and failover above. */
export function failover(set: SourceSet, opts: Partial<FailoverOptions> = {}): FailoverSource {
  return new FailoverSource(set, opts)
}
