// Single-flight: one request per block however many readers and jobs want it, until it is stored.
// Blocks are fetched in runs (one ranged GET for several blocks); this module keeps which block is
// in flight in which run, who waits for each run, and the bytes in flight (the memory budget counts
// them until the run's blocks are stored, not only until they arrive).
import type { BlockCache, CachedBlocks } from './block-cache.js'
import type { Block } from './block.js'
import { fetchMetrics } from './metrics.js'

export interface Deferred {
  promise: Promise<Block>
  resolve: (b: Block) => void
  reject: (e: Error) => void
}

function deferred(): Deferred {
  let resolve!: (b: Block) => void
  let reject!: (e: Error) => void
  const promise = new Promise<Block>((res, rej) => {
    resolve = res
    reject = rej
  })
  promise.catch(() => undefined) // a block nobody waits for must not become an unhandled rejection
  return { promise, resolve, reject }
}

/**
 * A run of blocks being fetched, and who waits for it. A run started for sync jobs can be called off
 * once every job that wants it was cancelled; as soon as a reader or read-ahead wants it (`signals`
 * undefined) it runs to the end, since a reader must never see a cancelled fetch.
 */
interface Run {
  /** Settles once every block of the run is stored (or failed). */
  done: Promise<void>
  signals: AbortSignal[] | undefined
  stop: AbortController
  /** Called when a job's signal aborts; removed from every signal once the run ends or a reader joins. */
  check: () => void
}

/** What fetches a run's blocks: resolves or rejects each of `defs`, and settles once they are stored. */
export type RunBody = (file: CachedBlocks, first: number, end: number, defs: Deferred[], calledOff: AbortSignal) => Promise<void>

export class Runs {
  /** For each block being fetched (`key:idx`), the promise of it. */
  private inflight = new Map<string, Promise<Block>>()
  /** For each block being fetched, its run. */
  private runs = new Map<string, Run>()
  /** Bytes being fetched, or fetched and not yet stored. */
  bytes = 0
  private store: Pick<BlockCache, 'hold' | 'release'>
  private body: RunBody

  constructor(store: Pick<BlockCache, 'hold' | 'release'>, body: RunBody) {
    this.store = store
    this.body = body
  }

  /** The block `k` in flight, if it is. */
  get(k: string): Promise<Block> | undefined {
    return this.inflight.get(k)
  }

  has(k: string): boolean {
    return this.inflight.has(k)
  }

  /** Block `k` is being fetched for sync jobs only (no reader or read-ahead wants it yet). */
  jobsOnly(k: string): boolean {
    return this.runs.get(k)?.signals !== undefined
  }

  /** Settles once the run bringing block `k` ended (undefined when none is). */
  done(k: string): Promise<void> | undefined {
    return this.runs.get(k)?.done
  }

  /** Forgets block `k` if `promise` is still the one in flight for it (so the next asker fetches it anew). */
  forget(k: string, promise: Promise<Block>): void {
    if (this.inflight.get(k) === promise) this.inflight.delete(k)
  }

  /** Adds a party to the run fetching block `k`: a job's signal, or undefined for a reader (then it cannot be called off). */
  join(k: string, signal: AbortSignal | undefined): void {
    const run = this.runs.get(k)
    if (!run?.signals || (signal && run.signals.includes(signal))) return
    if (signal) {
      run.signals.push(signal)
      signal.addEventListener('abort', run.check, { once: true })
    } else this.mustFinish(run)
  }

  /** From now on the run cannot be called off (a reader or read-ahead wants it, or it ended). */
  private mustFinish(run: Run): void {
    for (const s of run.signals ?? []) s.removeEventListener('abort', run.check)
    run.signals = undefined
  }

  /** Starts a run for blocks [first, end) of a file, on a job's behalf when `signal` is given. */
  start(file: CachedBlocks, first: number, end: number, signal?: AbortSignal): void {
    const run: Run = {
      done: Promise.resolve(),
      signals: signal ? [signal] : undefined,
      stop: new AbortController(),
      check: () => {
        if (run.signals?.every((s) => s.aborted)) run.stop.abort()
      },
    }
    if (signal?.aborted) run.stop.abort()
    else signal?.addEventListener('abort', run.check, { once: true })
    // Each block in flight, and known as this run's, before the body starts: a source may deliver
    // (and serve) at once.
    const defs: Deferred[] = []
    for (let i = first; i < end; i++) {
      const d = deferred()
      const k = `${file.key}:${i}`
      defs.push(d)
      this.inflight.set(k, d.promise)
      this.runs.set(k, run)
    }
    const bytes = Math.min(end * file.blockSize, file.size) - first * file.blockSize
    this.bytes += bytes
    fetchMetrics.inflightBytes.set(this.bytes)
    this.store.hold(file)
    run.done = this.body(file, first, end, defs, run.stop.signal).finally(() => {
      this.bytes -= bytes
      fetchMetrics.inflightBytes.set(this.bytes)
      for (let i = first; i < end; i++) {
        const k = `${file.key}:${i}`
        this.forget(k, defs[i - first]!.promise)
        if (this.runs.get(k) === run) this.runs.delete(k)
      }
      this.mustFinish(run)
      this.store.release(file)
    })
  }

  /** Resolves once no run of the file `key` is in flight: its blocks asked for so far are stored, or failed. */
  settledFile(key: string): Promise<void> {
    const prefix = `${key}:`
    return this.settledOf((k) => k.startsWith(prefix))
  }

  /** Resolves once no run is in flight: every block asked for so far is stored, or failed. */
  settled(): Promise<void> {
    return this.settledOf(() => true)
  }

  /** Waits, round after round (runs started meanwhile too, bounded), until no run of a block `of` picks is in flight. */
  private async settledOf(of: (blockKey: string) => boolean): Promise<void> {
    for (let round = 0; round < 10_000; round++) {
      const waiting = new Set<Promise<unknown>>()
      for (const [k, r] of this.runs) if (of(k)) waiting.add(r.done)
      if (waiting.size === 0) return
      await Promise.allSettled(waiting)
    }
  }
}
