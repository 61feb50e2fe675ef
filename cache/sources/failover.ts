// Failover as a Source: a read goes to the sources of a set in order and moves on to the next one at
// the first byte the last one did not bring. Each source is read through the policies its owner
// composed around it (cache/setup.ts: tries with backoff, the stall guard, counting); this module
// only chooses the source. The set's health rule applies: a source marked down is skipped, and a
// file whose copy at a site cache was damaged is read without the site caches for a while. The
// fetcher reads through one of these (fetch-source.ts).
import type { FetchCounters } from '../metrics.js'
import type { Clock } from '../clock.js'
import type { FetchSource, SteeredReadOptions } from '../fetch-source.js'
import { SourceError, type FileFacts, type Source } from './source.js'
import type { SourceSet } from './source-set.js'
import { log } from '../../daemon/log.js'

/** How long a file whose copy at a site cache failed the archive's checksum is read without it, ms. */
const DISTRUST_MS = 3_600_000
/** Files remembered so at most (expired ones are dropped first). */
const MAX_DISTRUSTED = 10_000

export class FailoverSource implements FetchSource {
  readonly name = 'failover'
  readonly authoritative = true
  readonly identity: string
  /** Files whose copy at a site cache was damaged, until when they are read without it. */
  private distrusted = new Map<string, number>()
  /** Each source of the set with the policies it is read through. */
  private through: Map<Source, Source>

  /**
   * `through(s)`: the source `s` as it is to be read (with its tries, stall guard and counting).
   * `count`: the figures those count in, which the fetcher adds its own to.
   */
  constructor(
    readonly set: SourceSet,
    through: (s: Source) => Source,
    readonly count: FetchCounters,
    private clock: Clock,
  ) {
    this.identity = set.identity
    this.through = new Map(set.sources.map((s) => [s, through(s)]))
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
    const now = this.clock.now()
    if (this.distrusted.size >= MAX_DISTRUSTED) {
      for (const [k, until] of this.distrusted) if (until <= now) this.distrusted.delete(k)
      if (this.distrusted.size >= MAX_DISTRUSTED) this.distrusted.clear()
    }
    log.warn('reading the file without the site cache for a while: it did not match the archive checksum', { path: relPath })
    this.distrusted.set(relPath, now + DISTRUST_MS)
  }

  /** Whether `relPath` is being read without the site caches (see distrust). */
  distrusting(relPath: string): boolean {
    return (this.distrusted.get(relPath) ?? 0) > this.clock.now()
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
    const noSite = this.distrusting(relPath)
    // Throws at once when every source is down: the reader fails fast.
    const candidates = this.set.candidates().filter((s) => !ro.avoid?.has(s) && !(noSite && s.bytesOnly))
    for (const [n, source] of candidates.entries()) {
      if (n > 0 && lastErr)
        log.warn('reading from the next source', {
          failed: candidates[n - 1]!.name,
          source: source.name,
          path: relPath,
          error: lastErr.message,
        })
      // Marked down by another read since the candidates were chosen.
      if (this.set.isDown(source)) continue
      try {
        await this.through.get(source)!.read(relPath, pos, end, {
          signal: ro.signal,
          onData: (chunk) => {
            pos += chunk.length
            ro.onData(chunk)
          },
        })
      } catch (err) {
        lastErr = err as SourceError
        if (ro.signal?.aborted) throw lastErr
        continue
      }
      this.set.noteSuccess(source)
      ro.onServed?.(source)
      return
    }
    throw lastErr ?? new SourceError('network', 'no source could serve the file')
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
