// The stall guard of a request: it must keep bringing bytes at a minimum rate, or it is aborted with
// a reason a person can read. Covers connecting and waiting for headers too.
import { formatSize } from '../daemon/units.js'

export interface RateGuard {
  /** Aborts when the request fell below the rate. */
  signal: AbortSignal
  /** Counts bytes received. */
  got: (n: number) => void
  /** The request ended: stop watching. */
  done: () => void
  /** Why it was aborted, once it was. */
  reason: string | undefined
}

/**
 * A deadline on a request's progress: each window of `windowMs` must bring min(minRate × window,
 * bytes still wanted) bytes, or the request is aborted.
 */
export function rateGuard(total: number, minRate: number, windowMs: number): RateGuard {
  const ac = new AbortController()
  let received = 0
  let atWindowStart = 0
  const g: RateGuard = {
    signal: ac.signal,
    reason: undefined,
    got: (n: number) => {
      received += n
    },
    done: () => clearInterval(timer),
  }
  const timer = setInterval(() => {
    const need = Math.min((minRate * windowMs) / 1000, total - atWindowStart)
    if (received - atWindowStart < need) {
      g.reason =
        received === atWindowStart
          ? `no data for ${windowMs / 1000}s (stalled)`
          : `too slow: ${formatSize(received - atWindowStart)} in ${windowMs / 1000}s, below the minimum rate of ${formatSize(minRate)}/s`
      clearInterval(timer)
      ac.abort()
    }
    atWindowStart = received
  }, windowMs)
  return g
}
