// Counting as a Source wrapper: every read request made to a source is counted where it is made
// (requests, bytes and errors by kind per source, requests in flight, their latency), so the figures
// say what went over the network, each retry included. The counters are the read path's (status
// shows them); the fetcher adds its hits to the same ones.
import { fetchMetrics, type FetchCounters } from '../metrics.js'
import type { ReadOptions, Source } from './source.js'
import { SourceWrapper } from './wrapper.js'
import { asSourceError } from './with-retry.js'

/** Read requests in flight to every source, for the gauge. */
let inflight = 0

class CountedSource extends SourceWrapper {
  constructor(
    inner: Source,
    private count: FetchCounters,
  ) {
    super(inner)
  }

  override async read(relPath: string, start: number, end: number, ro: ReadOptions): Promise<void> {
    this.count.add('requests', 1, this.name)
    fetchMetrics.inflightRequests.set(++inflight)
    const t0 = performance.now()
    try {
      await this.inner.read(relPath, start, end, {
        signal: ro.signal,
        onData: (chunk) => {
          this.count.add('bytesFetched', chunk.length, this.name)
          ro.onData(chunk)
        },
      })
    } catch (err) {
      // A read its caller called off is not the source's error.
      if (!ro.signal?.aborted) fetchMetrics.errors.inc({ source: this.name, kind: asSourceError(err, 'protocol').kind })
      throw err
    } finally {
      fetchMetrics.inflightRequests.set(--inflight)
      fetchMetrics.latency.observe({ source: this.name }, (performance.now() - t0) / 1000)
    }
  }
}

/** `source` with each read request counted in `count` and the fetch metrics. */
export function counted(source: Source, count: FetchCounters): Source {
  return new CountedSource(source, count)
}
