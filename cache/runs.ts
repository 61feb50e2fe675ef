// Single-flight: one request per block however many readers and jobs want it, until it is stored.
// Blocks are fetched in runs (one ranged GET for several blocks); this module keeps which block is
// in flight in which run, who waits for each run, and the bytes in flight (the memory budget counts
// them until the run's blocks are stored, not only until they arrive).
import type { BlockCache, CachedBlocks } from './block-cache.js'
import type { Block } from './block.js'
import { fetchMetrics } from './metrics.js'
import { SourceError } from './sources/source.js'

/**
 * A run of blocks [first, end) being fetched, and who waits for it. Each block is settled once by
 * the run's body; a promise of a block (or of them all) is made only when someone asks, since a sync
 * asks per window of runs rather than per block (a promise, two closures and a catch per 32 KiB block
 * were a tenth of a sync's JavaScript). A run started for sync jobs can be called off once every job
 * that wants it was cancelled; as soon as a reader or read-ahead wants it (`signals` undefined) it
 * runs to the end, since a reader must never see a cancelled fetch.
 */
export class Run {
  /** Settles once every block of the run is stored (or failed). */
  done: Promise<void> = Promise.resolve()
  signals: AbortSignal[] | undefined
  readonly stop = new AbortController()
  /** Gives the memory of the run's stored blocks back for reuse (fetch-run.ts), once the run is over. */
  giveBack: (() => void) | undefined
  /** Per block: what it settled with (undefined while in flight). */
  private outcome: (Block | Error | undefined)[]
  /** Per block: its promise, once someone asked. */
  private waiting: (Deferred | undefined)[]
  /** Blocks not delivered yet, and the promise of them all, once someone asked. */
  private left: number
  private whole: Deferred<void> | undefined
  private failure: Error | undefined

  constructor(
    readonly key: string,
    readonly first: number,
    readonly end: number,
    signal: AbortSignal | undefined,
  ) {
    this.outcome = new Array<Block | Error | undefined>(end - first)
    this.waiting = new Array<Deferred | undefined>(end - first)
    this.left = end - first
    this.signals = signal ? [signal] : undefined
    if (signal?.aborted) this.stop.abort()
    else signal?.addEventListener('abort', this.check, { once: true })
  }

  /** Called when a job's signal aborts; removed from every signal once the run ends or a reader joins. */
  readonly check = (): void => {
    if (this.signals?.every((s) => s.aborted)) this.stop.abort()
  }

  /** Only sync jobs want the run (no reader or read-ahead yet). */
  get jobsOnly(): boolean {
    return this.signals !== undefined
  }

  /** The run's body delivers block `idx`. */
  resolve(idx: number, block: Block): void {
    const j = idx - this.first
    if (this.outcome[j] !== undefined) return
    this.outcome[j] = block
    this.waiting[j]?.resolve(block)
    if (--this.left === 0) this.whole?.resolve()
  }

  /** The run's body fails block `idx`. */
  reject(idx: number, err: Error): void {
    const j = idx - this.first
    if (this.outcome[j] !== undefined) return
    this.outcome[j] = err
    this.waiting[j]?.reject(err)
    this.failure ??= err
    this.whole?.reject(err)
  }

  /** Fails every block not settled yet (a body that ended without settling one must not hang its waiters). */
  failRest(err: Error): void {
    for (let i = this.first; i < this.end; i++) if (this.outcome[i - this.first] === undefined) this.reject(i, err)
  }

  /** Block `idx`, once delivered. */
  block(idx: number): Promise<Block> {
    const j = idx - this.first
    const d = (this.waiting[j] ??= deferred<Block>())
    const got = this.outcome[j]
    if (got instanceof Error) d.reject(got)
    else if (got !== undefined) d.resolve(got)
    return d.promise
  }

  /** Resolves once every block was delivered; rejects with the first failure. */
  delivered(): Promise<void> {
    this.whole ??= deferred<void>()
    if (this.failure) this.whole.reject(this.failure)
    else if (this.left === 0) this.whole.resolve()
    return this.whole.promise
  }

  /** From now on the run cannot be called off (a reader or read-ahead wants it, or it ended). */
  mustFinish(): void {
    for (const s of this.signals ?? []) s.removeEventListener('abort', this.check)
    this.signals = undefined
  }

  /** Adds a party: a job's signal, or undefined for a reader (then it cannot be called off). */
  join(signal: AbortSignal | undefined): void {
    if (!this.signals || (signal && this.signals.includes(signal))) return
    if (signal) {
      this.signals.push(signal)
      signal.addEventListener('abort', this.check, { once: true })
    } else this.mustFinish()
  }
}

interface Deferred<T = Block> {
  promise: Promise<T>
  resolve: (v: T) => void
  reject: (e: Error) => void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void
  let reject!: (e: Error) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  promise.catch(() => undefined) // asked for, then not awaited (a window that went block by block): no unhandled rejection
  return { promise, resolve, reject }
}

/** What fetches a run's blocks: resolves or rejects each of them, and settles once they are stored. */
export type RunBody = (file: CachedBlocks, run: Run) => Promise<void>

export class Runs {
  /** For each file (by key), the run bringing each of its blocks in flight. */
  private files = new Map<string, Map<number, Run>>()
  /** Bytes being fetched, or fetched and not yet stored. */
  bytes = 0
  private store: Pick<BlockCache, 'hold' | 'release'>
  private body: RunBody

  constructor(store: Pick<BlockCache, 'hold' | 'release'>, body: RunBody) {
    this.store = store
    this.body = body
  }

  /** The run bringing block `idx` of the file `key`, if one is. */
  run(key: string, idx: number): Run | undefined {
    return this.files.get(key)?.get(idx)
  }

  has(key: string, idx: number): boolean {
    return this.files.get(key)?.has(idx) ?? false
  }

  /** Forgets block `idx` if `run` is still the one bringing it (so the next asker fetches it anew). */
  forget(run: Run, idx: number): void {
    const m = this.files.get(run.key)
    if (m?.get(idx) !== run) return
    m.delete(idx)
    if (m.size === 0) this.files.delete(run.key)
  }

  /** Starts a run for blocks [first, end) of a file, on a job's behalf when `signal` is given. */
  start(file: CachedBlocks, first: number, end: number, signal?: AbortSignal): void {
    const run = new Run(file.key, first, end, signal)
    // Each block known as this run's before the body starts: a source may deliver (and serve) at once.
    let m = this.files.get(file.key)
    if (!m) this.files.set(file.key, (m = new Map()))
    for (let i = first; i < end; i++) m.set(i, run)
    const bytes = Math.min(end * file.blockSize, file.size) - first * file.blockSize
    this.bytes += bytes
    fetchMetrics.inflightBytes.set(this.bytes)
    this.store.hold(file)
    run.done = this.body(file, run).finally(() => {
      run.failRest(new SourceError('protocol', `${file.relPath}: blocks ${first}-${end - 1} were neither delivered nor failed (a bug)`))
      this.bytes -= bytes
      fetchMetrics.inflightBytes.set(this.bytes)
      for (let i = first; i < end; i++) this.forget(run, i)
      // Only now, out of the table, can no reader join the run. A reader who got one of its blocks
      // (from the run or from memory) copies it in the same turn of the event loop (fetcher.ts,
      // readInto: nothing but promises between), so their memory is given back in the next turn.
      run.mustFinish()
      const giveBack = run.giveBack
      run.giveBack = undefined
      if (giveBack) setImmediate(giveBack)
      this.store.release(file)
    })
  }

  /** Resolves once no run of the file `key` is in flight: its blocks asked for so far are stored, or failed. */
  settledFile(key: string): Promise<void> {
    return this.settledOf((k) => k === key)
  }

  /** Resolves once no run is in flight: every block asked for so far is stored, or failed. */
  settled(): Promise<void> {
    return this.settledOf(() => true)
  }

  /** Waits, round after round (runs started meanwhile too, bounded), until no run of a file `of` picks is in flight. */
  private async settledOf(of: (key: string) => boolean): Promise<void> {
    for (let round = 0; round < 10_000; round++) {
      const waiting = new Set<Promise<unknown>>()
      for (const [k, m] of this.files) if (of(k)) for (const r of m.values()) waiting.add(r.done)
      if (waiting.size === 0) return
      await Promise.allSettled(waiting)
    }
  }
}
