// The run loop: fetches one run of blocks [first, end) through the fetcher's source
// (fetch-source.ts; in the daemon setup.ts's readSource: retries, the stall guard, the next source), cutting what arrives into blocks and
// handing each over as soon as it is complete. A small file fetched whole is checked against the
// archive's Adler-32 before any of it is served, and fetched again, from the sources that did not
// send it, when its bytes do not match (a site cache's copy may be damaged).
import type { CachedBlocks } from './block-cache.js'
import { blockAdler32, type Block } from './block.js'
import { fetchMetrics, type FetchCounters } from './metrics.js'
import type { Run } from './runs.js'
import { combinedAdler32 } from './whole-file.js'
import { SourceError, type Source } from './sources/source.js'
import type { FetchSource } from './fetch-source.js'
import { log } from '../daemon/log.js'
import { slabs } from './sources/slabs.js'

/** What the run loop hands back to the fetcher. */
export interface RunHooks {
  /** Hands a block of a run to its waiters (and to later readers, from memory). */
  serve(file: CachedBlocks, idx: number, block: Block, run: Run): void
  /**
   * Stores consecutive blocks in the cache; resolves once they are stored (true: on disk, and nothing
   * but the run holds them) or could not be (false: kept in memory for readers).
   * `forLater`: only sync jobs want them (they go around the page cache: direct-file.ts).
   */
  store(file: CachedBlocks, first: number, blocks: Block[], adlers: number[], forLater: boolean): Promise<boolean>
  /** Forgets a block in flight (a called-off run), so the next asker starts a fetch of its own. */
  forget(run: Run, idx: number): void
  /** The run is over and the block on disk: memory stops serving it (its slab is used again). */
  unserve(file: CachedBlocks, idx: number, block: Block): void
}

/**
 * Served blocks are stored this many bytes at a time: one reservation, write and promise per MiB
 * rather than per block. Readers are not kept waiting (blocks are served as they arrive), and what
 * is not stored yet stays in the run, so its readers find it there.
 */
const STORE_BYTES = 1 << 20

interface Held {
  idx: number
  block: Block
  adler: number
}

export class RunLoop {
  constructor(
    private source: FetchSource,
    private count: FetchCounters,
    private hooks: RunHooks,
  ) {}

  /**
   * Fetches blocks [first, end), resuming after failures from the first byte not yet received. A
   * file fetched whole is checked against the archive's Adler-32 before any of it is served.
   * Resolves once every block was delivered and written (or failed), so the memory budget covers
   * blocks waiting for the disk too.
   */
  async run(file: CachedBlocks, run: Run): Promise<void> {
    const { first, end } = run
    const calledOff = run.stop.signal
    const wholeFile = first === 0 && end === file.blocks
    let held: Held[] = []
    let idx = first
    let parts: Block = []
    let need = file.blockLength(idx)
    let fill = 0
    const pending: Promise<unknown>[] = []
    let toStore: Block[] = []
    let adlers: number[] = []
    let storeBytes = 0
    // Blocks on disk: their memory goes back to the slabs once the run is over (runs.ts), first taken
    // out of the recent blocks in memory, so that only the cache file has them then.
    const stored: { idx: number; block: Block }[] = []
    run.giveBack = () => {
      for (const s of stored) {
        this.hooks.unserve(file, s.idx, s.block)
        slabs.giveBack(s.block)
      }
    }
    const keep = (blocks: { idx: number; block: Block }[]) => (ok: boolean) => {
      if (ok) stored.push(...blocks)
    }
    const store = () => {
      const at = idx - toStore.length
      if (toStore.length)
        pending.push(
          this.hooks.store(file, at, toStore, adlers, run.jobsOnly).then(keep(toStore.map((block, j) => ({ idx: at + j, block })))),
        )
      toStore = []
      adlers = []
      storeBytes = 0
    }
    const onData = (chunk: Buffer) => {
      let off = 0
      while (off < chunk.length) {
        const n = Math.min(chunk.length - off, need - fill)
        parts.push(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n))
        fill += n
        off += n
        if (fill < need) continue
        // A block of a file fetched whole waits for the whole-file check; any other is served at once.
        const adler = blockAdler32(parts)
        if (wholeFile && file.adler32) held.push({ idx, block: parts, adler })
        else {
          this.hooks.serve(file, idx, parts, run)
          toStore.push(parts)
          adlers.push(adler)
          storeBytes += need
        }
        idx++
        if (storeBytes >= STORE_BYTES) store()
        parts = []
        fill = 0
        if (idx < end) need = file.blockLength(idx)
      }
    }
    const avoid = new Set<Source>()
    let lastErr: SourceError | undefined
    for (;;) {
      let servedBy: Source | undefined
      try {
        const start = idx * file.blockSize + fill
        await this.source.read(file.relPath, start, Math.min(end * file.blockSize, file.size), {
          signal: calledOff,
          avoid,
          onData,
          onServed: (s) => {
            servedBy = s
          },
        })
        lastErr = undefined
      } catch (err) {
        lastErr = err instanceof SourceError ? err : new SourceError('protocol', (err as Error).message)
      }
      if (lastErr || !held.length || !servedBy) break
      const got = combinedAdler32(file, held)
      if (got === file.adler32) break
      // The bytes do not match the archive's checksum: fetched again from a source that did not send them.
      fetchMetrics.errors.inc({ source: servedBy.name, kind: 'checksum' })
      const mismatch = new SourceError(
        'protocol',
        `${file.relPath}: checksum mismatch from ${servedBy.name} (archive adler32 ${file.adler32}, received ${got})`,
      )
      this.source.noteDamaged(servedBy, mismatch)
      avoid.add(servedBy)
      const next = this.source.others(avoid)[0]
      if (!next) break
      log.error('received data does not match the archive checksum; not served, fetching it again from the next source', {
        source: servedBy.name,
        path: file.relPath,
        expected: file.adler32,
        got,
        next: next.name,
      })
      held = []
      idx = first
      parts = []
      fill = 0
      need = file.blockLength(idx)
    }
    store() // what arrived before the end (or a failure) of the run
    await Promise.all(pending)
    if (idx < end && calledOff.aborted) {
      // Forget these blocks at once, so that whoever asks next starts a fetch of their own.
      const err = new SourceError('cancelled', `${file.relPath}: fetch called off (every sync that wanted it was cancelled)`)
      const undelivered = [...held.map((h) => h.idx), ...Array.from({ length: end - idx }, (_, j) => idx + j)]
      for (const i of undelivered) {
        this.hooks.forget(run, i)
        run.reject(i, err)
      }
      return
    }
    if (idx < end) {
      this.count.add('failures')
      const err = lastErr ?? new SourceError('network', 'no source could serve the file')
      for (let i = idx; i < end; i++) run.reject(i, err)
      for (const h of held) run.reject(h.idx, err)
      return
    }
    if (held.length) keep(held)(await this.deliverWhole(file, held, run))
    await Promise.all(pending)
  }

  /** Checks a whole small file against the archive checksum, then serves and stores its blocks (true: stored). */
  private async deliverWhole(file: CachedBlocks, held: Held[], run: Run): Promise<boolean> {
    held.sort((a, b) => a.idx - b.idx)
    const got = combinedAdler32(file, held)
    if (got !== file.adler32) {
      this.count.add('failures')
      fetchMetrics.errors.inc({ source: 'any', kind: 'checksum' })
      const err = new SourceError('protocol', `${file.relPath}: checksum mismatch (archive adler32 ${file.adler32}, received ${got})`)
      log.error('received data does not match the archive checksum; not served', { path: file.relPath, expected: file.adler32, got })
      for (const h of held) run.reject(h.idx, err)
      return false
    }
    for (const h of held) this.hooks.serve(file, h.idx, h.block, run)
    return this.hooks.store(
      file,
      run.first,
      held.map((h) => h.block),
      held.map((h) => h.adler),
      run.jobsOnly,
    )
  }
}
