// A file's FITS headers read through the cache: the HDU index behind the user.desfs.hdus attribute
// (walked once, then kept with the file's facts, since archive files never change) and the keywords
// `desfs headers` asks for. Reads go through the fetcher, like a reader's, so header bytes land in the
// cache and only the blocks holding headers are fetched.
import type { BlockStore } from '../../cache/block-store.js'
import type { Fetcher } from '../../cache/fetcher.js'
import type { Facts, FileFacts } from '../../fs/facts.js'
import { walkFits, type FitsWalk, type HduInfo, type ReadAt } from '../../fs/fits-hdus.js'

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

  constructor(parts: HeaderParts) {
    this.parts = parts
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

  private remember(rel: string, hdus: HduInfo[]): void {
    if (this.parts.facts.hdus(rel) === undefined) this.parts.facts.recordHdus(rel, JSON.stringify(hdus))
  }
}
