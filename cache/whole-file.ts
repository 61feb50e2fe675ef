// Whole files: made present in the cache for sync and get (a few runs at a time, resuming where an
// interrupted sync stopped), and the check of a whole file against the archive's Adler-32, combined
// from its blocks' checksums (so without reading it again).
import type { BlockCache, CachedBlocks } from './block-cache.js'
import { adler32Combine, adler32Hex } from './adler32.js'
import type { Block } from './block.js'
import type { Run, Runs } from './runs.js'
import { SourceError } from './sources/source.js'

/** Runs of blocks a whole-file fetch keeps in flight for one file. */
const WHOLE_FILE_RUNS = 4

/** What a whole-file fetch uses of the fetcher. */
export interface WholeFileDeps {
  runs: Runs
  store: Pick<BlockCache, 'hold' | 'release'>
  /** Bytes per run. */
  runBytes: number
  /** Starts fetches, on a job's behalf, for the blocks in [from, to) neither cached nor in flight. */
  fetch(file: CachedBlocks, from: number, to: number, signal: AbortSignal | undefined): void
  /** One whole block, from memory, disk or the network. */
  block(file: CachedBlocks, idx: number): Promise<Block>
}

/** The Adler-32 (hex) of a whole file from its blocks' checksums, given for every block. */
export function combinedAdler32(file: CachedBlocks, blocks: { idx: number; adler: number }[]): string {
  const sorted = [...blocks].sort((a, b) => a.idx - b.idx)
  let combined = sorted[0]!.adler
  for (let i = 1; i < sorted.length; i++) combined = adler32Combine(combined, sorted[i]!.adler, file.blockLength(sorted[i]!.idx))
  return adler32Hex(combined)
}

/**
 * Makes a whole file present in the cache (sync, get): fetches the blocks not cached yet in runs, a
 * few runs at a time, waits until every block is stored, and checks the file against the archive's
 * Adler-32. Blocks already cached are not fetched again, so an interrupted sync resumes where it
 * stopped. Resolves with the bytes that had to be transferred; rejects when a block cannot be
 * fetched or stored, or on abort.
 */
export async function fetchWholeFile(
  deps: WholeFileDeps,
  file: CachedBlocks,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<number> {
  const runBlocks = Math.max(1, Math.floor(deps.runBytes / file.blockSize))
  const step = runBlocks * WHOLE_FILE_RUNS
  let transferred = 0
  deps.store.hold(file)
  try {
    for (let from = 0; from < file.blocks; from += step) {
      if (signal?.aborted) throw new SourceError('cancelled', `${file.relPath}: cancelled`)
      const to = Math.min(file.blocks, from + step)
      const missing: number[] = []
      for (let i = from; i < to; i++) if (!file.has(i)) missing.push(i)
      if (missing.length === 0) continue
      deps.fetch(file, from, to, signal)
      // Wait for the blocks (errors surface here), then for their runs, which end once stored.
      const inFlight = runsOf(deps, file, missing)
      if (inFlight.gaps || !(await allDelivered(inFlight.runs, signal)))
        await Promise.all(missing.map((i) => blockForJob(deps, file, i, signal)))
      const bytes = missing.reduce((n, i) => n + file.blockLength(i), 0)
      transferred += bytes
      onBytes?.(bytes)
      await Promise.all(runsOf(deps, file, missing).runs.map((r) => r.done))
    }
  } finally {
    deps.store.release(file)
  }
  if (!file.complete)
    throw new SourceError(
      'local',
      `${file.relPath}: could not be stored in the cache (cache full of pinned or open files, or the disk is full)`,
    )
  if (file.adler32 && !file.checkWhole())
    throw new SourceError('protocol', `${file.relPath}: does not match the archive's adler32 ${file.adler32}; dropped, try again`)
  return transferred
}

/** The runs bringing these blocks now; `gaps` when some of them are in none. */
function runsOf(deps: WholeFileDeps, file: CachedBlocks, blocks: number[]): { runs: Run[]; gaps: boolean } {
  const runs = new Set<Run>()
  let gaps = false
  for (const i of blocks) {
    const r = deps.runs.run(file.key, i)
    if (r) runs.add(r)
    else gaps = true
  }
  return { runs: [...runs], gaps }
}

/**
 * The common case, without a promise per block: joins the runs bringing a window's blocks and waits
 * until they delivered them. False when one was called off (the caller then goes block by block).
 */
async function allDelivered(runs: Run[], signal: AbortSignal | undefined): Promise<boolean> {
  for (const r of runs) r.join(signal)
  try {
    await Promise.all(runs.map((r) => r.delivered()))
    return true
  } catch (err) {
    if ((err as SourceError).kind !== 'cancelled' || signal?.aborted) throw err
    return false
  }
}

/**
 * Waits for a block a job wants. If the run bringing it was called off (its other jobs were
 * cancelled) before this job joined it, the block is asked for again, now on this job's behalf.
 */
async function blockForJob(deps: WholeFileDeps, file: CachedBlocks, i: number, signal: AbortSignal | undefined): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    if (!deps.runs.has(file.key, i)) deps.fetch(file, i, i + 1, signal)
    const run = deps.runs.run(file.key, i)
    if (!run) {
      await deps.block(file, i) // cached meanwhile
      return
    }
    run.join(signal)
    try {
      await run.block(i)
      return
    } catch (err) {
      if ((err as SourceError).kind !== 'cancelled' || signal?.aborted || attempt >= 3) throw err
    }
  }
}
