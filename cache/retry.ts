// One retry policy for everything that tries again: the fetcher's ranged GETs, the DB download and
// the token refresher. Waits grow exponentially with jitter (so many clients that failed together do
// not come back together), a server's Retry-After is honoured up to a cap, and the tries are bounded;
// a server asking us to slow down (429, S3 SlowDown) is up and answering, so waiting as it asks does
// not use up a try, up to its own bound.
import { systemClock, type Clock } from './clock.js'

export interface BackoffPolicy {
  /** First wait, ms; doubles with each try used up. */
  baseMs: number
  /** Longest wait, ms, whatever a server's Retry-After says. */
  maxMs: number
}

/**
 * The wait before retry `n` (1-based): baseMs × 2^(n-1), times a jitter factor in [0.5, 1.5), at
 * least the Retry-After a server asked for, at most maxMs.
 */
export function backoffDelay(n: number, policy: BackoffPolicy, retryAfterMs = 0, random: () => number = Math.random): number {
  const exp = policy.baseMs * 2 ** (Math.max(1, n) - 1) * (0.5 + random())
  return Math.min(policy.maxMs, Math.max(exp, retryAfterMs))
}

export interface RetryPolicy extends BackoffPolicy {
  /** Tries in all, the first included. */
  tries: number
  /** Throttled answers waited out on top of the tries (0: each uses up a try like any error). */
  maxThrottledWaits?: number
}

/** What a failed try tells the policy. */
export interface TryOutcome {
  /** The server asked us to slow down (429, SlowDown). */
  throttled?: boolean
  /** How long the server asked us to wait, ms. */
  retryAfterMs?: number
}

/** The tries of one operation: whether another may be made, its number, and the wait before it. */
export class Retrier {
  private used = 0
  private throttledWaits = 0
  private last: TryOutcome = {}

  constructor(
    private policy: RetryPolicy,
    private clock: Clock = systemClock,
    private random: () => number = Math.random,
  ) {}

  /** Another try may be made. */
  get more(): boolean {
    return this.used < this.policy.tries
  }

  /** The number of the try under way (1-based; throttled waits do not count). */
  get attempt(): number {
    return this.used + 1
  }

  /** Records a try that did not finish the job; returns whether another may be made. */
  failed(outcome: TryOutcome = {}): boolean {
    this.last = outcome
    if (outcome.throttled && this.throttledWaits < (this.policy.maxThrottledWaits ?? 0)) this.throttledWaits++
    else this.used++
    return this.more
  }

  /** The wait before the next try: by the tries used up (the first step at least), Retry-After honoured. */
  delay(): number {
    return backoffDelay(this.used, this.policy, this.last.retryAfterMs, this.random)
  }

  /** Waits before the next try; returns early, without throwing, when `signal` aborts. */
  async wait(signal?: AbortSignal): Promise<void> {
    await this.clock.sleep(this.delay(), signal).catch(() => undefined)
  }
}
