// The daemon's one metrics registry, kept by prom-client: what `GET /metrics` (and `desfs metrics`)
// renders in the Prometheus text format and what `desfs status` reads its event-loop lag from. It also
// holds prom-client's default process metrics (CPU, memory, handles, GC and, above all, event-loop
// lag: a stalled loop is this daemon's worst failure). A leaf: it imports nothing of the daemon's.
//
// Modules create their metrics once (creating one twice returns the first) and update them on hot
// paths with prom-client's own calls: `inc(by)`, `inc(labels, by)`, `set(labels, value)`,
// `observe(labels, value)`. Label names are declared when a metric is created, so a label the
// metric does not take is a type error rather than a throw at run time.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type LabelValues, type Metric } from 'prom-client'

export type { Counter, Gauge, Histogram }

/** Seconds buckets for request latencies: 1 ms to 2 min. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

const registry = new Registry()
collectDefaultMetrics({ register: registry })

/** The metric registered under `name`, or the one `make` creates (and registers). */
function once<M>(name: string, make: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make()
}

/** The values a metric holds now (running its collect, if it computes them when read). */
async function valuesOf(m: Metric): Promise<{ value: number; labels: LabelValues<string> }[]> {
  return (await m.get()).values as { value: number; labels: LabelValues<string> }[]
}

export const metrics = {
  counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return once(name, () => new Counter<L>({ name, help, labelNames, registers: [registry] }))
  },

  /** A gauge; with `value`, one computed whenever the registry is read. */
  gauge<L extends string = never>(name: string, help: string, opts: { labelNames?: readonly L[]; value?: () => number } = {}): Gauge<L> {
    const value = opts.value
    return once(
      name,
      () =>
        new Gauge<L>({
          name,
          help,
          labelNames: opts.labelNames ?? [],
          registers: [registry],
          ...(value
            ? {
                collect(this: Gauge<L>) {
                  this.set(value())
                },
              }
            : {}),
        }),
    )
  },

  /**
   * A counter that shows running totals kept elsewhere (plain objects on a hot path), copied in
   * whenever the registry is read rather than counted twice. `read` gives each series' total, or
   * undefined while there is nothing to show yet.
   */
  totals<L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: () => { labels: LabelValues<L>; value: number }[] | undefined,
  ): Counter<L> {
    return once(
      name,
      () =>
        new Counter<L>({
          name,
          help,
          labelNames,
          registers: [registry],
          collect(this: Counter<L>) {
            const now = read()
            if (!now) return
            this.reset()
            for (const { labels, value } of now) this.inc(labels, value)
          },
        }),
    )
  },

  histogram<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], buckets = LATENCY_BUCKETS): Histogram<L> {
    return once(name, () => new Histogram<L>({ name, help, labelNames, buckets, registers: [registry] }))
  },

  /** The value of one series (0 when it has none yet): for tests and status, not for hot paths. */
  async value<L extends string>(m: Counter<L> | Gauge<L>, labels: LabelValues<L> = {}): Promise<number> {
    const want = Object.entries(labels)
    const found = (await valuesOf(m)).find((v) => Object.keys(v.labels).length === want.length && want.every(([k, x]) => v.labels[k] === x))
    return found?.value ?? 0
  },

  /**
   * The Prometheus text exposition format (version 0.0.4). prom-client puts a blank line between
   * metrics and spells not-a-number "Nan"; both are dropped or respelled for strict line parsers.
   */
  async render(): Promise<string> {
    return (await registry.metrics()).replace(/\n\n+/g, '\n').replace(/ Nan$/gm, ' NaN')
  },

  contentType: registry.contentType,
}

/**
 * The event loop's delay since the last read of the registry (a scrape or a status), in seconds:
 * p99 and max of prom-client's sampler. Reading it starts a new window, as a scrape does.
 */
export async function eventLoopLag(): Promise<{ p99: number; max: number }> {
  // The lag gauge's collect sets its siblings (p99, max, ...) from the sampler and resets it.
  const lag = registry.getSingleMetric('nodejs_eventloop_lag_seconds')
  if (lag) await lag.get()
  const read = async (name: string) => {
    const m = registry.getSingleMetric(name)
    const v = m ? (await valuesOf(m))[0]?.value : undefined
    return v !== undefined && Number.isFinite(v) ? v : 0
  }
  return { p99: await read('nodejs_eventloop_lag_p99_seconds'), max: await read('nodejs_eventloop_lag_max_seconds') }
}
