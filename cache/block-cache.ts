// What the fetcher needs of a block cache: per file, which blocks are present and which of those were
// checked, reading bytes of present blocks, writing a fetched block (which may be refused), and the
// whole-file check that drops a file whose bytes do not match the archive; per cache, keeping a file
// in use while a fetch has it, and telling the fetcher when a file's blocks are dropped. The disk
// store (block-store.ts, cached-file.ts) and the in-memory one (memory-block-cache.ts) implement it.

import type { Block } from './block.js'

/** One archive file in a block cache, cut into blocks of `blockSize` bytes (the last may be shorter). */
export interface CachedBlocks {
  /** The file's key in the cache (unique per archive path). */
  readonly key: string
  readonly relPath: string
  readonly size: number
  /** The archive's Adler-32 of the whole file (hex), when known. */
  readonly adler32: string | null
  readonly blockSize: number
  readonly blocks: number
  blockLength(idx: number): number
  /** The block's bytes are in the cache. */
  has(idx: number): boolean
  /** The block is present and its bytes were checked against its checksum. */
  isVerified(idx: number): boolean
  /** Every block is present. */
  readonly complete: boolean
  /** Reads bytes [pos, pos+len) of present blocks into `into`; false when they could not be read right. */
  readInto(into: Buffer, pos: number, len: number): Promise<boolean>
  /**
   * Stores fetched blocks `first`, `first`+1, ... with their checksums; false when they were not all
   * stored (no room, disk full): the caller keeps the bytes. `forLater`: no reader wants them now.
   */
  writeBlocks(first: number, blocks: Block[], adlers: number[], forLater?: boolean): Promise<boolean>
  /** Checks a complete file against the archive's checksum; a mismatch drops every block of it. */
  checkWhole(): boolean
}

export interface BlockCache {
  /** Keeps a file in use (its blocks are not evicted) until released; uses nest. */
  hold(f: CachedBlocks): void
  release(f: CachedBlocks): void
  /** Adds a listener told the key of each file whose blocks are dropped (evicted, or failed the whole-file check). */
  onEvict(listener: (key: string) => void): void
}

/** The listeners of a cache's evictions, told in the order they were added. */
export class EvictListeners {
  private listeners: ((key: string) => void)[] = []

  add(listener: (key: string) => void): void {
    this.listeners.push(listener)
  }

  tell(key: string): void {
    for (const l of this.listeners) l(key)
  }
}
