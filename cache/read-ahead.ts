// The read-ahead policy: from one handle's reads, whether it reads sequentially and how far ahead of
// it to fetch. Pure (no I/O): the fetcher applies what it says.

/** Per-handle read pattern: where the next sequential read would start, and the read-ahead window. */
export interface ReadPattern {
  nextPos: number
  /** Bytes read sequentially since the last seek. */
  seqBytes: number
  /** Highest block the reader has entered sequentially. */
  block: number
  /** Read-ahead window, in blocks. */
  window: number
}

export function newReadPattern(): ReadPattern {
  return { nextPos: 0, seqBytes: 0, block: -1, window: 1 }
}

/**
 * Updates a handle's read pattern for a read of [pos, pos+len) and says which blocks to read ahead
 * ([from, to), not clipped to the file), if any. Read-ahead starts once a reader has read half a
 * block sequentially (the kernel's own read-ahead turns a 2880-byte header read into a couple of
 * 128 KiB reads, which must not fetch a second block); the window then doubles each time the reader
 * enters a new block, up to `maxWindow` blocks, and falls back to one block on a seek.
 */
export function advance(pattern: ReadPattern, pos: number, len: number, bs: number, maxWindow: number): { from: number; to: number } | undefined {
  // The kernel sends a sequential reader's reads several at a time (its own read-ahead), and they
  // arrive out of order: a read up to two blocks behind the furthest one seen is still sequential.
  const sequential = pos >= pattern.nextPos - 2 * bs && pos <= pattern.nextPos + bs
  const lastBlock = Math.floor((pos + len - 1) / bs)
  pattern.window = Math.min(pattern.window, maxWindow)
  if (!sequential) {
    pattern.window = 1
    pattern.block = lastBlock
    pattern.seqBytes = 0
  } else if (lastBlock > pattern.block) {
    pattern.block = lastBlock
    if (pos > 0) pattern.window = Math.min(pattern.window * 2, maxWindow)
  }
  pattern.seqBytes += len
  pattern.nextPos = sequential ? Math.max(pattern.nextPos, pos + len) : pos + len
  if (!sequential || pattern.seqBytes < bs / 2) return undefined
  return { from: lastBlock + 1, to: lastBlock + 1 + pattern.window }
}
