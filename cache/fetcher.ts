// Gets blocks into the cache: one in-flight request per block however many readers want it
// (single-flight, until the block is stored), runs of blocks fetched with one ranged GET, read-ahead
// driven by each handle's sequential pattern, and a memory budget for what is in flight or waiting to
// be written. Every request has deadlines: connect and headers (in the HTTP client) and a minimum
// rate for the body, checked over a window, so a stalled or trickling body counts as a failure.
// Failures are retried with exponential backoff and jitter (or after the server's Retry-After),
// resuming from the first byte not yet received, then the next source is tried. Readers wait with
// their own deadline; a fetch that outlives it still fills the cache for the next reader.
import { LRUCache } from 'lru-cache'
import type { BlockStore, CachedFile } from './block-store.js'
import { adler32Combine, adler32Hex } from './adler32.js'
import { blockAdler32, blockBytes, copyFromBlock, type Block } from './block.js'
import { advance, type ReadPattern } from './read-ahead.js'
import { rateGuard } from './rate-guard.js'
import { systemClock, type Clock } from './clock.js'
import { Retrier } from './retry.js'
import { fetchMetrics } from './metrics.js'
import { SourceError, type Source } from './sources/source.js'
import type { SourceSet } from './sources/source-set.js'
import { log } from '../daemon/log.js'

// fs/ops.ts takes the read pattern from here.
export { newReadPattern, type ReadPattern } from './read-ahead.js'
export type { Block } from './block.js'

/** Buffers for reads served from the cache file: one request owns one until it has copied out. */
const scratch: Buffer[] = []
const SCRATCH_BYTES = 128 << 10

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

const DEFAULT_FETCHER_OPTIONS: FetcherOptions = {
  attemptsPerSource: 4,
  backoffMs: 200,
  maxBackoffMs: 10_000,
  smallFileBytes: 4 << 20,
  maxWindowBytes: 64 << 20,
  runBytes: 8 << 20,
  memoryBudget: 128 << 20,
  recentBytes: 32 << 20,
  minRate: 64 << 10,
  rateWindowMs: 10_000,
  readerDeadlineMs: 0,
  failFastMs: 3000,
}

/** A reader gives up this long before its deadline, so the failure is on record when EIO is sent. */
const READER_MARGIN_MS = 200

/** Waits a source may ask for (429, SlowDown) per run, on top of the tries for errors. */
const MAX_THROTTLED_WAITS = 8

/** Failed blocks remembered at most (expired ones are dropped first). */
const MAX_FAILED = 10_000

interface Deferred {
  promise: Promise<Block>
  resolve: (b: Block) => void
  reject: (e: Error) => void
}

function deferred(): Deferred {
  let resolve!: (b: Block) => void
  let reject!: (e: Error) => void
  const promise = new Promise<Block>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => undefined) // a block nobody waits for must not become an unhandled rejection
  return { promise, resolve, reject }
}

/** Runs of blocks a whole-file fetch keeps in flight for one file. */
const WHOLE_FILE_RUNS = 4


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

export class Fetcher {
  private sources: SourceSet
  private store: BlockStore
  private opts: FetcherOptions
  private deps: FetcherDeps
  private inflight = new Map<string, Promise<Block>>()
  /** For each block being fetched, its run. */
  private runs = new Map<string, Run>()
  private inflightBytes = 0
  private inflightRequests = 0
  private recent: LRUCache<string, Block>
  /**
   * The store refused the last block offered to it (cache full of pinned or open files, disk full):
   * fetched blocks then live only in `recent`, so read-ahead must not run further than that holds.
   * Cleared by the next block stored.
   */
  private storeRefusing = false
  /**
   * Blocks a reader could not get (the fetch failed, or the reader's deadline passed first), with the
   * error and until when it is repeated at once. A failed read is asked again at once (the kernel
   * retries a page its read-ahead could not read; tools retry): each would otherwise wait out the
   * whole deadline again on the same stalled fetch.
   */
  private failed = new Map<string, { err: Error; until: number }>()
  readonly stats: FetchStats = { requests: 0, bytesFetched: 0, retries: 0, failures: 0, memoryHits: 0, diskHits: 0, networkReads: 0 }

  constructor(sources: SourceSet, store: BlockStore, opts: Partial<FetcherOptions> = {}, deps: Partial<FetcherDeps> = {}) {
    this.sources = sources
    this.store = store
    this.opts = { ...DEFAULT_FETCHER_OPTIONS, ...opts }
    this.deps = { clock: systemClock, random: Math.random, ...deps }
    this.recent = new LRUCache<string, Block>({ maxSize: this.opts.recentBytes, sizeCalculation: (b) => Math.max(1, blockBytes(b)) })
    store.onEvict = (key) => {
      for (const k of [...this.recent.keys()]) if (k.startsWith(key + ':')) this.recent.delete(k)
    }
  }

  /**
   * Reads [pos, pos+len) of a file into `dest` (the kernel's buffer for the request), copying only
   * while `open()` says the request is still waiting for its answer: once its deadline has answered,
   * the kernel's buffer is gone. Resolves with the bytes copied (fewer at the end of the file).
   */
  async readInto(file: CachedFile, pos: number, len: number, dest: Buffer, open: () => boolean, pattern?: ReadPattern): Promise<number> {
    if (pos >= file.size || len <= 0) return 0
    len = Math.min(len, file.size - pos, dest.length)
    const bs = file.blockSize
    const first = Math.floor(pos / bs)
    const last = Math.floor((pos + len - 1) / bs)
    if (file.size <= this.opts.smallFileBytes) this.fetchMissing(file, 0, file.blocks)
    else if (pattern) this.readAhead(file, pos, len, pattern)
    fetchMetrics.bytesServed.inc(undefined, len)

    // Fastest: blocks fetched lately, copied out now (no thread-pool round trip).
    let inMemory = true
    for (let i = first; i <= last && inMemory; i++) inMemory = this.recent.has(`${file.key}:${i}`)
    if (inMemory) {
      this.stats.memoryHits++
      fetchMetrics.hits.inc({ tier: 'memory' })
      let at = 0
      for (let i = first; i <= last; i++) at += copyFromBlock(this.recent.get(`${file.key}:${i}`)!, i === first ? pos - i * bs : 0, i === last ? pos + len - i * bs : bs, dest, at)
      return at
    }
    // Fast path: every block on disk and checked already: read into a buffer of our own, then copy.
    let onDisk = true
    for (let i = first; i <= last && onDisk; i++) onDisk = file.has(i) && file.verified.has(i)
    if (onDisk) {
      const buf = (len <= SCRATCH_BYTES && scratch.pop()) || Buffer.allocUnsafe(Math.max(len, SCRATCH_BYTES))
      try {
        if (await file.readInto(buf, pos, len)) {
          this.stats.diskHits++
          fetchMetrics.hits.inc({ tier: 'disk' })
          return open() ? buf.copy(dest, 0, 0, len) : 0
        }
      } finally {
        if (buf.length === SCRATCH_BYTES && scratch.length < 32) scratch.push(buf)
      }
    }
    const giveUpAt = this.opts.readerDeadlineMs > 0 ? performance.now() + this.opts.readerDeadlineMs - READER_MARGIN_MS : Infinity
    let at = 0
    for (let i = first; i <= last; i++) {
      const blk = await this.blockForReader(file, i, last, giveUpAt)
      if (!open()) return 0
      at += copyFromBlock(blk, i === first ? pos - i * bs : 0, i === last ? pos + len - i * bs : bs, dest, at)
    }
    return at
  }

  /**
   * Block `i` for a reader that also wants the blocks up to `last`: fails at once when the block
   * failed a moment ago; otherwise waits until `giveUpAt` at most, and records a failure (or the
   * deadline passing) for the next readers.
   */
  private async blockForReader(file: CachedFile, i: number, last: number, giveUpAt: number): Promise<Block> {
    const k = `${file.key}:${i}`
    const known = this.failed.get(k)
    if (known && known.until > performance.now() && !this.recent.has(k) && !file.has(i)) throw known.err
    let timer: NodeJS.Timeout | undefined
    const wait = giveUpAt === Infinity ? undefined : new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SourceError('timeout', `${file.relPath}: block ${i} did not arrive within the read deadline (${this.opts.readerDeadlineMs / 1000}s); reads of it fail at once for ${this.opts.failFastMs / 1000}s`)), Math.max(0, giveUpAt - performance.now()))
    })
    try {
      return await (wait ? Promise.race([this.block(file, i), wait]) : this.block(file, i))
    } catch (err) {
      // Only failures that took their time (retries, backoff, a deadline) are worth repeating at
      // once: a 401 or a 404 is answered quickly anyway, and a replaced token must work at once.
      // The rest of the read comes with the same fetch (or after it): it fails the same way.
      if (err instanceof SourceError && err.retryable) this.noteFailed(file, i, last, err)
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  /** Remembers that blocks [from, to] failed a reader, for failFastMs. */
  private noteFailed(file: CachedFile, from: number, to: number, err: Error): void {
    const now = performance.now()
    if (this.failed.size >= MAX_FAILED) {
      for (const [k, f] of this.failed) if (f.until <= now) this.failed.delete(k)
      if (this.failed.size >= MAX_FAILED) this.failed.clear()
    }
    for (let i = from; i <= to; i++) this.failed.set(`${file.key}:${i}`, { err, until: now + this.opts.failFastMs })
  }

  /** One whole block: from memory, from disk (checked), or fetched (single-flight). */
  async block(file: CachedFile, idx: number): Promise<Block> {
    const k = `${file.key}:${idx}`
    const mem = this.recent.get(k)
    if (mem) {
      this.stats.memoryHits++
      fetchMetrics.hits.inc({ tier: 'memory' })
      return mem
    }
    if (file.has(idx)) {
      const buf = Buffer.allocUnsafe(file.blockLength(idx))
      if (await file.readInto(buf, idx * file.blockSize, buf.length)) {
        this.stats.diskHits++
        fetchMetrics.hits.inc({ tier: 'disk' })
        return [buf]
      }
    }
    let p = this.inflight.get(k)
    if (p) {
      fetchMetrics.hits.inc({ tier: 'memory' })
      this.join(k, undefined)
    } else {
      this.stats.networkReads++
      fetchMetrics.hits.inc({ tier: 'network' })
      this.fetchMissing(file, idx, idx + 1, true)
      p = this.inflight.get(k)!
    }
    try {
      return await p
    } catch (err) {
      // Called off just before this reader joined: fetch it again, for the reader this time.
      if ((err as SourceError).kind === 'cancelled') return this.block(file, idx)
      throw err
    }
  }

  /** Updates the handle's read pattern (read-ahead.ts says how) and starts the read-ahead it asks for. */
  private readAhead(file: CachedFile, pos: number, len: number, pattern: ReadPattern): void {
    // While blocks cannot be stored, what is read ahead waits in memory among the recent blocks of
    // every reader, least recently used first out: a window beyond a quarter of that memory fetches
    // blocks that are dropped before the reader gets to them, and then fetched again.
    const maxBytes = this.storeRefusing ? Math.min(this.opts.maxWindowBytes, this.opts.recentBytes / 4) : this.opts.maxWindowBytes
    const ahead = advance(pattern, pos, len, file.blockSize, Math.max(1, Math.floor(maxBytes / file.blockSize)))
    if (!ahead) return
    const runBlocks = Math.max(1, Math.floor(this.opts.runBytes / file.blockSize))
    this.fetchMissing(file, ahead.from, Math.min(file.blocks, ahead.to), false, Math.min(runBlocks, pattern.window))
  }

  /**
   * Starts fetches for the blocks in [from, to) that are neither cached nor in flight. Read-ahead
   * leaves a gap shorter than `minRun` blocks at the window's edge for a later call, so that requests
   * stay large (a GET per block would cost a round trip, and dCache a redirect, per MiB).
   */
  private fetchMissing(file: CachedFile, from: number, to: number, demand = false, minRun = 1, signal?: AbortSignal): void {
    const runBlocks = Math.max(1, Math.floor(this.opts.runBytes / file.blockSize))
    let runStart = -1
    let stop = false
    const flush = (end: number) => {
      if (runStart < 0) return
      for (let s = runStart; s < end && !stop; s += runBlocks) {
        const e = Math.min(end, s + runBlocks)
        if (e - s < minRun && e === to && to < file.blocks) break
        const bytes = Math.min(e * file.blockSize, file.size) - s * file.blockSize
        // Read-ahead waits for room in the memory budget; a reader's own block never does.
        if (!demand && this.inflightBytes + bytes > this.opts.memoryBudget) {
          stop = true
          break
        }
        this.startRun(file, s, e, signal)
      }
      runStart = -1
    }
    for (let i = from; i < to && !stop; i++) {
      const busy = file.has(i) || this.inflight.has(`${file.key}:${i}`) || this.recent.has(`${file.key}:${i}`)
      if (busy) flush(i)
      else if (runStart < 0) runStart = i
    }
    flush(to)
  }

  /** Adds a party to the run fetching block `k`: a job's signal, or undefined for a reader (then it cannot be called off). */
  private join(k: string, signal: AbortSignal | undefined): void {
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

  private startRun(file: CachedFile, first: number, end: number, signal?: AbortSignal): void {
    const run: Run = {
      done: Promise.resolve(),
      signals: signal ? [signal] : undefined,
      stop: new AbortController(),
      check: () => { if (run.signals?.every((s) => s.aborted)) run.stop.abort() },
    }
    if (signal?.aborted) run.stop.abort()
    else signal?.addEventListener('abort', run.check, { once: true })
    const defs: Deferred[] = []
    for (let i = first; i < end; i++) {
      const d = deferred()
      defs.push(d)
      this.inflight.set(`${file.key}:${i}`, d.promise)
    }
    const bytes = Math.min(end * file.blockSize, file.size) - first * file.blockSize
    this.inflightBytes += bytes
    fetchMetrics.inflightBytes.set(this.inflightBytes)
    this.store.hold(file)
    run.done = this.runFetch(file, first, end, defs, run.stop.signal).finally(() => {
      this.inflightBytes -= bytes
      fetchMetrics.inflightBytes.set(this.inflightBytes)
      for (let i = first; i < end; i++) {
        const k = `${file.key}:${i}`
        if (this.inflight.get(k) === defs[i - first]!.promise) this.inflight.delete(k)
        if (this.runs.get(k) === run) this.runs.delete(k)
      }
      this.mustFinish(run)
      this.store.release(file)
    })
    for (let i = first; i < end; i++) this.runs.set(`${file.key}:${i}`, run)
  }

  /**
   * Fetches blocks [first, end) with ranged GETs, resuming after failures from the first byte not yet
   * received, trying each source in order. A file fetched whole is checked against the archive's
   * Adler-32 before any of it is served. Resolves once every block was delivered and written (or
   * failed), so the memory budget covers blocks waiting for the disk too.
   */
  private async runFetch(file: CachedFile, first: number, end: number, defs: Deferred[], calledOff: AbortSignal): Promise<void> {
    const wholeFile = first === 0 && end === file.blocks
    const held: { idx: number; block: Block; adler: number }[] = []
    let idx = first
    let parts: Block = []
    let need = file.blockLength(idx)
    let fill = 0
    const pending: Promise<unknown>[] = []
    const completeBlock = (i: number, b: Block) => {
      // A block of a file fetched whole waits for the whole-file check; any other is served at once.
      const adler = blockAdler32(b)
      if (wholeFile && file.adler32) held.push({ idx: i, block: b, adler })
      else {
        this.serve(file, i, b, defs[i - first]!)
        pending.push(this.storeBlock(file, i, b, adler))
      }
    }
    let lastErr: SourceError | undefined
    let candidates: Source[]
    try {
      candidates = this.sources.candidates()
    } catch (err) {
      candidates = []
      lastErr = err as SourceError
    }
    outer: for (const source of candidates) {
      const tries = new Retrier({ tries: this.opts.attemptsPerSource, baseMs: this.opts.backoffMs, maxMs: this.opts.maxBackoffMs, maxThrottledWaits: MAX_THROTTLED_WAITS }, this.deps.clock, this.deps.random)
      // Every request to this source but the first waits first (after a 429 on the first try too).
      for (let asked = false; tries.more && idx < end; asked = true) {
        if (asked) {
          this.stats.retries++
          fetchMetrics.retries.inc()
          // A run called off stops waiting at once (the check below ends it).
          await tries.wait(calledOff)
        }
        if (calledOff.aborted) break outer
        if (this.sources.isDown(source)) continue outer
        const start = idx * file.blockSize + fill
        const stop = Math.min(end * file.blockSize, file.size)
        const what = `${source.name} ${source.locate(file.relPath)} bytes=${start}-${stop - 1}`
        this.stats.requests++
        fetchMetrics.requests.inc({ source: source.name })
        const guard = rateGuard(stop - start, this.opts.minRate, this.opts.rateWindowMs)
        this.inflightRequests++
        fetchMetrics.inflightRequests.set(this.inflightRequests)
        const t0 = performance.now()
        try {
          await source.read(file.relPath, start, stop, {
            signal: AbortSignal.any([guard.signal, calledOff]),
            onData: (chunk) => {
              guard.got(chunk.length)
              this.stats.bytesFetched += chunk.length
              fetchMetrics.bytesFetched.inc({ source: source.name }, chunk.length)
              let off = 0
              while (off < chunk.length) {
                const n = Math.min(chunk.length - off, need - fill)
                parts.push(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n))
                fill += n
                off += n
                if (fill === need) {
                  completeBlock(idx, parts)
                  idx++
                  parts = []
                  fill = 0
                  if (idx < end) need = file.blockLength(idx)
                }
              }
            },
          })
          lastErr = undefined
          this.sources.noteSuccess(source)
        } catch (err) {
          lastErr = err instanceof SourceError ? err : new SourceError('protocol', (err as Error).message)
          if (guard.reason) lastErr = new SourceError('timeout', `${what}: ${guard.reason}`)
          if (calledOff.aborted) {
            lastErr = new SourceError('cancelled', `${file.relPath}: fetch called off (every sync that wanted it was cancelled)`)
            break outer
          }
          fetchMetrics.errors.inc({ source: source.name, kind: lastErr.kind })
          this.sources.noteFailure(source, lastErr)
          log.warn('fetch failed', { source: source.name, path: file.relPath, bytes: `${start}-${stop - 1}`, attempt: tries.attempt, error: lastErr.message })
          if (!lastErr.retryable) continue outer
        } finally {
          guard.done()
          this.inflightRequests--
          fetchMetrics.inflightRequests.set(this.inflightRequests)
          fetchMetrics.latency.observe((performance.now() - t0) / 1000, { source: source.name })
        }
        // The try did not bring every byte (an error, or a body that ended early): it is used up,
        // unless the server asked us to slow down (429, SlowDown): it is up and answering, so
        // waiting as it asks does not use up a try, up to a bound. A reader's deadline still bounds
        // its own wait.
        if (idx < end) tries.failed({ throttled: lastErr?.kind === 'throttled', retryAfterMs: lastErr?.retryAfterMs })
      }
      if (idx >= end) break
    }
    await Promise.all(pending)
    if (idx < end && calledOff.aborted) {
      // Forget these blocks at once, so that whoever asks next starts a fetch of their own.
      const err = new SourceError('cancelled', `${file.relPath}: fetch called off (every sync that wanted it was cancelled)`)
      const undelivered = [...held.map((h) => h.idx), ...Array.from({ length: end - idx }, (_, j) => idx + j)]
      for (const i of undelivered) {
        const k = `${file.key}:${i}`
        if (this.inflight.get(k) === defs[i - first]!.promise) this.inflight.delete(k)
        defs[i - first]!.reject(err)
      }
      return
    }
    if (idx < end) {
      this.stats.failures++
      fetchMetrics.failures.inc()
      const err = lastErr ?? new SourceError('network', 'no source could serve the file')
      for (let i = idx; i < end; i++) defs[i - first]!.reject(err)
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    if (held.length) await this.deliverWhole(file, held, first, defs)
    await Promise.all(pending)
  }

  /**
   * Makes a whole file present in the cache (sync, get): fetches the blocks not cached yet in runs, a
   * few runs at a time, waits until every block is stored, and checks the file against the archive's
   * Adler-32. Blocks already cached are not fetched again, so an interrupted sync resumes where it
   * stopped. Resolves with the bytes that had to be transferred; rejects when a block cannot be
   * fetched or stored, or on abort.
   */
  async fetchWhole(file: CachedFile, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<number> {
    const runBlocks = Math.max(1, Math.floor(this.opts.runBytes / file.blockSize))
    const step = runBlocks * WHOLE_FILE_RUNS
    let transferred = 0
    this.store.hold(file)
    try {
      for (let from = 0; from < file.blocks; from += step) {
        if (signal?.aborted) throw new SourceError('cancelled', `${file.relPath}: cancelled`)
        const to = Math.min(file.blocks, from + step)
        const missing: number[] = []
        for (let i = from; i < to; i++) if (!file.has(i)) missing.push(i)
        if (missing.length === 0) continue
        this.fetchMissing(file, from, to, true, 1, signal)
        // Wait for the blocks (errors surface here), then for their runs, which end once stored.
        await Promise.all(missing.map(async (i) => {
          await this.blockForJob(file, i, signal)
          transferred += file.blockLength(i)
          onBytes?.(file.blockLength(i))
        }))
        await Promise.all(new Set(missing.map((i) => this.runs.get(`${file.key}:${i}`)?.done).filter((p) => p !== undefined)))
      }
    } finally {
      this.store.release(file)
    }
    if (!file.complete) throw new SourceError('local', `${file.relPath}: could not be stored in the cache (cache full of pinned or open files, or the disk is full)`)
    if (file.adler32 && !file.checkWhole()) throw new SourceError('protocol', `${file.relPath}: does not match the archive's adler32 ${file.adler32}; dropped, try again`)
    return transferred
  }

  /** Resolves once no run is in flight: every block asked for so far is stored, or failed. */
  async settled(): Promise<void> {
    for (let round = 0; round < 10_000 && this.runs.size > 0; round++) await Promise.allSettled(new Set([...this.runs.values()].map((r) => r.done)))
  }

  /**
   * Waits for a block a job wants. If the run bringing it was called off (its other jobs were
   * cancelled) before this job joined it, the block is asked for again, now on this job's behalf.
   */
  private async blockForJob(file: CachedFile, i: number, signal: AbortSignal | undefined): Promise<void> {
    const k = `${file.key}:${i}`
    for (let attempt = 1; ; attempt++) {
      if (!this.inflight.has(k)) this.fetchMissing(file, i, i + 1, true, 1, signal)
      const p = this.inflight.get(k)
      if (!p) {
        await this.block(file, i) // cached meanwhile
        return
      }
      this.join(k, signal)
      try {
        await p
        return
      } catch (err) {
        if ((err as SourceError).kind !== 'cancelled' || signal?.aborted || attempt >= 3) throw err
      }
    }
  }

  /** Checks a whole small file against the archive checksum, then serves and stores its blocks. */
  private async deliverWhole(file: CachedFile, held: { idx: number; block: Block; adler: number }[], first: number, defs: Deferred[]): Promise<void> {
    held.sort((a, b) => a.idx - b.idx)
    let combined = held[0]!.adler
    for (let i = 1; i < held.length; i++) combined = adler32Combine(combined, held[i]!.adler, file.blockLength(held[i]!.idx))
    const got = adler32Hex(combined)
    if (got !== file.adler32) {
      this.stats.failures++
      fetchMetrics.failures.inc()
      fetchMetrics.errors.inc({ source: 'any', kind: 'checksum' })
      const err = new SourceError('protocol', `${file.relPath}: checksum mismatch (archive adler32 ${file.adler32}, received ${got})`)
      log.error('received data does not match the archive checksum; not served', { path: file.relPath, expected: file.adler32, got })
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    for (const h of held) this.serve(file, h.idx, h.block, defs[h.idx - first]!)
    await Promise.all(held.map((h) => this.storeBlock(file, h.idx, h.block, h.adler)))
  }

  /** Hands a block to its waiters (and to later readers, from memory). */
  private serve(file: CachedFile, idx: number, block: Block, d: Deferred): void {
    this.failed.delete(`${file.key}:${idx}`)
    this.recent.set(`${file.key}:${idx}`, block)
    d.resolve(block)
  }

  /** Stores a block in the cache; resolves once it is stored (or could not be). */
  private async storeBlock(file: CachedFile, idx: number, block: Block, adler: number): Promise<void> {
    try {
      this.storeRefusing = !(await file.writeBlock(idx, block, adler))
    } catch (err) {
      log.error('storing a block failed', { path: file.relPath, block: idx, error: (err as Error).message })
    }
  }
}
