import type { WriteDirect } from './direct-file.js'

// What a block store is told when it is made (its bounds and timings), the figures it keeps, and
// the block size of a new cache dir.

/**
 * Block size of a new cache dir: the grain of what is fetched, recorded and checked. 32 KiB, so a
 * header read (2880 bytes, 16-64 KiB once the kernel's read-ahead is added) fetches about what it
 * asks for rather than a MiB: with 64 KiB blocks a request straddling two blocks fetched twice what
 * fitsio's header reads asked for (75-107 KiB per header against the 64), with 32 KiB 51-59
 * KiB. Sequential readers still fetch MiBs per request, since runs and read-ahead are counted in
 * bytes (fetcher-options.ts); a cold cat measured the same within noise (npm run bench -- plane
 * cold). The cost is more of everything per byte: record rows (32 per MiB), promises and map entries
 * in flight, and the FUSE plane's presence map (one byte per block: 32 KiB for a 1 GiB file).
 */
export const DEFAULT_BLOCK_SIZE = 32 << 10

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
  /** Writes around the page cache (the addon's), for blocks only a sync wants; without it, none. */
  writeDirect?: WriteDirect
  /** Writes through the page cache in 64 KiB pieces (the addon's), for readers' blocks; without it, Node's writev. */
  writePieces?: WriteDirect
}

export interface StoreStats {
  blocksWritten: number
  blocksDropped: number
  writeErrors: number
  filesEvicted: number
  bytesEvicted: number
  /** Blocks served from memory because they could not be stored (bound, disk full). */
  notStored: number
  /** Bytes syncs wrote around the page cache (O_DIRECT: direct-file.ts). */
  directBytes: number
}
