// The memory GET bodies are read into (get-pool.ts), and its reuse. Fresh memory for every byte
// fetched was about half of the daemon's CPU in a sync: each GB brought a GB of new ArrayBuffers,
// which V8 counts as external memory and answers with 14–16 full garbage collections (0.9 s of CPU
// across the JavaScript thread and V8's helpers, on this 2-core box), and the kernel fills every
// new page on first touch. With reuse, a GB synced costs 3 full collections.
//
// So a slab is used again once every byte it lent is given back. A run gives back the blocks it
// stored, once it is over (runs.ts, fetch-run.ts): a sync's went nowhere but into the cache file; a
// reader's are first taken out of the recent blocks in memory, and every reader who got one copied
// it in the turn it got it. For a reader's cold `cat` that made 15 collections per 256 MB of 20, and
// the `cat` about a tenth faster (this 2-core box). Bytes lent elsewhere (blocks that could not be
// stored, a body skipped or discarded) are never given back, and their slab is left to the garbage
// collector. A slab used again is detached first (its ArrayBuffer transferred to a new one): a view
// someone still held by mistake reads as empty, never as the next bytes (block.ts's copyFromBlock
// then fails the read).

/** Slab size; a new one is taken when less than MIN_READ is left of the current one. */
export const SLAB_BYTES = 1 << 20
export const MIN_READ = 64 << 10
/** Slabs kept for reuse at most (beyond, they are left to the garbage collector). */
const KEEP = 32

interface Slab {
  /** Body bytes lent out and not given back. */
  lent: number
  /** Done with: no more bytes will be read into it. */
  sealed: boolean
}

export class SlabPool {
  private slabs = new WeakMap<ArrayBuffer, Slab>()
  private free: ArrayBuffer[] = []
  /** Slabs used again, and taken new, since start (for tests and the bench). */
  reused = 0
  taken = 0

  /** A slab to read into. */
  take(): Buffer {
    const ab = this.free.pop() ?? (this.taken++, Buffer.allocUnsafeSlow(SLAB_BYTES).buffer as ArrayBuffer)
    this.slabs.set(ab, { lent: 0, sealed: false })
    return Buffer.from(ab, 0, SLAB_BYTES)
  }

  /** `view` (part of a slab) goes to a body: it counts against the slab until given back. */
  lend(view: Buffer): void {
    const s = this.slabs.get(view.buffer as ArrayBuffer)
    if (s) s.lent += view.length
  }

  /** No more reads go into `slab`: it is reused once all it lent is back. */
  seal(slab: Buffer): void {
    const s = this.slabs.get(slab.buffer as ArrayBuffer)
    if (!s) return
    s.sealed = true
    this.maybeReuse(slab.buffer as ArrayBuffer, s)
  }

  /**
   * Views of lent bytes whose holder is done with them and kept no other reference; each given back
   * once. Views of memory that is not a slab (a mirror's reads) are ignored.
   */
  giveBack(views: Buffer[]): void {
    for (const v of views) {
      const ab = v.buffer as ArrayBuffer
      const s = this.slabs.get(ab)
      if (!s) continue
      s.lent -= v.length
      this.maybeReuse(ab, s)
    }
  }

  private maybeReuse(ab: ArrayBuffer, s: Slab): void {
    if (!s.sealed || s.lent > 0) return
    this.slabs.delete(ab) // later give-backs of its old views are ignored
    if (s.lent < 0 || this.free.length >= KEEP) return // more given back than lent (a bug): leave it to the GC
    this.free.push(structuredClone(ab, { transfer: [ab] }))
    this.reused++
  }
}

/** The one pool every connection reads into and every sync run gives back to. */
export const slabs = new SlabPool()
