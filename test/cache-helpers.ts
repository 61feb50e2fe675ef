// Shared by the cache tests: the archive they read (files spanning many blocks, plus small ones),
// random-read runs from child processes, and sampling the cache's size on disk.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { makeArchive, run, PYTHON, type ArchiveFixture, type Scope } from './helpers.js'

export const RANDOM_READS = fileURLToPath(new URL('../../test/readers/random_reads.py', import.meta.url))

/** An archive with a 24 MiB file, three ~9 MiB segmaps and many small files. */
export function bigArchive(t: Scope): ArchiveFixture {
  return makeArchive(t, { coaddSize: [1536, 1536], largeFileBytes: 24 << 20, hostile: false })
}

/** The files random readers use: the largest few (many blocks) and some small ones (fetched whole). */
export function readSet(a: ArchiveFixture, large = 5, small = 6): string[] {
  const bySize = [...a.manifest.files].sort((x, y) => y.size - x.size)
  return [...bySize.slice(0, large), ...bySize.slice(-small)].map((f) => f.rel)
}

export interface ReadResult {
  reads: number
  ok: number
  eio: number
  wrong: number
  short: number
  bytes: number
  other: Record<string, number>
  firstWrong: unknown
  /** Bytes that differed from the source, in all wrong reads. */
  wrongBytes: number
  /** The longest single open or pread on the mount, ms. */
  maxMs: number
  /** Readers that did not finish (exit status or signal; only with failedReaders: 'count'). */
  failedReaders: number
}

/**
 * Runs `readers` random readers in parallel (seeds seed, seed+1, ...) and adds up their counts. A
 * reader that does not finish throws, or with failedReaders: 'count' is counted and its reads lost.
 */
export async function randomReads(
  mnt: string,
  srcRoot: string,
  files: string[],
  o: { seed: number; count: number; readers: number; maxLen?: number; timeoutMs?: number; failedReaders?: 'throw' | 'count' },
): Promise<ReadResult> {
  const runs = await Promise.all(
    Array.from({ length: o.readers }, (_, i) =>
      run(PYTHON, [RANDOM_READS, mnt, srcRoot, String(o.seed + i), String(o.count), String(o.maxLen ?? 300_000), ...files], {
        timeoutMs: o.timeoutMs ?? 180_000,
      }),
    ),
  )
  const total: ReadResult = {
    reads: 0,
    ok: 0,
    eio: 0,
    wrong: 0,
    short: 0,
    bytes: 0,
    other: {},
    firstWrong: null,
    wrongBytes: 0,
    maxMs: 0,
    failedReaders: 0,
  }
  for (const r of runs) {
    if (r.code !== 0 && o.failedReaders === 'count') {
      total.failedReaders++
      continue
    }
    if (r.code !== 0) throw new Error(`reader failed (exit ${r.code}, signal ${r.signal}): ${r.stderr.slice(-2000)}`)
    const x = JSON.parse(r.stdout.trim().split('\n').pop()!) as ReadResult
    for (const k of ['reads', 'ok', 'eio', 'wrong', 'short', 'bytes', 'wrongBytes'] as const) total[k] += x[k]
    total.maxMs = Math.max(total.maxMs, x.maxMs)
    for (const [k, v] of Object.entries(x.other)) total.other[k] = (total.other[k] ?? 0) + v
    total.firstWrong ??= x.firstWrong
  }
  return total
}

/** Bytes the cache's data files occupy on disk (allocated blocks of regular files), sampled from outside the daemon. */
export function diskUsage(dir: string): number {
  try {
    const out = execFileSync('find', [dir, '-type', 'f', '-printf', '%b\\n'], { encoding: 'utf8', timeout: 10_000 })
    return out
      .split('\n')
      .filter(Boolean)
      .reduce((a, b) => a + Number(b) * 512, 0)
  } catch {
    return NaN
  }
}
