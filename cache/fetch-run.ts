// The run loop: fetches one run of blocks [first, end) with ranged GETs. Every request has
// deadlines: connect and headers (in the HTTP client) and a minimum rate for the body, checked over a
// window (rate-guard.ts), so a stalled or trickling body counts as a failure. Failures are retried with
// exponential backoff and jitter, or after the server's Retry-After (retry.ts), resuming from the first
// byte not yet received; then the next source is tried. A site cache (a source that serves bytes
// only) is tried once per request: the archive behind it serves the read at once when it fails. A
// small file fetched whole is checked against the archive's Adler-32 before any of it is served, and
// fetched again from the next source when its bytes do not match.
import type { CachedFile } from './cached-file.js'
import { blockAdler32, type Block } from './block.js'
import { rateGuard } from './rate-guard.js'
import { Retrier } from './retry.js'
import { fetchMetrics, type FetchCounters } from './metrics.js'
import type { Deferred } from './runs.js'
import { combinedAdler32 } from './whole-file.js'
import type { FetcherDeps, FetcherOptions } from './fetcher-options.js'
import { SourceError, type Source } from './sources/source.js'
import type { SourceSet } from './sources/source-set.js'
import { log } from '../daemon/log.js'

/** Waits a source may ask for (429, SlowDown) per run, on top of the tries for errors. */
const MAX_THROTTLED_WAITS = 8

/** What the run loop hands back to the fetcher. */
export interface RunHooks {
  /** Hands a block to its waiters (and to later readers, from memory). */
  serve(file: CachedFile, idx: number, block: Block, d: Deferred): void
  /** Stores a block in the cache; resolves once it is stored (or could not be). */
  store(file: CachedFile, idx: number, block: Block, adler: number): Promise<void>
  /** Forgets a block in flight (a called-off run), so the next asker starts a fetch of its own. */
  forget(k: string, promise: Promise<Block>): void
}

export class RunLoop {
  private sources: SourceSet
  private opts: FetcherOptions
  private deps: FetcherDeps
  private count: FetchCounters
  private hooks: RunHooks
  private inflightRequests = 0

  constructor(sources: SourceSet, opts: FetcherOptions, deps: FetcherDeps, count: FetchCounters, hooks: RunHooks) {
    this.sources = sources
    this.opts = opts
    this.deps = deps
    this.count = count
    this.hooks = hooks
  }

  /**
   * Fetches blocks [first, end) with ranged GETs, resuming after failures from the first byte not yet
   * received, trying each source in order. A file fetched whole is checked against the archive's
   * Adler-32 before any of it is served. Resolves once every block was delivered and written (or
   * failed), so the memory budget covers blocks waiting for the disk too.
   */
  async run(file: CachedFile, first: number, end: number, defs: Deferred[], calledOff: AbortSignal): Promise<void> {
    const wholeFile = first === 0 && end === file.blocks
    let held: { idx: number; block: Block; adler: number }[] = []
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
        this.hooks.serve(file, i, b, defs[i - first]!)
        pending.push(this.hooks.store(file, i, b, adler))
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
    outer: for (const [n, source] of candidates.entries()) {
      const next = candidates[n + 1]
      if (n > 0 && lastErr) log.warn('reading from the next source', { failed: candidates[n - 1]!.name, source: source.name, path: file.relPath, error: lastErr.message })
      // A site cache is not worth waiting for: the archive behind it is the retry.
      const tries = new Retrier(source.bytesOnly ? { tries: 1, baseMs: 0, maxMs: 0 } : { tries: this.opts.attemptsPerSource, baseMs: this.opts.backoffMs, maxMs: this.opts.maxBackoffMs, maxThrottledWaits: MAX_THROTTLED_WAITS }, this.deps.clock, this.deps.random)
      // Every request to this source but the first waits first (after a 429 on the first try too).
      for (let asked = false; tries.more && idx < end; asked = true) {
        if (asked) {
          this.count.add('retries')
          // A run called off stops waiting at once (the check below ends it).
          await tries.wait(calledOff)
        }
        if (calledOff.aborted) break outer
        if (this.sources.isDown(source)) continue outer
        const start = idx * file.blockSize + fill
        const stop = Math.min(end * file.blockSize, file.size)
        const what = `${source.name} ${source.locate(file.relPath)} bytes=${start}-${stop - 1}`
        this.count.add('requests', 1, source.name)
        const guard = rateGuard(stop - start, this.opts.minRate, this.opts.rateWindowMs)
        this.inflightRequests++
        fetchMetrics.inflightRequests.set(this.inflightRequests)
        const t0 = performance.now()
        try {
          await source.read(file.relPath, start, stop, {
            signal: AbortSignal.any([guard.signal, calledOff]),
            onData: (chunk) => {
              guard.got(chunk.length)
              this.count.add('bytesFetched', chunk.length, source.name)
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
      if (idx < end) continue
      // Every byte arrived; a file fetched whole is checked before any of it is served, and fetched
      // again from the next source when it does not match (a site cache's copy may be damaged).
      if (held.length && next && combinedAdler32(file, held) !== file.adler32) {
        lastErr = new SourceError('protocol', `${file.relPath}: checksum mismatch from ${source.name} (archive adler32 ${file.adler32}, received ${combinedAdler32(file, held)})`)
        log.error('received data does not match the archive checksum; not served, fetching it again from the next source', { source: source.name, path: file.relPath, expected: file.adler32, next: next.name })
        fetchMetrics.errors.inc({ source: source.name, kind: 'checksum' })
        this.sources.noteFailure(source, lastErr)
        held = []
        idx = first
        parts = []
        fill = 0
        need = file.blockLength(idx)
        continue
      }
      break
    }
    await Promise.all(pending)
    if (idx < end && calledOff.aborted) {
      // Forget these blocks at once, so that whoever asks next starts a fetch of their own.
      const err = new SourceError('cancelled', `${file.relPath}: fetch called off (every sync that wanted it was cancelled)`)
      const undelivered = [...held.map((h) => h.idx), ...Array.from({ length: end - idx }, (_, j) => idx + j)]
      for (const i of undelivered) {
        const k = `${file.key}:${i}`
        this.hooks.forget(k, defs[i - first]!.promise)
        defs[i - first]!.reject(err)
      }
      return
    }
    if (idx < end) {
      this.count.add('failures')
      const err = lastErr ?? new SourceError('network', 'no source could serve the file')
      for (let i = idx; i < end; i++) defs[i - first]!.reject(err)
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    if (held.length) await this.deliverWhole(file, held, first, defs)
    await Promise.all(pending)
  }

  /** Checks a whole small file against the archive checksum, then serves and stores its blocks. */
  private async deliverWhole(file: CachedFile, held: { idx: number; block: Block; adler: number }[], first: number, defs: Deferred[]): Promise<void> {
    held.sort((a, b) => a.idx - b.idx)
    const got = combinedAdler32(file, held)
    if (got !== file.adler32) {
      this.count.add('failures')
      fetchMetrics.errors.inc({ source: 'any', kind: 'checksum' })
      const err = new SourceError('protocol', `${file.relPath}: checksum mismatch (archive adler32 ${file.adler32}, received ${got})`)
      log.error('received data does not match the archive checksum; not served', { path: file.relPath, expected: file.adler32, got })
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    for (const h of held) this.hooks.serve(file, h.idx, h.block, defs[h.idx - first]!)
    await Promise.all(held.map((h) => this.hooks.store(file, h.idx, h.block, h.adler)))
  }
}
