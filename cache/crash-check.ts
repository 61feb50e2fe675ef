// The check of the cache's data files against its record, run in the background after every start
// (never at start-up) and a directory at a time. A crash can leave data files with no record (between
// the record's delete and the unlink), records of files whose data file is gone, and data files that
// hold more than the record says (blocks written just before a crash and never recorded take space
// the bound does not see). Nothing in the cache dir is followed through a link: a link is removed.
import { lstat, readdir, rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { log } from '../daemon/log.js'
import { TIER_SUFFIX } from './header-tier.js'

/** What the check needs of the store (block-store.ts). */
export interface CheckedStore {
  readonly dir: string
  readonly blockSize: number
  /** The store is closing: the check stops. */
  isClosed(): boolean
  /** A file in use, or whose data file is being removed: left alone. */
  busy(key: string): boolean
  entry(key: string): { key: string; path: string; size: number; bytes: number; pinned: boolean; atime: number } | undefined
  entryList(): { key: string; path: string; bytes: number; atime: number }[]
  dataPath(key: string): string
  evictKey(key: string): Promise<void>
  /** Forgets a file's blocks and removes the cache's own name of its data file (a pin stays). */
  letGo(path: string, size: number, key: string): Promise<void>
}

export async function checkAgainstRecord(store: CheckedStore): Promise<{ orphans: number; evicted: number }> {
  const res = { orphans: 0, evicted: 0 }
  const base = join(store.dir, 'data')
  let dirs: string[]
  try {
    dirs = await readdir(base)
  } catch {
    return res
  }
  const onDisk = new Set<string>()
  const scanStart = Date.now()
  for (const d of dirs) {
    if (store.isClosed()) return res
    // Never list (and clean) through a link: one at data/xx would make every file it points at an orphan.
    const dst = await lstat(join(base, d)).catch(() => undefined)
    if (!dst) continue
    if (!dst.isDirectory()) {
      log.warn('removed an entry that is not a desfs directory from the cache dir (desfs never follows links there)', {
        path: join(base, d),
        was: dst.isSymbolicLink() ? 'a symbolic link' : 'not a directory',
      })
      await rm(join(base, d), { force: true }).catch(() => undefined)
      res.orphans++
      continue
    }
    let names: string[]
    try {
      names = await readdir(join(base, d))
    } catch {
      continue
    }
    for (const name of names) {
      if (store.isClosed()) return res
      onDisk.add(name)
      // `<key>.tier` is the header tier's rewrite of a data file (header-tier.ts): busy while its key is.
      const owner = name.endsWith(TIER_SUFFIX) ? name.slice(0, -TIER_SUFFIX.length) : name
      if (store.busy(owner)) continue
      const e = owner === name ? store.entry(name) : undefined
      const path = join(base, d, name)
      const st = await lstat(path).catch(() => undefined)
      if (!st) continue
      if (!st.isFile()) {
        // A link or a device is no cache file: remove it (a link only, never its target); a
        // directory is left alone (it is not ours to delete), and logged.
        log.warn('an entry that is not a regular file is in the cache dir', { path, removed: !st.isDirectory() })
        if (!st.isDirectory()) await rm(path, { force: true }).catch(() => undefined)
        onDisk.delete(name)
        res.orphans++
        continue
      }
      if (!e) {
        if (store.busy(owner)) continue // came into use while we looked (a rewrite begun)
        res.orphans++
        await unlink(path).catch(() => undefined)
        continue
      }
      // The file may have come into use, or been evicted, while we looked at it.
      const unchanged = () => !store.busy(name) && store.entry(name) === e
      if (st.nlink > 1 && unchanged()) {
        // Its blocks are forgotten and our name removed (a pin stays); the other name keeps the bytes.
        log.warn('a cache file has another name (a hard link) through which it could be changed: the cache lets go of it', {
          path: e.path,
          links: st.nlink,
        })
        await store.letGo(e.path, e.size, name)
        res.evicted++
        continue
      }
      if (!e.pinned && st.blocks * 512 > e.bytes + 2 * store.blockSize && unchanged()) {
        log.info('cache file holds unrecorded data (left by a crash); evicted', { path: e.path })
        res.evicted++
        await store.evictKey(name)
      }
    }
  }
  for (const e of store.entryList()) {
    // Files first written after the scan started may be missing from it: only older ones count.
    if (e.bytes > 0 && e.atime < scanStart && !onDisk.has(e.key) && !store.busy(e.key)) {
      // A file pinned before the scan may have been written since, in a data directory made after
      // the scan listed them: look again before calling it missing.
      if (
        await lstat(store.dataPath(e.key)).then(
          () => true,
          () => false,
        )
      )
        continue
      if (store.entry(e.key) !== e || store.busy(e.key)) continue
      log.warn('cache file missing; its record is dropped', { path: e.path })
      res.evicted++
      await store.evictKey(e.key)
    }
  }
  if (res.orphans || res.evicted) log.info('cache checked against its record', res)
  return res
}
