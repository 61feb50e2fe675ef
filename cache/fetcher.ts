// Gets blocks into the cache: one in-flight request per block however many readers want it
// (single-flight), runs of blocks fetched with one ranged GET, read-ahead driven by the reader's
// sequential pattern, bounded retries with backoff across the configured sources, and a memory
// budget for what is in flight. Readers wait with their own deadline; a fetch that outlives it still
// fills the cache for the next reader.
import { LRUCache } from 'lru-cache'
import { BLOCK_SIZE, type CachedFile } from './block-store.js'
import { adler32Async, adler32Combine, adler32Hex } from './adler32.js'
import { SourceError, type Source } from './sources/source.js'
import { log } from '../daemon/log.js'

export interface FetcherOptions {
  /** Tries per source before moving on to the next one. */
  attemptsPerSource: number
  /** First retry delay; doubles with each retry, with jitter. */
  backoffMs: number
  /** Files up to this size are fetched whole on their first read. */
  smallFileBytes: number
  /** Upper bound of the read-ahead window, in blocks. */
  maxWindowBlocks: number
  /** Blocks per ranged GET when reading ahead (several run in parallel). */
  runBlocks: number
  /** Bytes that may be in flight (being fetched) at once. */
  memoryBudget: number
  /** Recently fetched blocks kept in memory (also what serves reads when the disk is full). */
  recentBytes: number
}

export const DEFAULT_FETCHER_OPTIONS: FetcherOptions = {
  attemptsPerSource: 3,
  backoffMs: 200,
  smallFileBytes: 4 * BLOCK_SIZE,
  maxWindowBlocks: 64,
  runBlocks: 8,
  memoryBudget: 256 * BLOCK_SIZE,
  recentBytes: 64 * BLOCK_SIZE,
}

/** Per-handle read pattern: where the next sequential read would start, and the read-ahead window. */
export interface ReadPattern {
  nextPos: number
  /** Highest block the reader has entered sequentially. */
  block: number
  window: number
}

export function newReadPattern(): ReadPattern {
  return { nextPos: 0, block: -1, window: 1 }
}

interface Deferred {
  promise: Promise<Buffer>
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
}

function deferred(): Deferred {
  let resolve!: (b: Buffer) => void
  let reject!: (e: Error) => void
  const promise = new Promise<Buffer>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => undefined) // a block nobody waits for must not become an unhandled rejection
  return { promise, resolve, reject }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface FetchStats {
  requests: number
  bytesFetched: number
  retries: number
  failures: number
  memoryHits: number
  diskHits: number
}

export class Fetcher {
  private sources: Source[]
  private opts: FetcherOptions
  private inflight = new Map<string, Promise<Buffer>>()
  private inflightBytes = 0
  private recent: LRUCache<string, Buffer>
  readonly stats: FetchStats = { requests: 0, bytesFetched: 0, retries: 0, failures: 0, memoryHits: 0, diskHits: 0 }

  constructor(sources: Source[], opts: Partial<FetcherOptions> = {}) {
    this.sources = sources
    this.opts = { ...DEFAULT_FETCHER_OPTIONS, ...opts }
    this.recent = new LRUCache<string, Buffer>({ maxSize: this.opts.recentBytes, sizeCalculation: (b) => Math.max(1, b.length) })
  }

  /** Reads [pos, pos+len) of a file (shorter at end of file). */
  async read(file: CachedFile, pos: number, len: number, pattern?: ReadPattern): Promise<Buffer> {
    if (pos >= file.size || len <= 0) return Buffer.alloc(0)
    len = Math.min(len, file.size - pos)
    const first = Math.floor(pos / BLOCK_SIZE)
    const last = Math.floor((pos + len - 1) / BLOCK_SIZE)
    if (pattern) this.readAhead(file, pos, len, pattern)
    else if (file.size <= this.opts.smallFileBytes) this.fetchMissing(file, 0, file.blocks)

    // Fast path: every block on disk and checked already.
    let onDisk = true
    for (let i = first; i <= last && onDisk; i++) onDisk = file.has(i) && file.verified.has(i)
    if (onDisk) {
      const out = Buffer.allocUnsafe(len)
      if (await file.readInto(out, pos, len)) {
        this.stats.diskHits++
        return out
      }
    }
    const parts: Buffer[] = []
    for (let i = first; i <= last; i++) {
      const blk = await this.block(file, i)
      const from = i === first ? pos - i * BLOCK_SIZE : 0
      const to = i === last ? pos + len - i * BLOCK_SIZE : blk.length
      parts.push(blk.subarray(from, to))
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  }

  /** One whole block: from memory, from disk (checked), or fetched (single-flight). */
  async block(file: CachedFile, idx: number): Promise<Buffer> {
    const k = `${file.key}:${idx}`
    const mem = this.recent.get(k)
    if (mem) {
      this.stats.memoryHits++
      return mem
    }
    if (file.has(idx)) {
      const buf = Buffer.allocUnsafe(file.blockLength(idx))
      if (await file.readInto(buf, idx * BLOCK_SIZE, buf.length)) {
        this.stats.diskHits++
        return buf
      }
    }
    let p = this.inflight.get(k)
    if (!p) {
      this.fetchMissing(file, idx, idx + 1, true)
      p = this.inflight.get(k)!
    }
    return p
  }

  /**
   * Updates the handle's pattern and starts read-ahead. The window doubles each time a sequential
   * reader enters a new block and falls back to one block on a seek, so a header scan that stays in
   * the first block fetches nothing more.
   */
  private readAhead(file: CachedFile, pos: number, len: number, pattern: ReadPattern): void {
    const sequential = pos >= pattern.nextPos - BLOCK_SIZE / 4 && pos <= pattern.nextPos + BLOCK_SIZE
    const lastBlock = Math.floor((pos + len - 1) / BLOCK_SIZE)
    if (!sequential) {
      pattern.window = 1
      pattern.block = lastBlock
    } else if (lastBlock > pattern.block) {
      pattern.block = lastBlock
      if (pos > 0) pattern.window = Math.min(pattern.window * 2, this.opts.maxWindowBlocks)
    }
    pattern.nextPos = pos + len
    if (file.size <= this.opts.smallFileBytes) this.fetchMissing(file, 0, file.blocks)
    else if (sequential && pos > 0) this.fetchMissing(file, lastBlock + 1, Math.min(file.blocks, lastBlock + 1 + pattern.window))
  }

  /** Starts fetches for the blocks in [from, to) that are neither cached nor in flight. */
  private fetchMissing(file: CachedFile, from: number, to: number, demand = false): void {
    let runStart = -1
    const flush = (end: number) => {
      if (runStart < 0) return
      for (let s = runStart; s < end; s += this.opts.runBlocks) {
        const e = Math.min(end, s + this.opts.runBlocks)
        const bytes = (e - s) * BLOCK_SIZE
        // Read-ahead waits for room in the memory budget; a reader's own block never does.
        if (!demand && this.inflightBytes + bytes > this.opts.memoryBudget) return
        this.startRun(file, s, e)
      }
      runStart = -1
    }
    for (let i = from; i < to; i++) {
      const busy = file.has(i) || this.inflight.has(`${file.key}:${i}`) || this.recent.has(`${file.key}:${i}`)
      if (busy) flush(i)
      else if (runStart < 0) runStart = i
    }
    flush(to)
  }

  private startRun(file: CachedFile, first: number, end: number): void {
    const defs: Deferred[] = []
    for (let i = first; i < end; i++) {
      const d = deferred()
      defs.push(d)
      this.inflight.set(`${file.key}:${i}`, d.promise)
    }
    const bytes = Math.min(end * BLOCK_SIZE, file.size) - first * BLOCK_SIZE
    this.inflightBytes += bytes
    void this.runFetch(file, first, end, defs).finally(() => {
      this.inflightBytes -= bytes
      for (let i = first; i < end; i++) this.inflight.delete(`${file.key}:${i}`)
    })
  }

  /**
   * Fetches blocks [first, end) with ranged GETs, resuming after failures from the first byte not yet
   * received, trying each source in order. A file fetched whole is checked against the archive's
   * Adler-32 before any of it is served.
   */
  private async runFetch(file: CachedFile, first: number, end: number, defs: Deferred[]): Promise<void> {
    const wholeFile = first === 0 && end === file.blocks
    const held: { idx: number; buf: Buffer; adler: number }[] = []
    let idx = first
    let buf = Buffer.allocUnsafe(file.blockLength(idx))
    let fill = 0
    const pendingAdler: Promise<void>[] = []
    const completeBlock = (i: number, b: Buffer) => {
      pendingAdler.push(adler32Async(b).then((adler) => {
        if (wholeFile && file.adler32) held.push({ idx: i, buf: b, adler })
        else this.deliver(file, i, b, adler, defs[i - first]!)
      }))
    }
    let lastErr: SourceError | undefined
    outer: for (const source of this.sources) {
      for (let attempt = 0; attempt < this.opts.attemptsPerSource && idx < end; attempt++) {
        if (attempt > 0) {
          this.stats.retries++
          await sleep(this.opts.backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random()))
        }
        const start = idx * BLOCK_SIZE + fill
        const stop = Math.min(end * BLOCK_SIZE, file.size)
        this.stats.requests++
        try {
          await source.read(file.relPath, start, stop, {
            onData: (chunk) => {
              this.stats.bytesFetched += chunk.length
              let off = 0
              while (off < chunk.length) {
                const n = Math.min(chunk.length - off, buf.length - fill)
                chunk.copy(buf, fill, off, off + n)
                fill += n
                off += n
                if (fill === buf.length) {
                  completeBlock(idx, buf)
                  idx++
                  fill = 0
                  if (idx < end) buf = Buffer.allocUnsafe(file.blockLength(idx))
                }
              }
            },
          })
          lastErr = undefined
        } catch (err) {
          lastErr = err instanceof SourceError ? err : new SourceError('protocol', (err as Error).message)
          log.warn('fetch failed', { source: source.name, path: file.relPath, bytes: `${start}-${stop - 1}`, attempt: attempt + 1, error: lastErr.message })
          if (!lastErr.retryable) continue outer
        }
      }
      if (idx >= end) break
    }
    await Promise.all(pendingAdler)
    if (idx < end) {
      this.stats.failures++
      const err = lastErr ?? new SourceError('network', 'no source could serve the file')
      for (let i = idx; i < end; i++) defs[i - first]!.reject(err)
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    if (held.length) this.deliverWhole(file, held, first, defs)
  }

  /** Checks a whole small file against the archive checksum, then serves and stores its blocks. */
  private deliverWhole(file: CachedFile, held: { idx: number; buf: Buffer; adler: number }[], first: number, defs: Deferred[]): void {
    held.sort((a, b) => a.idx - b.idx)
    let combined = held[0]!.adler
    for (let i = 1; i < held.length; i++) combined = adler32Combine(combined, held[i]!.adler, held[i]!.buf.length)
    const got = adler32Hex(combined)
    if (got !== file.adler32) {
      this.stats.failures++
      const err = new SourceError('protocol', `${file.relPath}: checksum mismatch (archive adler32 ${file.adler32}, received ${got})`)
      log.error('received data does not match the archive checksum; not served', { path: file.relPath, expected: file.adler32, got })
      for (const h of held) defs[h.idx - first]!.reject(err)
      return
    }
    for (const h of held) this.deliver(file, h.idx, h.buf, h.adler, defs[h.idx - first]!)
  }

  private deliver(file: CachedFile, idx: number, buf: Buffer, adler: number, d: Deferred): void {
    this.recent.set(`${file.key}:${idx}`, buf)
    d.resolve(buf)
    void file.writeBlock(idx, buf, adler)
  }
}
