// A file's FITS headers read through the cache: the HDU index behind the user.desfs.hdus attribute
// (walked once, then kept with the file's facts, since archive files never change) and the keywords
// `desfs headers` asks for. Reads go through the fetcher, like a reader's, so header bytes land in the
// cache and only the blocks holding headers are fetched.
import type { BlockStore } from '../../cache/block-store.js'
import type { Fetcher } from '../../cache/fetcher.js'
import type { Facts, FileFacts } from '../../fs/facts.js'
import { walkFits, type FitsWalk, type HduInfo, type ReadAt } from '../../fs/fits-hdus.js'
import { log } from '../log.js'

/**
 * Walks started by opens at most at once. Beyond it an open starts none (a later open or a getxattr
 * does): a `find -exec head` over thousands of files must not queue thousands of walks.
 */
export const BACKGROUND_WALKS = 4

/** What reading headers needs from the daemon. */
export interface HeaderParts {
  facts: Facts
  store: BlockStore
  fetcher: Fetcher
}

export class HeaderReader {
  private parts: HeaderParts
  /** Walks under way, by path: two askers of one file share one walk. */
  private walking = new Map<string, Promise<HduInfo[]>>()
  /** Walks started by opens still under way (walkOnOpen), and the bound on them. */
  private background = 0
  private maxBackground: number

  constructor(parts: HeaderParts, maxBackground = BACKGROUND_WALKS) {
    this.parts = parts
    this.maxBackground = maxBackground
  }

  /**
   * A file opened through the mount has its first block at hand (on disk, or coming for the reader's
   * read at offset 0): walk its headers in the background unless its index is recorded, it is being
   * walked, or enough walks run already (then none is started: a later open does it). A file that is
   * not FITS thus costs no request of its own. The opener never waits; a failure is only a debug
   * line (the file still reads as plain bytes).
   */
  walkOnOpen(rel: string, file: { size: number; adler32: string | null }): void {
    if (this.walking.has(rel) || this.background >= this.maxBackground) return
    if (this.parts.facts.hdus(rel) !== undefined) return
    this.background++
    this.hdus(rel, { size: file.size, adler32: file.adler32, mtime: null })
      .catch((err: Error) => log.debug('HDU walk on open failed', { path: rel, error: err.message }))
      .finally(() => this.background--)
  }

  /** Walks a file's headers through the cache (held meanwhile, so eviction cannot take it mid-walk). */
  async walk(rel: string, facts: FileFacts, withCards: boolean, signal?: AbortSignal): Promise<FitsWalk> {
    const { store, fetcher } = this.parts
    const file = store.file(rel, facts.size, facts.adler32)
    store.hold(file)
    try {
      const read: ReadAt = async (offset, length) => {
        if (signal?.aborted) throw new Error('cancelled')
        const buf = Buffer.allocUnsafe(length)
        const n = await fetcher.readInto(file, offset, length, buf, () => true)
        return buf.subarray(0, n)
      }
      const walk = await walkFits(read, facts.size, withCards)
      this.remember(rel, walk.hdus)
      return walk
    } finally {
      store.release(file)
    }
  }

  /** The HDU index of a file: as recorded, or walked now (once, however many ask meanwhile). */
  async hdus(rel: string, facts: FileFacts): Promise<HduInfo[]> {
    const known = this.parts.facts.hdus(rel)
    if (known !== undefined) return JSON.parse(known) as HduInfo[]
    let p = this.walking.get(rel)
    if (!p) {
      p = this.walk(rel, facts, false).then((w) => w.hdus)
      this.walking.set(rel, p)
      void p.finally(() => this.walking.delete(rel)).catch(() => undefined)
    }
    return p
  }

  /** The user.desfs.hdus attribute's value: the index as JSON ('[]' for a file that is not FITS). */
  async attribute(rel: string, facts: FileFacts): Promise<Buffer> {
    const known = this.parts.facts.hdus(rel)
    return Buffer.from(known ?? JSON.stringify(await this.hdus(rel, facts)))
  }

  /** Where a file's headers are (offset, length), as recorded: the cache keeps them when it evicts the file. */
  headerRanges(rel: string): [number, number][] | undefined {
    const known = this.parts.facts.hdus(rel)
    if (!known) return undefined
    return (JSON.parse(known) as HduInfo[]).map((h) => [h.headerOffset, h.headerLength])
  }

  private remember(rel: string, hdus: HduInfo[]): void {
    if (this.parts.facts.hdus(rel) === undefined) this.parts.facts.recordHdus(rel, JSON.stringify(hdus))
  }
}
