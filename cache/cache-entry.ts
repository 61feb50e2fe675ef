// What the store knows about every cached (or pinned) file, kept in least-recently-used order: the
// index that eviction walks, pins mark, and `desfs cache ls` lists.
import { LRUCache } from 'lru-cache'

export interface CacheEntry {
  key: string
  path: string
  size: number
  /** Bytes of the file present in the cache. */
  bytes: number
  pinned: boolean
  /** Last access, ms since the epoch. */
  atime: number
  /** Only its header blocks are left, in the header tier (header-tier.ts). */
  tier?: boolean
}

/** Every file with a record, by key, least recently used first. */
export type FileIndex = LRUCache<string, CacheEntry>

export function newFileIndex(): FileIndex {
  return new LRUCache<string, CacheEntry>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: () => 1 })
}

/** Copies of the entries whose path is `prefix` or under it ('' for all), sorted by path. */
export function entriesUnder(index: FileIndex, prefix: string): CacheEntry[] {
  const p = prefix.replace(/\/+$/, '')
  const out: CacheEntry[] = []
  for (const e of index.values()) if (!p || e.path === p || e.path.startsWith(p + '/')) out.push({ ...e })
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

/** Files with cached bytes, and pinned files with the bytes cached of them. */
export function countEntries(index: FileIndex): { files: number; pinnedFiles: number; pinnedBytes: number } {
  const n = { files: 0, pinnedFiles: 0, pinnedBytes: 0 }
  for (const e of index.values()) {
    if (e.bytes > 0) n.files++
    if (e.pinned) {
      n.pinnedFiles++
      n.pinnedBytes += e.bytes
    }
  }
  return n
}
