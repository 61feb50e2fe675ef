// A directory's children as the plane takes them (replyListing): names, and per entry its kind,
// size, mtime and flags in typed arrays, for a readdir's page or a lookup's entry. Two kinds of
// directory: the tree's (files with their facts, or unknown until the archive gives them) and the
// control directory's (directories, and links sized by their targets).
import type { Listed } from './tree.js'
import { FLAG_ADLER, KIND } from './native.js'
import type { QueryEntry } from './query-dirs.js'

export interface ListingArrays {
  names: string[]
  kinds: Uint8Array
  sizes: Float64Array
  mtimes: Float64Array
  flags: Uint8Array
}

function empty(n: number, mountTime: number): ListingArrays {
  return {
    names: new Array<string>(n),
    kinds: new Uint8Array(n),
    sizes: new Float64Array(n),
    mtimes: new Float64Array(n).fill(mountTime),
    flags: new Uint8Array(n),
  }
}

/** The tree's entries; a file without facts is listed as unknown (the plane asks again on lookup). */
export function treeListing(entries: Listed[], mountTime: number): ListingArrays {
  const a = empty(entries.length, mountTime)
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!
    a.names[i] = e.name
    if (e.dir) a.kinds[i] = KIND.DIR
    else if (e.facts) {
      a.kinds[i] = KIND.FILE
      a.sizes[i] = e.facts.size
      if (e.facts.mtime !== null) a.mtimes[i] = e.facts.mtime
      a.flags[i] = e.facts.adler32 ? FLAG_ADLER : 0
    } else a.kinds[i] = KIND.UNKNOWN
  }
  return a
}

/** The control directory's entries: directories, and links sized by their targets. */
export function queryListing(entries: QueryEntry[], mountTime: number): ListingArrays {
  const a = empty(entries.length, mountTime)
  for (let i = 0; i < entries.length; i++) {
    const link = entries[i]!.link
    a.names[i] = entries[i]!.name
    a.kinds[i] = link === undefined ? KIND.DIR : KIND.LINK
    a.sizes[i] = link === undefined ? 0 : Buffer.byteLength(link)
  }
  return a
}
