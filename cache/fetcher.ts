// Gets blocks to readers and into the cache: from the recent blocks in memory, from the cache file,
// or fetched, with one request per block however many want it (runs.ts) and runs of blocks fetched
// with one ranged GET (fetch-run.ts) through one Source standing for them all (fetch-source.ts; in
// the daemon the read policies setup.ts composes: retries, the stall guard, the next source). Read-ahead follows each handle's sequential pattern (read-ahead.ts)
// within a memory budget for what is in flight or waiting to be written. Readers wait with their own deadline; a fetch that outlives it still fills the cache for
// the next reader. Sync and get make whole files present (whole-file.ts).
import { LRUCache } from 'lru-cache'
import type { BlockCache, CachedBlocks } from './block-cache.js'
import { blockBytes, copyFromBlock, type Block } from './block.js'
import { advance, type ReadPattern } from './read-ahead.js'
import { fetchMetrics, type FetchCounters } from './metrics.js'
import { Runs, type Run } from './runs.js'
import { RunLoop } from './fetch-run.js'
import { fetchWholeFile, type WholeFileDeps } from './whole-file.js'
import { DEFAULT_FETCHER_OPTIONS, type FetcherOptions, type FetchStats } from './fetcher-options.js'
import type { FetchSource } from './fetch-source.js'
import { SourceError } from './sources/source.js'
import { log } from '../daemon/log.js'

// fs/ops.ts takes the read pattern from here; tests and the daemon the options.
export { newReadPattern, type ReadPattern } from './read-ahead.js'
export type { Block } from './block.js'
export type { FetcherOptions, FetchStats } from './fetcher-options.js'
export type { FetchSource } from './fetch-source.js'

/** Buffers for reads served from the cache file: one request owns one until it has copied out. */
const scratch: Buffer[] = []
const SCRATCH_BYTES = 128 << 10

/** A reader gives up this long before its deadline, so the failure is on record when EIO is sent. */
const READER_MARGIN_MS = 200

/** Failed blocks remembered at most (expired ones are dropped first). */
const MAX_FAILED = 10_000

export class Fetcher {
  private opts: FetcherOptions
  private runs: Runs
  private wholeFileDeps: WholeFileDeps
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
  private count: FetchCounters
  readonly stats: FetchStats
  /** Bytes received per source name (site vs archive), for status. */
  readonly bytesBySource: Readonly<Record<string, number>>

  /** `source`: every source as one, with its tries, stall guard and failover (setup.ts builds it). */
  constructor(
    private source: FetchSource,
    store: BlockCache,
    opts: Partial<FetcherOptions> = {},
  ) {
    this.opts = { ...DEFAULT_FETCHER_OPTIONS, ...opts }
    this.count = source.count
    this.stats = this.count.values
    this.bytesBySource = this.count.bySource
    const loop = new RunLoop(this.source, this.count, {
      serve: (file, idx, block, run) => this.serve(file, idx, block, run),
      store: (file, first, blocks, adlers, forLater) => this.storeBlocks(file, first, blocks, adlers, forLater),
      forget: (run, idx) => this.runs.forget(run, idx),
      unserve: (file, idx, block) => {
        const k = `${file.key}:${idx}`
        if (this.recent.peek(k) === block) this.recent.delete(k)
      },
    })
    this.runs = new Runs(store, (file, run) => loop.run(file, run))
    this.wholeFileDeps = {
      runs: this.runs,
      store,
      runBytes: this.opts.runBytes,
      fetch: (file, from, to, signal) => void this.fetchMissing(file, from, to, true, 1, signal),
      block: (file, idx) => this.block(file, idx),
    }
    this.recent = new LRUCache<string, Block>({ maxSize: this.opts.recentBytes, sizeCalculation: (b) => Math.max(1, blockBytes(b)) })
    store.onEvict((key) => this.forgetRecent(key))
  }

  /**
   * Reads [pos, pos+len) of a file into `dest` (the kernel's buffer for the request), copying only
   * while `open()` says the request is still waiting for its answer: once its deadline has answered,
   * the kernel's buffer is gone. Resolves with the bytes copied (fewer at the end of the file).
   */
  async readInto(file: CachedBlocks, pos: number, len: number, dest: Buffer, open: () => boolean, pattern?: ReadPattern): Promise<number> {
    if (pos >= file.size || len <= 0) return 0
    len = Math.min(len, file.size - pos, dest.length)
    const bs = file.blockSize
    const first = Math.floor(pos / bs)
    const last = Math.floor((pos + len - 1) / bs)
    if (file.size <= this.opts.smallFileBytes) void this.fetchMissing(file, 0, file.blocks)
    fetchMetrics.bytesAsked.inc(len)

    // Fastest: blocks fetched lately, copied out now (no thread-pool round trip).
    let inMemory = true
    for (let i = first; i <= last && inMemory; i++) inMemory = this.recent.has(`${file.key}:${i}`)
    if (inMemory) {
      this.count.add('memoryHits')
      let at = 0
      for (let i = first; i <= last; i++)
        at += copyFromBlock(
          this.recent.get(`${file.key}:${i}`)!,
          i === first ? pos - i * bs : 0,
          i === last ? pos + len - i * bs : bs,
          dest,
          at,
        )
      // Only after the copy: blocks read ahead may push these out of memory.
      if (pattern) this.readAhead(file, pos, len, pattern)
      return at
    }
    // Fast path: every block on disk and checked already: read into a buffer of our own, then copy.
    let onDisk = true
    for (let i = first; i <= last && onDisk; i++) onDisk = file.has(i) && file.isVerified(i)
    if (onDisk) {
      if (pattern) this.readAhead(file, pos, len, pattern)
      const buf = (len <= SCRATCH_BYTES && scratch.pop()) || Buffer.allocUnsafe(Math.max(len, SCRATCH_BYTES))
      try {
        if (await file.readInto(buf, pos, len)) {
          this.count.add('diskHits')
          return open() ? buf.copy(dest, 0, 0, len) : 0
        }
      } finally {
        if (buf.length === SCRATCH_BYTES && scratch.length < 32) scratch.push(buf)
      }
    }
    const giveUpAt = this.opts.readerDeadlineMs > 0 ? performance.now() + this.opts.readerDeadlineMs - READER_MARGIN_MS : Infinity
    // The read's missing blocks in one ranged GET (a 128 KiB read spans several 32 KiB blocks:
    // asking for them one by one would cost a round trip each), and only then its read-ahead, whose
    // runs would otherwise take the connections and the bandwidth first while the reader waits.
    const ownRun = !this.failsFast(file, first, last) && this.fetchMissing(file, first, last + 1, true)
    if (ownRun) this.count.add('networkReads')
    if (pattern && !onDisk) this.readAhead(file, pos, len, pattern) // (on disk: done above)
    let at = 0
    for (let i = first; i <= last; i++) {
      const blk = await this.blockForReader(file, i, last, giveUpAt, ownRun)
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
  private async blockForReader(file: CachedBlocks, i: number, last: number, giveUpAt: number, ownRun: boolean): Promise<Block> {
    const known = this.failsFast(file, i, i)
    if (known) throw known
    let timer: NodeJS.Timeout | undefined
    const wait =
      giveUpAt === Infinity
        ? undefined
        : new Promise<never>((_, reject) => {
            timer = setTimeout(
              () =>
                reject(
                  new SourceError(
                    'timeout',
                    `${file.relPath}: block ${i} did not arrive within the read deadline (${this.opts.readerDeadlineMs / 1000}s); reads of it fail at once for ${this.opts.failFastMs / 1000}s`,
                  ),
                ),
              Math.max(0, giveUpAt - performance.now()),
            )
          })
    try {
      return await (wait ? Promise.race([this.block(file, i, ownRun), wait]) : this.block(file, i, ownRun))
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

  /** The error a block of [from, to] failed a reader with a moment ago (then it fails at once), if any. */
  private failsFast(file: CachedBlocks, from: number, to: number): Error | undefined {
    if (this.failed.size === 0) return undefined
    const now = performance.now()
    for (let i = from; i <= to; i++) {
      const k = `${file.key}:${i}`
      const known = this.failed.get(k)
      if (known && known.until > now && !this.recent.has(k) && !file.has(i)) return known.err
    }
    return undefined
  }

  /** Remembers that blocks [from, to] failed a reader, for failFastMs. */
  private noteFailed(file: CachedBlocks, from: number, to: number, err: Error): void {
    const now = performance.now()
    if (this.failed.size >= MAX_FAILED) {
      for (const [k, f] of this.failed) if (f.until <= now) this.failed.delete(k)
      if (this.failed.size >= MAX_FAILED) this.failed.clear()
    }
    for (let i = from; i <= to; i++) this.failed.set(`${file.key}:${i}`, { err, until: now + this.opts.failFastMs })
  }

  /**
   * One whole block: from memory, from disk (checked), or fetched (single-flight). `ownRun`: the
   * caller started the run bringing it (not a hit on someone else's fetch).
   */
  async block(file: CachedBlocks, idx: number, ownRun = false): Promise<Block> {
    const k = `${file.key}:${idx}`
    const mem = this.recent.get(k)
    if (mem) {
      this.count.add('memoryHits')
      return mem
    }
    if (file.has(idx)) {
      const buf = Buffer.allocUnsafe(file.blockLength(idx))
      if (await file.readInto(buf, idx * file.blockSize, buf.length)) {
        this.count.add('diskHits')
        return [buf]
      }
    }
    let run = this.runs.run(file.key, idx)
    if (run) {
      if (!ownRun) fetchMetrics.hits.inc({ tier: 'memory' })
      run.join(undefined)
    } else {
      this.count.add('networkReads')
      void this.fetchMissing(file, idx, idx + 1, true)
      run = this.runs.run(file.key, idx)!
    }
    const p = run.block(idx)
    try {
      return await p
    } catch (err) {
      // Called off just before this reader joined: fetch it again, for the reader this time.
      if ((err as SourceError).kind === 'cancelled') return this.block(file, idx)
      throw err
    }
  }

  /** Read-ahead's step and largest window, bytes: what the plane's news of reads it served is cut to (fs/mount.ts). */
  get readAheadShape(): { stepBytes: number; windowBytes: number } {
    return { stepBytes: this.opts.readAheadStepBytes, windowBytes: this.opts.maxWindowBytes }
  }

  /**
   * Updates the handle's read pattern (read-ahead.ts says how) and starts the read-ahead it asks for:
   * for each read that comes here, and for reads the plane served from the cache itself (it tells of
   * them once per read-ahead step while a block is missing within the largest window after them).
   */
  readAhead(file: CachedBlocks, pos: number, len: number, pattern: ReadPattern): void {
    if (file.size <= this.opts.smallFileBytes) return // fetched whole on its first read
    // While blocks cannot be stored, what is read ahead waits in memory among the recent blocks of
    // every reader, least recently used first out: a window beyond a quarter of that memory fetches
    // blocks that are dropped before the reader gets to them, and then fetched again.
    const maxWindowBytes = this.storeRefusing ? Math.min(this.opts.maxWindowBytes, this.opts.recentBytes / 4) : this.opts.maxWindowBytes
    const ahead = advance(pattern, pos, len, {
      stepBytes: this.opts.readAheadStepBytes,
      afterBytes: this.opts.readAheadAfterBytes,
      maxWindowBytes,
    })
    if (!ahead) return
    const bs = file.blockSize
    // The block holding the read's last byte is the reader's own; read-ahead starts after it.
    const from = Math.ceil(ahead.from / bs)
    const runBlocks = Math.max(1, Math.floor(this.opts.runBytes / bs))
    // A gap at the window's edge waits until it is half a window (or a whole run): the window is
    // looked at again only once the reader enters the next step, so a gap left whenever it is
    // shorter than the whole window would leave the reader to fetch block by block meanwhile.
    this.fetchMissing(
      file,
      from,
      Math.min(file.blocks, Math.ceil(ahead.to / bs)),
      false,
      Math.min(runBlocks, Math.ceil(pattern.windowBytes / 2 / bs)),
    )
  }

  /**
   * Starts fetches for the blocks in [from, to) that are neither cached nor in flight. Read-ahead
   * leaves a gap shorter than `minRun` blocks at the window's edge for a later call, so that requests
   * stay large (a GET per block would cost a round trip, and dCache a redirect, per MiB).
   */
  private fetchMissing(file: CachedBlocks, from: number, to: number, demand = false, minRun = 1, signal?: AbortSignal): boolean {
    const runBlocks = Math.max(1, Math.floor(this.opts.runBytes / file.blockSize))
    let runStart = -1
    let stop = false
    let started = false
    const flush = (end: number) => {
      if (runStart < 0) return
      for (let s = runStart; s < end && !stop; s += runBlocks) {
        const e = Math.min(end, s + runBlocks)
        if (e - s < minRun && e === to && to < file.blocks) break
        const bytes = Math.min(e * file.blockSize, file.size) - s * file.blockSize
        // Read-ahead waits for room in the memory budget; a reader's own block never does.
        if (!demand && this.runs.bytes + bytes > this.opts.memoryBudget) {
          stop = true
          break
        }
        this.runs.start(file, s, e, signal)
        started = true
      }
      runStart = -1
    }
    for (let i = from; i < to && !stop; i++) {
      const busy = file.has(i) || this.runs.has(file.key, i) || this.recent.has(`${file.key}:${i}`)
      if (busy) flush(i)
      else if (runStart < 0) runStart = i
    }
    flush(to)
    return started
  }

  /**
   * Makes a whole file present in the cache (sync, get; whole-file.ts says how). Resolves with the
   * bytes that had to be transferred; rejects when a block cannot be fetched or stored, or on abort.
   */
  async fetchWhole(file: CachedBlocks, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<number> {
    const hadSite = !this.source.distrusting(file.relPath)
    let transferred = 0
    const counted = (n: number) => {
      transferred += n
      onBytes?.(n)
    }
    try {
      return await fetchWholeFile(this.wholeFileDeps, file, signal, counted)
    } catch (err) {
      // The file failed the archive's checksum with bytes from a site cache (and was dropped): once
      // more without it, rather than give up on a copy the archive has right.
      if (!hadSite || !this.source.distrusting(file.relPath) || signal?.aborted) throw err
      return transferred + (await fetchWholeFile(this.wholeFileDeps, file, signal, onBytes))
    }
  }

  /** Resolves once the blocks of the file `key` fetched so far are stored (or failed): what a reader got is on disk. */
  settledFile(key: string): Promise<void> {
    return this.runs.settledFile(key)
  }

  /** Resolves once no run is in flight: every block asked for so far is stored, or failed. */
  settled(): Promise<void> {
    return this.runs.settled()
  }

  /**
   * Hands a block to its waiters (and to later readers, from memory). A block only sync jobs want
   * skips the memory: a reader who comes while it is being stored joins its run, and one who comes
   * later reads it from disk; keeping it would cost a sync a map entry and an eviction per block and
   * push out what readers fetched. It goes to memory only if it cannot be stored (storeBlocks).
   */
  private serve(file: CachedBlocks, idx: number, block: Block, run: Run): void {
    if (this.failed.size) this.failed.delete(`${file.key}:${idx}`)
    if (!run.jobsOnly) this.recent.set(`${file.key}:${idx}`, block)
    run.resolve(idx, block)
  }

  /** Drops a file's blocks from the recent ones in memory (evicted, or failed its checksum). */
  private forgetRecent(key: string): void {
    for (const k of [...this.recent.keys()]) if (k.startsWith(key + ':')) this.recent.delete(k)
  }

  /** Stores consecutive blocks in the cache; resolves once they are stored (true) or could not be (kept in memory). */
  private async storeBlocks(file: CachedBlocks, first: number, blocks: Block[], adlers: number[], forLater: boolean): Promise<boolean> {
    try {
      const stored = await file.writeBlocks(first, blocks, adlers, forLater)
      this.storeRefusing = !stored
      // Readers get what could not be stored from memory (serve kept only what readers wanted).
      if (!stored) blocks.forEach((b, j) => this.recent.set(`${file.key}:${first + j}`, b))
      // Stored and gone at once: the blocks completed the file, which failed the archive's checksum
      // and was dropped; if a site cache sent the bytes, it would send them again.
      if (stored && file.adler32 && !file.has(first)) {
        this.forgetRecent(file.key) // nor may readers get those bytes from memory
        this.source.distrust(file.relPath)
      }
      return stored
    } catch (err) {
      log.error('storing blocks failed', {
        path: file.relPath,
        blocks: `${first}-${first + blocks.length - 1}`,
        error: (err as Error).message,
      })
      return false
    }
  }
}
