// The stall guard as a Source wrapper: every read must keep bringing bytes at a minimum rate
// (rate-guard.ts), or it is aborted and fails as a 'timeout' that says why, which the retry around it
// may try again. Listings and facts pass through: the HTTP client's own deadlines bound them.
import { rateGuard } from '../rate-guard.js'
import { SourceError, type ReadOptions, type Source } from './source.js'
import { SourceWrapper } from './wrapper.js'

class StallGuardedSource extends SourceWrapper {
  constructor(
    inner: Source,
    private minRate: number,
    private windowMs: number,
  ) {
    super(inner)
  }

  override async read(relPath: string, start: number, end: number, ro: ReadOptions): Promise<void> {
    const guard = rateGuard(end - start, this.minRate, this.windowMs)
    try {
      await this.inner.read(relPath, start, end, {
        signal: ro.signal ? AbortSignal.any([guard.signal, ro.signal]) : guard.signal,
        onData: (chunk) => {
          guard.got(chunk.length)
          ro.onData(chunk)
        },
      })
    } catch (err) {
      if (guard.reason) throw new SourceError('timeout', `${this.name} ${this.locate(relPath)} bytes=${start}-${end - 1}: ${guard.reason}`)
      throw err
    } finally {
      guard.done()
    }
  }
}

/** `source` whose reads fail with a 'timeout' when slower than `minRate` bytes/s over a window of `windowMs`. */
export function stallGuard(source: Source, minRate: number, windowMs: number): Source {
  return new StallGuardedSource(source, minRate, windowMs)
}
