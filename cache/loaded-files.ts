// The cached files the store has loaded from its record: those in use (an open handle, a fetch:
// users > 0), which are never evicted, and up to 2048 recently used ones kept loaded for their
// verified state. A file leaving the idle set for good is unloaded: a later use loads its record into
// a new object (and a new presence map); one leaving it for the in-use set keeps its map.
import { LRUCache } from 'lru-cache'
import type { CachedFile } from './cached-file.js'

export class LoadedFiles {
  private live = new Map<string, CachedFile>()
  private idle = new LRUCache<string, CachedFile>({
    max: 2048,
    dispose: (f, _key, reason) => {
      if (reason === 'evict') f.retireShared()
      void f.closeFd()
    },
  })

  /** The loaded file for a key (marking it recently used). */
  get(key: string): CachedFile | undefined {
    return this.live.get(key) ?? this.idle.get(key)
  }

  peek(key: string): CachedFile | undefined {
    return this.live.get(key) ?? this.idle.peek(key)
  }

  /** A file just loaded (not in use yet). */
  add(f: CachedFile): void {
    this.idle.set(f.key, f)
  }

  /** Unloads an idle file (closing its data file). */
  drop(key: string): void {
    this.idle.delete(key)
  }

  inUse(key: string): boolean {
    return this.live.has(key)
  }

  /** Files in use. */
  get inUseCount(): number {
    return this.live.size
  }

  hold(f: CachedFile): void {
    if (f.users++ === 0) {
      this.idle.delete(f.key)
      this.live.set(f.key, f)
    }
  }

  /** Ends one use; a file no longer in use stays loaded, unless the store is closing. */
  release(f: CachedFile, closing: boolean): void {
    if (--f.users > 0) return
    f.users = 0
    if (this.live.get(f.key) === f) {
      this.live.delete(f.key)
      if (!closing) this.idle.set(f.key, f)
      else void f.closeFd()
    }
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.live.values(), ...this.idle.values()].map((f) => f.closeFd()))
    this.idle.clear()
  }
}
