// A block of an archive file in memory, as the fetcher holds it between the source and the cache,
// and the few operations on it.
import { adler32Fast } from './adler32.js'

/**
 * A block's bytes as the source delivered them: the body chunks in order, kept as they came (views
 * into the memory the connection read into, never copied into a block-sized buffer, and used again
 * only once given back: sources/slabs.ts), so receiving a block allocates nothing and copies
 * nothing until a reader copies its part out.
 */
export type Block = Buffer[]

/**
 * Copies bytes [from, to) of a block into `dest` at `at`; returns the bytes copied. A part with no
 * bytes is memory given back for reuse while the block was still held (sources/slabs.ts): the read
 * fails rather than serve a block with a hole.
 */
export function copyFromBlock(block: Block, from: number, to: number, dest: Buffer, at: number): number {
  let off = 0
  let n = 0
  for (const part of block) {
    if (part.length === 0) throw new Error('a block whose memory was reused while it was still held (a bug): not served')
    const end = off + part.length
    if (end > from) n += part.copy(dest, at + n, Math.max(from, off) - off, Math.min(to, end) - off)
    off = end
    if (off >= to) break
  }
  return n
}

export function blockAdler32(block: Block): number {
  let a = 1
  for (const part of block) a = adler32Fast(part, a)
  return a
}

export const blockBytes = (block: Block) => block.reduce((n, p) => n + p.length, 0)
