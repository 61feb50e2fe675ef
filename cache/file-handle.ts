// A cached file as one reader has it open (a FUSE handle): while open, the file is in use (never
// evicted) and was most recently used when opened; its reads go through the fetcher with a read
// pattern of their own, so read-ahead follows this reader alone. Closing ends the use, once: fs/
// opens and closes handles and leaves the store's bookkeeping to them.
import { cacheKey, type BlockStore, type CachedFile } from './block-store.js'
import { newReadPattern, type ReadPattern } from './read-ahead.js'

/** How a handle reads: the fetcher's readInto, with the handle's own read pattern. */
export interface BlockReader {
  readInto(file: CachedFile, pos: number, len: number, dest: Buffer, open: () => boolean, pattern: ReadPattern): Promise<number>
  /** A read served without readInto (by the plane, from the cache): read-ahead follows it all the same. */
  readAhead(file: CachedFile, pos: number, len: number, pattern: ReadPattern): void
  /** Resolves once what was fetched of the file `key` so far is stored (or failed). */
  settledFile(key: string): Promise<void>
}

export class CacheFileHandle {
  private pattern = newReadPattern()
  private closed = false

  constructor(
    private store: BlockStore,
    private reader: BlockReader,
    /** The archive path, as the tree knows it. */
    readonly rel: string,
    readonly file: CachedFile,
  ) {
    store.hold(file)
    store.touch(file)
  }

  /**
   * Reads [pos, pos+len) into `dest` while `open()` says the request still waits for it (fetcher.ts,
   * readInto); resolves with the bytes copied.
   */
  read(pos: number, len: number, dest: Buffer, open: () => boolean): Promise<number> {
    return this.reader.readInto(this.file, pos, len, dest, open, this.pattern)
  }

  /** The plane served [pos, pos+len) from the cache itself: the handle's read-ahead goes on from there. */
  readSeen(pos: number, len: number): void {
    this.reader.readAhead(this.file, pos, len, this.pattern)
  }

  /** Ends this handle's use of the file; true when no other use of it is left. A second close does nothing. */
  close(): boolean {
    if (this.closed) return false
    this.closed = true
    this.store.release(this.file)
    return !this.store.inUse(this.rel)
  }
}

/** Opens handles on the files of one store, reading through one fetcher. */
export class FileHandles {
  constructor(
    private store: BlockStore,
    private reader: BlockReader,
  ) {}

  /** The store's cached file for an archive file, not yet in use (an open may still fail). */
  file(rel: string, size: number, adler32: string | null): CachedFile {
    return this.store.file(rel, size, adler32)
  }

  /** A handle on `file` (from `file()` above): in use until it is closed. */
  open(rel: string, file: CachedFile): CacheFileHandle {
    return new CacheFileHandle(this.store, this.reader, rel, file)
  }

  /**
   * Bytes cached of an archive file (user.desfs.cached), once what was fetched of it so far is stored:
   * a reader that has just read the file sees it counted (the blocks it got from memory are written
   * to disk after they were served).
   */
  async cachedBytes(rel: string): Promise<number> {
    await this.reader.settledFile(cacheKey(rel))
    return this.store.cachedBytes(rel)
  }
}
