// The read-ahead policy: from one handle's reads, whether it reads sequentially and how far ahead of
// it to fetch. Pure (no I/O): the fetcher applies what it says. Everything is counted in bytes, not
// blocks, so the block size (the grain of what is fetched and recorded: 64 KiB in new cache dirs)
// decides what a small or random read costs, and nothing about how far a sequential reader is served.

/** Per-handle read pattern: where the next sequential read would start, and the read-ahead window. */
export interface ReadPattern {
  nextPos: number
  /** Bytes read sequentially since the last seek. */
  seqBytes: number
  /** Highest step (a `stepBytes` slice of the file) the reader has entered sequentially. */
  step: number
  /** Read-ahead window, bytes. */
  windowBytes: number
}

/** How a handle's read-ahead grows (the fetcher's options say the figures). */
export interface ReadAheadPolicy {
  /** The first window, the unit it grows by, and the slack allowed to reads arriving out of order. */
  stepBytes: number
  /** Bytes read sequentially before read-ahead starts. */
  afterBytes: number
  /** Upper bound of the window. */
  maxWindowBytes: number
}

export function newReadPattern(): ReadPattern {
  return { nextPos: 0, seqBytes: 0, step: -1, windowBytes: 0 }
}

/**
 * Updates a handle's read pattern for a read of [pos, pos+len) and says which bytes to read ahead
 * ([from, to), not clipped to the file), if any. Read-ahead starts once a reader has read
 * `afterBytes` sequentially: the kernel's own read-ahead turns a 2880-byte header read into 16 to
 * 128 KiB of requests, which must not start a fetch of more. The window then starts at one step and
 * doubles each time the reader enters a new step, up to `maxWindowBytes`, and falls back on a seek.
 * The answer comes only when the reader entered a new step (or read-ahead just started): the fetcher
 * looks at the whole window then, and a window of 64 MiB is a thousand 64 KiB blocks to look at.
 */
export function advance(pattern: ReadPattern, pos: number, len: number, policy: ReadAheadPolicy): { from: number; to: number } | undefined {
  const step = policy.stepBytes
  // The kernel sends a sequential reader's reads several at a time (its own read-ahead, 1 MiB reads
  // up to a dozen MiB ahead of the slowest), and they arrive out of order: a read up to two steps
  // behind the furthest one seen, or one step beyond it, is still sequential; and so is one within
  // the window either way, whose bytes were asked for already.
  const slack = Math.max(step, pattern.windowBytes)
  const sequential = pos >= pattern.nextPos - Math.max(2 * step, slack) && pos <= pattern.nextPos + slack
  const end = pos + len
  const lastStep = Math.floor((end - 1) / step)
  const max = Math.max(step, policy.maxWindowBytes)
  const wasReading = pattern.seqBytes >= policy.afterBytes
  let entered = false
  if (!sequential) {
    pattern.windowBytes = step
    pattern.step = lastStep
    pattern.seqBytes = 0
  } else {
    pattern.windowBytes = Math.min(Math.max(pattern.windowBytes, step), max)
    if (lastStep > pattern.step) {
      entered = true
      pattern.step = lastStep
      // The window grows only once read-ahead runs: the first one is a single step, so a reader
      // that stops soon after (a cutout's run of tiles) is not fetched far past its end.
      if (pos > 0 && wasReading) pattern.windowBytes = Math.min(pattern.windowBytes * 2, max)
    }
  }
  pattern.seqBytes += len
  pattern.nextPos = sequential ? Math.max(pattern.nextPos, end) : end
  if (!sequential || pattern.seqBytes < policy.afterBytes) return undefined
  if (wasReading && !entered) return undefined
  return { from: end, to: end + pattern.windowBytes }
}
