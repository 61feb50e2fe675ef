// The configured sources in order, with failover: each is tried in turn, and a source that fails to
// connect several times in a row is marked down for a while, so that when the network is gone reads
// of uncached bytes fail at once instead of each waiting out its own timeouts. Serves the tree too:
// listings come from the first authoritative source that answers (a partial mirror's listing only
// adds to it), single-file facts from the first source that has the file. A source that serves bytes
// only (a site cache) gives no facts, and any failure of it counts towards marking it down: the
// archive behind it is there to serve the read meanwhile. Listings and facts are asked of each source
// through the same retry as reads (with-retry.ts): a 5xx or a reset connection is tried again, with
// backoff, until the caller's signal (the tree's deadline) aborts, before the next source is asked.
import { SourceError, type Source } from './source.js'
import type { FileFacts } from './source.js'
import { fetchMetrics } from '../metrics.js'
import { systemClock, type Clock } from '../clock.js'
import type { RetryPolicy } from '../retry.js'
import { withRetry } from './with-retry.js'
import { log } from '../../daemon/log.js'

export interface SourceSetOptions {
  /** Consecutive connection failures that mark a source down. */
  downAfter: number
  /** How long a source stays down before it is tried again, ms. */
  downMs: number
  /** Tells the time a source was marked down and when it comes back (a fake one in tests). */
  clock: Clock
  /** Tries of a listing or a single file's facts per source, and the backoff between them. */
  factRetry: RetryPolicy
  /** Jitter of that backoff, in [0, 1). */
  random: () => number
}

/**
 * A few quick tries: the kernel waits for the answer, and the caller's deadline ends the tries
 * anyway. A throttled answer is waited out once without using up a try.
 */
const FACT_RETRY: RetryPolicy = { tries: 3, baseMs: 200, maxMs: 2_000, maxThrottledWaits: 1 }

/**
 * Whether a failure counts towards marking its source down: failing to connect, for any source; for
 * a site cache, any failure but a file it lacks (a 5xx, a stall, a wrong length or a refused token
 * repeated on every read would cost each read a request before the archive serves it).
 */
function countsAsDown(s: Source, err: SourceError): boolean {
  if (err.unreachable) return true
  return !!s.bytesOnly && err.kind !== 'not_found' && err.kind !== 'cancelled'
}

interface Health {
  failures: number
  downUntil: number
  lastError: string | undefined
}

// Not a Source itself: bytes are read through failover.ts, which tries the sources in turn with their
// retries; the set serves listings and facts (the tree) and the sources' health.
export class SourceSet implements Omit<Source, 'read'> {
  readonly name = 'sources'
  readonly authoritative = true
  readonly sources: Source[]
  /**
   * The identities of the sources that give facts; their order does not change which facts are true,
   * so it is left out, and a site cache gives none, so adding one keeps the facts learned.
   */
  readonly identity: string
  private opts: SourceSetOptions
  private health = new Map<Source, Health>()
  /** Each source as listings and facts are asked of it: with its tries, under the health rule. */
  private asked = new Map<Source, Source>()

  constructor(sources: Source[], opts: Partial<SourceSetOptions> = {}) {
    if (sources.length === 0) throw new Error('no sources configured')
    this.sources = sources
    this.identity = sources
      .filter((s) => !s.bytesOnly)
      .map((s) => s.identity)
      .sort()
      .join('\n')
    this.opts = { downAfter: 3, downMs: 10_000, clock: systemClock, factRetry: FACT_RETRY, random: Math.random, ...opts }
    for (const s of sources) {
      this.health.set(s, { failures: 0, downUntil: 0, lastError: undefined })
      // Every failed try counts towards the health; a source marked down meanwhile is asked no more.
      const hooks = { stop: () => this.isDown(s), failed: (e: SourceError) => this.noteFailure(s, e) }
      this.asked.set(s, withRetry(s, this.opts.factRetry, this.opts.clock, this.opts.random, hooks))
    }
  }

  isDown(s: Source): boolean {
    return this.health.get(s)!.downUntil > this.opts.clock.now()
  }

  /** Sources to try, in order; throws when every one is down (the caller fails fast). */
  candidates(among: Source[] = this.sources): Source[] {
    const up = among.filter((s) => !this.isDown(s))
    if (up.length) return up
    const why = among.map((s) => `${s.name}: ${this.health.get(s)!.lastError ?? 'down'}`).join('; ')
    throw new SourceError(
      'unreachable',
      `no source reachable (each failed ${this.opts.downAfter} times in a row; retrying in a few seconds): ${why}`,
    )
  }

  noteSuccess(s: Source): void {
    const h = this.health.get(s)
    if (!h) return
    if (h.downUntil) {
      log.info('source reachable again', { source: s.name })
      fetchMetrics.sourceDown.set({ source: s.name }, 0)
    }
    h.failures = 0
    h.downUntil = 0
  }

  noteFailure(s: Source, err: SourceError): void {
    const h = this.health.get(s)
    if (!h || !countsAsDown(s, err)) return
    h.lastError = err.message
    if (++h.failures >= this.opts.downAfter) {
      if (!this.isDown(s))
        log.warn(`source marked down after repeated ${s.bytesOnly ? '' : 'connection '}failures`, {
          source: s.name,
          failures: h.failures,
          for: `${this.opts.downMs / 1000}s`,
          error: err.message,
        })
      h.downUntil = this.opts.clock.now() + this.opts.downMs
      fetchMetrics.sourceDown.set({ source: s.name }, 1)
    }
  }

  /** Asks `s` (with its tries) through `fn`; a success clears its failures (each failed try counted already). */
  private async attempt<T>(s: Source, fn: (asked: Source) => Promise<T>): Promise<T> {
    const v = await fn(this.asked.get(s)!)
    this.noteSuccess(s)
    return v
  }

  /** Where a file is: at the first source that gives facts (a site cache only holds copies). */
  locate(relPath: string): string {
    return (this.sources.find((s) => !s.bytesOnly) ?? this.sources[0]!).locate(relPath)
  }

  /** The sources to ask for facts, in order (throws when every one is down). */
  private factCandidates(): Source[] {
    return this.candidates(this.sources.filter((s) => !s.bytesOnly))
  }

  async list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    const merged = new Map<string, FileFacts>()
    let last: SourceError | undefined
    for (const s of this.factCandidates()) {
      let listing: Map<string, FileFacts> | null
      try {
        listing = await this.attempt(s, (a) => a.list(relDir, signal))
      } catch (err) {
        last = err as SourceError
        continue
      }
      if (!listing) continue
      for (const [k, v] of listing) {
        const had = merged.get(k)
        // An authoritative source's facts win; a checksum fills in from wherever it is known.
        if (!had || s.authoritative) merged.set(k, { ...v, adler32: v.adler32 ?? had?.adler32 ?? null })
        else if (!had.adler32 && v.adler32) had.adler32 = v.adler32
      }
      if (s.authoritative) return merged
    }
    // No authoritative listing: names missing from a partial one prove nothing, so per-file facts.
    if (last && merged.size === 0) throw last
    return null
  }

  async stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    let last: SourceError | undefined
    let found: FileFacts | null = null
    for (const s of this.factCandidates()) {
      try {
        const f = await this.attempt(s, (a) => a.stat(relPath, signal))
        if (f && (s.authoritative || !found)) {
          found = found && !f.adler32 ? { ...f, adler32: found.adler32 } : f
          if (s.authoritative || found.adler32) return found
        }
      } catch (err) {
        last = err as SourceError
      }
    }
    if (found) return found
    if (last) throw last
    return null
  }

  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close().catch(() => undefined)))
  }
}
