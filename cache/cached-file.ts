// One cached archive file: its sparse data file, filled block by block, the blocks on record with
// their checksums, what was checked since this daemon started, and its presence map shared with the
// FUSE plane. A block is recorded only after its bytes were written; a block is checked against its
// checksum the first time it is read after a start; a complete file is checked against the archive's
// Adler-32. A data file that gained another name (a hard link) is let go of and fetched again.
// The store it belongs to (block-store.ts) keeps the record, the bound and eviction.
import { createHash } from 'node:crypto'
import { unlink, type FileHandle } from 'node:fs/promises'
import { adler32Combine, adler32Fast, adler32Hex } from './adler32.js'
import { blockBytes, type Block } from './block.js'
import { writeForLater, type DirectFile, type DirectWrites } from './direct-file.js'
import { cacheMetrics } from './metrics.js'
import { openCacheFile } from './open-cache-file.js'
import type { WriteBatch } from './write-batch.js'
import type { CachedBlocks } from './block-cache.js'
import { log } from '../daemon/log.js'

export function cacheKey(relPath: string): string {
  return createHash('sha256').update(relPath).digest('hex').slice(0, 32)
}

interface BlockRecord {
  adler: number
  len: number
}

/** What a cached file needs from the store that holds it (the BlockStore). */
export interface FileStore {
  readonly blockSize: number
  /** How often a file being read is checked for another name, ms. */
  readonly linkCheckMs: number
  /** Data files being removed, by key: a new one is opened only after. */
  readonly unlinking: Map<string, Promise<void>>
  /** Writes around the page cache, for blocks only a sync wants (direct-file.ts). */
  readonly directWrites: DirectWrites
  /** Writes through it, of every file: batched per turn, two at a time (write-batch.ts). */
  readonly writes: WriteBatch
  dataPath(key: string): string
  hold(f: CachedFile): void
  release(f: CachedFile): void
  /** Room for a block within the bound (evicting if need be); false when none can be made. */
  reserve(f: CachedFile, len: number): Promise<boolean>
  unreserve(len: number): void
  recordBlock(f: CachedFile, idx: number, adler: number, len: number): void
  recordVerified(f: CachedFile): void
  dropBlocks(f: CachedFile, idxs: number[], persist?: boolean): void
  noteWriteError(f: CachedFile | undefined, err: NodeJS.ErrnoException, what?: string): void
}

/**
 * Where presence maps shared with the FUSE plane come from: `newFile` returns the map's id and its
 * bytes (one per block, 1 = on disk and verified), `retireFile` stops the plane serving from it.
 */
export interface PresenceMaps {
  newFile(dataPath: string, size: number, blockSize: number): [number, Uint8Array]
  retireFile(id: number): void
}

/** A cached archive file: its presence map, its sparse data file, and the verification state. */
export class CachedFile implements CachedBlocks {
  readonly key: string
  readonly relPath: string
  readonly size: number
  readonly blockSize: number
  readonly blocks: number
  /** Block index -> record, for blocks whose bytes are on disk. */
  readonly present = new Map<number, BlockRecord>()
  /** Blocks checked against their checksum since this daemon started. */
  readonly verified = new Set<number>()
  /** Whole file checked against the archive's Adler-32 (persisted). */
  wholeVerified = false
  /** Archive Adler-32 (hex) when known. */
  adler32: string | null
  /** Open handles plus fetches in flight: a file in use is never evicted. */
  users = 0
  /**
   * The native plane's presence map of this file, once it was opened through the plane: byte i is 1
   * while block i is on disk and verified, so the plane's threads serve those reads without us.
   */
  private shared: { id: number; bits: Uint8Array; retire: () => void } | undefined
  private fd: Promise<FileHandle> | undefined
  /** The data file opened O_DIRECT, beside `fd` (opened by the first write for later). */
  private direct: Promise<DirectFile | undefined> | undefined
  /** When the data file's link count was last looked at (ms): at most once per store.linkCheckMs. */
  private linksCheckedAt = 0
  private store: FileStore

  constructor(store: FileStore, relPath: string, size: number, adler32: string | null) {
    this.store = store
    this.key = cacheKey(relPath)
    this.relPath = relPath
    this.size = size
    this.blockSize = store.blockSize
    this.blocks = Math.ceil(size / this.blockSize)
    this.adler32 = adler32
  }

  get dataPath(): string {
    return this.store.dataPath(this.key)
  }

  blockLength(idx: number): number {
    return Math.min(this.blockSize, this.size - idx * this.blockSize)
  }

  has(idx: number): boolean {
    return this.present.has(idx)
  }

  isVerified(idx: number): boolean {
    return this.verified.has(idx)
  }

  /** The plane's id for this file's presence map, made (and filled from what is verified) on first use. */
  sharedMap(maps: PresenceMaps): number {
    if (!this.shared) {
      const [id, bits] = maps.newFile(this.dataPath, this.size, this.blockSize)
      for (const idx of this.verified) bits[idx] = 1
      this.shared = { id, bits, retire: () => maps.retireFile(id) }
    }
    return this.shared.id
  }

  /** A block was dropped: not served from the cache again until refetched. */
  unverify(idx: number): void {
    this.mark(idx, false)
  }

  /** A block became verified (on disk and checked), or was dropped. */
  private mark(idx: number, verified: boolean): void {
    if (verified) this.verified.add(idx)
    else this.verified.delete(idx)
    if (this.shared) this.shared.bits[idx] = verified ? 1 : 0
  }

  /** The plane must no longer serve from this object's map (the file was forgotten or unloaded). */
  retireShared(): void {
    this.shared?.retire()
    this.shared = undefined
  }

  /** Every block present and checked since this daemon started. */
  get allVerified(): boolean {
    return this.complete && this.verified.size === this.blocks
  }

  /** Checks every present block not yet checked since start (one at a time, in the background). */
  async verifyAll(): Promise<void> {
    if (this.verifying) return
    this.verifying = true
    this.store.hold(this)
    try {
      for (let idx = 0; idx < this.blocks; idx++) if (this.present.has(idx) && !this.verified.has(idx)) await this.verifyBlock(idx)
    } finally {
      this.verifying = false
      this.store.release(this)
    }
  }
  private verifying = false

  get complete(): boolean {
    return this.present.size === this.blocks
  }

  get presentBytes(): number {
    let n = 0
    for (const r of this.present.values()) n += r.len
    return n
  }

  private handle(): Promise<FileHandle> {
    if (!this.fd) {
      // An eviction of this key may still be unlinking the old data file: open after it is gone.
      const gone = this.store.unlinking.get(this.key) ?? Promise.resolve()
      const fd: Promise<FileHandle> = gone.then(() => this.openData())
      this.fd = fd
      fd.catch(() => {
        if (this.fd === fd) this.fd = undefined
      })
    }
    return this.fd
  }

  /**
   * Opens the data file (openCacheFile: no link followed). Blocks on record that the file cannot
   * hold are forgotten: all of them when something else was in its place, and those past its end
   * when it is shorter (removed behind our back). A file with another name is let go of first.
   */
  private async openData(): Promise<FileHandle> {
    let { fh, replaced } = await openCacheFile(this.dataPath, true)
    let st = await fh.stat()
    if (st.nlink > 1) {
      await fh.close()
      await this.letGo(st.nlink)
      ;({ fh, replaced } = await openCacheFile(this.dataPath, true))
      st = await fh.stat()
    }
    this.linksCheckedAt = Date.now()
    const gone = [...this.present.entries()].filter(([idx, r]) => replaced || idx * this.blockSize + r.len > st.size).map(([idx]) => idx)
    if (gone.length) {
      log.warn('cache file lacks blocks on record; they will be fetched again', { path: this.relPath, blocks: gone.length })
      this.store.dropBlocks(this, gone)
    }
    return fh
  }

  /**
   * The data file has another name outside the cache (a hardlink), through which its bytes could be
   * changed: forget every block and remove our name (the other keeps the bytes); fetched again.
   */
  private async letGo(nlink: number): Promise<void> {
    log.warn(
      'a cache file has another name (a hard link) through which it could be changed: the cache lets go of it and fetches it again',
      { path: this.relPath, links: nlink },
    )
    this.store.dropBlocks(this, [...this.present.keys()])
    await unlink(this.dataPath).catch(() => undefined)
  }

  /** Now and then (store.linkCheckMs): has the open data file gained another name? Then let go of it. */
  private async gainedLink(fh: FileHandle): Promise<boolean> {
    const now = Date.now()
    if (now - this.linksCheckedAt < this.store.linkCheckMs) return false
    this.linksCheckedAt = now
    const { nlink } = await fh.stat()
    if (nlink <= 1) return false
    await this.closeFd()
    await this.letGo(nlink)
    return true
  }

  /**
   * Reads [pos, pos+len) from present blocks into `into`. The first read of a block since start reads
   * and checks the whole block; a block that fails its check is dropped and false is returned.
   */
  async readInto(into: Buffer, pos: number, len: number): Promise<boolean> {
    const first = Math.floor(pos / this.blockSize)
    const last = Math.floor((pos + len - 1) / this.blockSize)
    for (let idx = first; idx <= last; idx++) {
      if (!this.present.has(idx)) return false
      if (!this.verified.has(idx) && !(await this.verifyBlock(idx))) return false
    }
    try {
      const fh = await this.handle()
      if (await this.gainedLink(fh)) return false
      // Opening the data file may have found blocks missing from it (they are then off the record).
      for (let idx = first; idx <= last; idx++) if (!this.present.has(idx)) return false
      const { bytesRead } = await fh.read(into, 0, len, pos)
      return bytesRead === len
    } catch (err) {
      log.warn('cannot read the cache file; fetching again', { path: this.relPath, error: (err as Error).message })
      return false
    }
  }

  /** Reads one whole block and checks it; drops it on mismatch (or when it cannot be read). */
  async verifyBlock(idx: number): Promise<boolean> {
    const rec = this.present.get(idx)
    if (!rec) return false
    const buf = Buffer.allocUnsafe(rec.len)
    let ok: boolean
    try {
      const fh = await this.handle()
      const { bytesRead } = await fh.read(buf, 0, rec.len, idx * this.blockSize)
      ok = bytesRead === rec.len && adler32Fast(buf) === rec.adler
    } catch {
      ok = false
    }
    if (ok) this.mark(idx, true)
    else if (this.present.get(idx) === rec) {
      log.warn('cache block failed its checksum; dropped and will be refetched', { path: this.relPath, block: idx })
      cacheMetrics.corruptBlocks.inc()
      this.store.dropBlocks(this, [idx])
    }
    return ok
  }

  /** Stores one block fetched from a source (writeBlocks says how). */
  writeBlock(idx: number, block: Buffer | Buffer[], adler: number): Promise<boolean> {
    return this.writeBlocks(idx, [Array.isArray(block) ? block : [block]], [adler])
  }

  /**
   * Stores consecutive blocks fetched from a source, from block `first` on, with one reservation and
   * one write (a sync stores a run's MiBs at a time: per-block promises, reservations and writes took
   * much of the event loop). Returns false when they were not stored (no room within the bound, disk
   * full, I/O error): the caller still has the bytes and serves them from memory. Blocks `forLater`
   * (no reader wants them) are written around the page cache where the disk allows.
   */
  async writeBlocks(first: number, blocks: Block[], adlers: number[], forLater = false): Promise<boolean> {
    const todo: number[] = [] // positions in `blocks` not present yet
    let length = 0
    for (let j = 0; j < blocks.length; j++) {
      const n = blockBytes(blocks[j]!)
      if (n !== this.blockLength(first + j))
        throw new Error(`block ${first + j} of ${this.relPath} has ${n} bytes, expected ${this.blockLength(first + j)}`)
      if (!this.present.has(first + j)) {
        todo.push(j)
        length += n
      }
    }
    if (todo.length === 0) return true
    this.store.hold(this)
    try {
      if (!(await this.store.reserve(this, length))) return false
      const fdp = this.handle()
      try {
        // Adjacent blocks in one writev, with other writes of this file in this turn (write-batch.ts).
        const fh = await fdp
        const buffered = (pos: number, parts: Buffer[]) => this.store.writes.write(fh, pos, parts)
        const direct = forLater && this.fd === fdp ? await (this.direct ??= this.store.directWrites.open(fh)) : undefined
        const writes: Promise<void>[] = []
        for (let g = 0; g < todo.length;) {
          let e = g + 1
          while (e < todo.length && todo[e] === todo[e - 1]! + 1) e++
          const parts = todo.slice(g, e).flatMap((j) => blocks[j]!)
          const pos = (first + todo[g]!) * this.blockSize
          writes.push(direct ? writeForLater(direct, this.store.directWrites, pos, parts, buffered) : buffered(pos, parts))
          g = e
        }
        await Promise.all(writes)
      } catch (err) {
        this.store.unreserve(length)
        this.store.noteWriteError(this, err as NodeJS.ErrnoException)
        return false
      }
      if (this.fd !== fdp) {
        // The data file was let go of (evicted, or it gained another name) while these blocks were
        // being written: the bytes went to a file the cache no longer has.
        this.store.unreserve(length)
        return false
      }
      for (const j of todo) {
        const idx = first + j
        const len = this.blockLength(idx)
        if (this.present.has(idx)) {
          this.store.unreserve(len) // stored meanwhile by another writer
          continue
        }
        this.present.set(idx, { adler: adlers[j]!, len })
        this.mark(idx, true)
        this.store.recordBlock(this, idx, adlers[j]!, len)
      }
      if (this.complete && !this.wholeVerified) this.checkWhole()
      return true
    } finally {
      this.store.release(this)
    }
  }

  /** Adler-32 of the whole file, combined from the block checksums. */
  combinedAdler32(): number {
    let a = 1
    for (let i = 0; i < this.blocks; i++) {
      const r = this.present.get(i)!
      a = i === 0 ? r.adler : adler32Combine(a, r.adler, r.len)
    }
    return a
  }

  /** Checks a complete file against the archive's checksum; drops it all on mismatch. */
  checkWhole(): boolean {
    if (!this.complete) return false
    if (this.wholeVerified) return true
    if (!this.adler32) return false
    const got = adler32Hex(this.size === 0 ? 1 : this.combinedAdler32())
    if (got === this.adler32) {
      this.wholeVerified = true
      this.store.recordVerified(this)
      return true
    }
    log.error('cached file does not match the archive checksum; dropped', { path: this.relPath, expected: this.adler32, got })
    this.store.dropBlocks(this, [...this.present.keys()])
    return false
  }

  /** Forgets every block (the data file is being removed). */
  forget(): Promise<void> {
    this.retireShared()
    this.present.clear()
    this.verified.clear()
    this.wholeVerified = false
    return this.closeFd()
  }

  async closeFd(): Promise<void> {
    const { fd, direct } = this
    this.fd = this.direct = undefined
    await Promise.all([
      direct?.then((d) => d?.close()).catch(() => undefined),
      // The addon writes by descriptor number: not closed under a write (write-batch.ts).
      fd
        ?.then(async (h) => {
          await this.store.writes.settled(h)
          await h.close()
        })
        .catch(() => undefined),
    ])
  }
}
