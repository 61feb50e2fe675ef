// Retry as a Source wrapper: each call to the wrapped source that fails with an error worth another
// try is tried again under retry.ts's policy (backoff with jitter, Retry-After, throttled answers
// waited out without using up a try). A read resumes at the first byte not yet delivered, and a body
// that ends early counts as a failed try. A caller's signal that aborts ends the tries at once. The
// owner of the source (failover.ts, source-set.ts) hears of every failed try, may stop the tries
// between two (the source was marked down meanwhile), and counts the retries.
import { Retrier, type RetryPolicy } from '../retry.js'
import type { Clock } from '../clock.js'
import { SourceError, type FileFacts, type ReadOptions, type Source, type SourceErrorKind } from './source.js'
import { SourceWrapper } from './wrapper.js'
import { log } from '../../daemon/log.js'

export interface RetryHooks {
  /** Asked before every retry: true ends the tries with the last error (the source was marked down). */
  stop?: () => boolean
  /** Told of every failed try that was not called off by the caller. */
  failed?: (err: SourceError) => void
  /** Told before every retry. */
  retrying?: () => void
}

/** `err` as a SourceError; anything else a source throws is of `kind`. */
export function asSourceError(err: unknown, kind: SourceErrorKind): SourceError {
  return err instanceof SourceError ? err : new SourceError(kind, (err as Error).message)
}

class RetryingSource extends SourceWrapper {
  constructor(
    inner: Source,
    private policy: RetryPolicy,
    private clock: Clock,
    private random: () => number,
    private hooks: RetryHooks,
  ) {
    super(inner)
  }

  /**
   * Reads [start, end), each retry from the first byte not yet delivered. Rejects with the last try's
   * error (a 'cancelled' one when the signal aborts); the prefix delivered stays delivered.
   */
  override async read(relPath: string, start: number, end: number, ro: ReadOptions): Promise<void> {
    let pos = start
    const onData = (chunk: Buffer) => {
      pos += chunk.length
      ro.onData(chunk)
    }
    await this.tries(
      ro.signal,
      'protocol',
      'fetch failed',
      `${relPath}: fetch called off (every sync that wanted it was cancelled)`,
      () => ({ path: relPath, bytes: `${pos}-${end - 1}` }),
      async () => {
        await this.inner.read(relPath, pos, end, { signal: ro.signal, onData })
        if (pos < end) throw new SourceError('protocol', `${this.name} ${this.locate(relPath)}: the read ended ${end - pos} bytes short`)
      },
    )
  }

  // A non-SourceError from a listing or a stat is the source's local side (the set has always taken
  // it so); from a read, a response we could not use.
  override list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    return this.tries(
      signal,
      'local',
      'listing failed',
      `listing ${relDir || '/'}: called off`,
      () => ({ dir: relDir || '/' }),
      () => this.inner.list(relDir, signal),
    )
  }

  override stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    return this.tries(
      signal,
      'local',
      'file facts request failed',
      `facts of ${relPath}: called off`,
      () => ({ path: relPath }),
      () => this.inner.stat(relPath, signal),
    )
  }

  /**
   * Runs `once` until it succeeds, its error is not worth a retry, the tries run out or `stop` says
   * so; each failed try is logged as `failure` with what `where` tells and the try's number. Rejects
   * with the last try's error, or with `offMessage` as a 'cancelled' error once `signal` aborts.
   */
  private async tries<T>(
    signal: AbortSignal | undefined,
    kind: SourceErrorKind,
    failure: string,
    offMessage: string,
    where: () => Record<string, string>,
    once: () => Promise<T>,
  ): Promise<T> {
    const tries = new Retrier(this.policy, this.clock, this.random)
    const calledOff = () => new SourceError('cancelled', offMessage)
    for (let last: SourceError | undefined; ;) {
      if (last) {
        this.hooks.retrying?.()
        // A call called off stops waiting at once (the check below ends it).
        await tries.wait(signal)
        if (!signal?.aborted && this.hooks.stop?.()) throw last
      }
      if (signal?.aborted) throw calledOff()
      try {
        return await once()
      } catch (err) {
        if (signal?.aborted) throw calledOff()
        last = asSourceError(err, kind)
        this.hooks.failed?.(last)
        log.warn(failure, { source: this.name, ...where(), attempt: tries.attempt, error: last.message })
        // The try is used up, unless the server asked us to slow down (429, SlowDown): it is up and
        // answering, so waiting as it asks does not use up a try, up to a bound.
        if (!last.retryable || !tries.failed({ throttled: last.kind === 'throttled', retryAfterMs: last.retryAfterMs })) throw last
      }
    }
  }
}

/** `source` with every call retried under `policy` (see above); `hooks` let its owner watch and stop the tries. */
export function withRetry(source: Source, policy: RetryPolicy, clock: Clock, random: () => number, hooks: RetryHooks = {}): Source {
  return new RetryingSource(source, policy, clock, random, hooks)
}
