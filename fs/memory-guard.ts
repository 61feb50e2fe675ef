// Keeps the daemon's memory bounded when millions of names are looked up. desfs's own caches are
// bounded, but the plane keeps a node for every name the kernel has cached (the kernel holds node
// ids until it sends FORGET), and the kernel keeps names (with long entry timeouts, as desfs wants)
// until memory is short: after a `find -size` or `ls -lR` over millions of files that is hundreds of
// MB in this process. When the process grows past a limit, the kernel is asked to forget the names
// it cached under the root (as after a tree swap); it then evicts the unused ones and sends FORGETs,
// and the plane frees their nodes.
// The price is that the next stat of each forgotten name asks the daemon again (tens of µs).
import { log } from '../daemon/log.js'

export interface MemoryGuardOptions {
  /** Resident set size above which cached names are dropped. */
  limitBytes: number
  /** How often to look. */
  intervalMs: number
  /** Not more often than this. */
  minGapMs: number
  /** Makes the kernel forget cached names. */
  forget: () => Promise<void>
  /** True while memory is expected to be high for another reason (an index being built). */
  paused?: () => boolean
}

/** Starts watching this process's RSS; returns a function that stops it. */
export function startMemoryGuard(o: MemoryGuardOptions): () => void {
  let last = 0
  let busy = false
  const timer = setInterval(() => {
    const rss = process.memoryUsage.rss()
    if (busy || rss < o.limitBytes || Date.now() - last < o.minGapMs || o.paused?.()) return
    busy = true
    last = Date.now()
    void o
      .forget()
      .then(() =>
        log.info('memory above the limit: asked the kernel to forget the names it cached', {
          rssMB: Math.round(rss / 1e6),
          limitMB: Math.round(o.limitBytes / 1e6),
        }),
      )
      .catch((err) => log.warn('could not ask the kernel to forget cached names', { error: (err as Error).message }))
      .finally(() => (busy = false))
  }, o.intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}
