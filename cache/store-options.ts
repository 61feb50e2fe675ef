// What a block store is told when it is made (its bounds and timings), the figures it keeps, and
// the block size of a new cache dir.

/**
 * Block size of a new cache dir: the grain of what is fetched, recorded and checked. 64 KiB, so a
 * header read (2880 bytes, 16-128 KiB once the kernel's read-ahead is added) fetches about what it
 * asks for rather than a MiB; sequential readers still fetch MiBs per request, since runs and
 * read-ahead are counted in bytes (fetcher-options.ts). The cost is more of everything per byte:
 * record rows (16 per MiB), promises and map entries in flight, and the FUSE plane's presence map
 * (one byte per block: 16 KiB for a 1 GiB file).
 */
export const DEFAULT_BLOCK_SIZE = 64 << 10

export interface StoreOptions {
  /** Size bound for cached data, bytes. */
  limit: number
  /** Eviction frees space down to this fraction of the limit. */
  lowWater?: number
  /** Cap on the total size of pinned files, bytes. */
  pinLimit?: number
  /** Free space to leave on the cache disk, bytes. */
  minFree?: number
  /** Block size for a new cache dir (an existing one keeps its own). */
  blockSize?: number
  /** Delay before the background check of data files against the record, ms. */
  cleanupDelayMs?: number
  /** How often a file being read is checked for another name (a hard link), ms. */
  linkCheckMs?: number
  /** Bound of the header tier, bytes (header-tier.ts; default 2% of `limit`, at most 256 MiB). */
  headerTierLimit?: number
}

export interface StoreStats {
  blocksWritten: number
  blocksDropped: number
  writeErrors: number
  filesEvicted: number
  bytesEvicted: number
  /** Blocks served from memory because they could not be stored (bound, disk full). */
  notStored: number
}
