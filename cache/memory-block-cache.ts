// A block cache held in memory (block-cache.ts): what the fetcher needs of the disk store, without
// files, a record or eviction. For tests of the fetcher in this process, and as the model of what the
// disk store promises: a block written is present and checked; a complete file whose blocks do not
// combine to the archive's Adler-32 is dropped whole, and the fetcher is told. An optional bound on
// blocks makes writes beyond it refused, as the disk store refuses them when it has no room.
import { adler32Combine, adler32Hex } from './adler32.js'
import type { Block } from './block.js'
import { EvictListeners, type BlockCache, type CachedBlocks } from './block-cache.js'
import { cacheKey } from './cached-file.js'

export class MemoryBlockCache implements BlockCache {
  private evictListeners = new EvictListeners()
  private files = new Map<string, MemoryFile>()
  private users = new Map<string, number>()
  /** Blocks stored now, across files. */
  storedBlocks = 0

  constructor(
    readonly blockSize = 64 * 1024,
    /** Blocks held at most; writes beyond are refused. */
    readonly maxBlocks = Infinity,
  ) {}

  /** The cached file for an archive path (the same object while the size stays the same). */
  file(relPath: string, size: number, adler32: string | null): MemoryFile {
    const key = cacheKey(relPath)
    let f = this.files.get(key)
    if (!f || f.size !== size) {
      if (f) this.drop(f)
      f = new MemoryFile(this, relPath, key, size, adler32)
      this.files.set(key, f)
    }
    return f
  }

  hold(f: CachedBlocks): void {
    this.users.set(f.key, (this.users.get(f.key) ?? 0) + 1)
  }

  release(f: CachedBlocks): void {
    const n = (this.users.get(f.key) ?? 0) - 1
    if (n > 0) this.users.set(f.key, n)
    else this.users.delete(f.key)
  }

  /** Whether a fetch (or a reader) has the file in use. */
  inUse(relPath: string): boolean {
    return this.users.has(cacheKey(relPath))
  }

  onEvict(listener: (key: string) => void): void {
    this.evictListeners.add(listener)
  }

  /** Drops every block of a file and tells the fetcher. */
  drop(f: MemoryFile): void {
    this.storedBlocks -= f.clear()
    this.evictListeners.tell(f.key)
  }

  /** Room for one more block (called by a file about to store one). */
  take(): boolean {
    if (this.storedBlocks >= this.maxBlocks) return false
    this.storedBlocks++
    return true
  }
}

export class MemoryFile implements CachedBlocks {
  readonly blocks: number
  private data = new Map<number, { bytes: Buffer; adler: number }>()

  constructor(
    private cache: MemoryBlockCache,
    readonly relPath: string,
    readonly key: string,
    readonly size: number,
    readonly adler32: string | null,
  ) {
    this.blocks = Math.ceil(size / cache.blockSize)
  }

  get blockSize(): number {
    return this.cache.blockSize
  }

  blockLength(idx: number): number {
    return Math.min(this.blockSize, this.size - idx * this.blockSize)
  }

  has(idx: number): boolean {
    return this.data.has(idx)
  }

  /** Bytes in memory are the bytes written: checked as soon as they are present. */
  isVerified(idx: number): boolean {
    return this.data.has(idx)
  }

  get complete(): boolean {
    return this.data.size === this.blocks
  }

  readInto(into: Buffer, pos: number, len: number): Promise<boolean> {
    const bs = this.blockSize
    for (let at = 0; at < len;) {
      const idx = Math.floor((pos + at) / bs)
      const b = this.data.get(idx)
      if (!b) return Promise.resolve(false)
      const from = pos + at - idx * bs
      at += b.bytes.copy(into, at, from, Math.min(b.bytes.length, from + len - at))
    }
    return Promise.resolve(true)
  }

  writeBlocks(first: number, blocks: Block[], adlers: number[]): Promise<boolean> {
    for (let j = 0; j < blocks.length; j++) {
      const idx = first + j
      if (this.data.has(idx)) continue
      const bytes = Buffer.concat(blocks[j]!)
      if (bytes.length !== this.blockLength(idx))
        throw new Error(`block ${idx} of ${this.relPath} has ${bytes.length} bytes, expected ${this.blockLength(idx)}`)
      if (!this.cache.take()) return Promise.resolve(false)
      this.data.set(idx, { bytes, adler: adlers[j]! })
    }
    if (this.complete) this.checkWhole()
    return Promise.resolve(true)
  }

  checkWhole(): boolean {
    if (!this.complete || !this.adler32) return false
    let a = 1
    for (let i = 0; i < this.blocks; i++) {
      const b = this.data.get(i)!
      a = i === 0 ? b.adler : adler32Combine(a, b.adler, b.bytes.length)
    }
    if (adler32Hex(a) === this.adler32) return true
    this.cache.drop(this)
    return false
  }

  /** Forgets every block; returns how many there were. */
  clear(): number {
    const n = this.data.size
    this.data.clear()
    return n
  }
}
