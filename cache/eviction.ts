// Which files eviction takes: whole files (Node cannot punch holes; a file with headers keeps them in
// the header tier, header-tier.ts), never pinned ones (unless asked) nor files in use. The store
// (block-store.ts) carries out what this picks.
import type { CacheEntry, FileIndex } from './cache-entry.js'

/**
 * Keys of the least recently used files that free `want` bytes, skipping `except`, files in use and
 * the header tier (which has its own bound); `evicting.frees` says what evicting one frees (headers stay).
 */
export function lruVictims(
  index: FileIndex,
  want: number,
  except: string,
  inUse: (key: string) => boolean,
  evicting: { frees(e: CacheEntry): number } = { frees: (e) => e.bytes },
): string[] {
  const out: string[] = []
  let freed = 0
  for (const key of index.rkeys()) {
    if (freed >= want) break
    const e = index.peek(key)!
    if (e.pinned || e.tier || e.bytes === 0 || key === except || inUse(key)) continue
    freed += evicting.frees(e)
    out.push(key)
  }
  return out
}

export interface EvictionAnswer {
  files: number
  bytes: number
  skippedPinned: number
  skippedInUse: number
}

/**
 * For `desfs cache evict`: the files of `groups` (the entries at or under each path asked for) that
 * go, and the answer to give. Files in use are skipped; pinned ones too unless `includePinned`.
 */
export function pickForEviction(
  groups: CacheEntry[][],
  includePinned: boolean,
  inUse: (key: string) => boolean,
): { keys: string[]; answer: EvictionAnswer } {
  const answer = { files: 0, bytes: 0, skippedPinned: 0, skippedInUse: 0 }
  const keys: string[] = []
  const seen = new Set<string>()
  for (const e of groups.flat()) {
    if (seen.has(e.key)) continue
    seen.add(e.key)
    if (e.pinned && !includePinned) {
      answer.skippedPinned++
      continue
    }
    if (inUse(e.key)) {
      answer.skippedInUse++
      continue
    }
    if (e.bytes === 0 && !e.pinned) continue
    answer.files++
    answer.bytes += e.bytes
    keys.push(e.key)
  }
  return { keys, answer }
}
