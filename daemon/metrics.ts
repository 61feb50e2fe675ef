// Prometheus-style metrics, kept in memory and rendered as the text exposition format for
// `GET /metrics` (and `desfs metrics`). Counters and gauges may carry labels; histograms have fixed
// buckets. One registry per daemon; modules create their metrics once and update them on hot paths
// (an update is a Map lookup and an add).

type Labels = Record<string, string>

function labelKey(labels: Labels | undefined): string {
  if (!labels) return ''
  const keys = Object.keys(labels).sort()
  return keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')
}

abstract class Metric {
  readonly name: string
  readonly help: string
  abstract readonly type: 'counter' | 'gauge' | 'histogram'
  constructor(name: string, help: string) {
    this.name = name
    this.help = help
  }
  abstract render(): string[]
}

export class Counter extends Metric {
  readonly type = 'counter' as const
  private values = new Map<string, number>()

  inc(labels?: Labels, by = 1): void {
    const k = labelKey(labels)
    this.values.set(k, (this.values.get(k) ?? 0) + by)
  }

  get(labels?: Labels): number {
    return this.values.get(labelKey(labels)) ?? 0
  }

  render(): string[] {
    if (this.values.size === 0) return [`${this.name} 0`]
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`)
  }
}

export class Gauge extends Metric {
  readonly type = 'gauge' as const
  private values = new Map<string, number>()
  private fn: (() => number) | undefined

  /** A gauge computed when scraped. */
  constructor(name: string, help: string, fn?: () => number) {
    super(name, help)
    this.fn = fn
  }

  set(value: number, labels?: Labels): void {
    this.values.set(labelKey(labels), value)
  }

  inc(labels?: Labels, by = 1): void {
    const k = labelKey(labels)
    this.values.set(k, (this.values.get(k) ?? 0) + by)
  }

  dec(labels?: Labels, by = 1): void {
    this.inc(labels, -by)
  }

  get(labels?: Labels): number {
    if (this.fn) return this.fn()
    return this.values.get(labelKey(labels)) ?? 0
  }

  render(): string[] {
    if (this.fn) return [`${this.name} ${this.fn()}`]
    if (this.values.size === 0) return [`${this.name} 0`]
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`)
  }
}

export class Histogram extends Metric {
  readonly type = 'histogram' as const
  readonly buckets: number[]
  private series = new Map<string, { counts: number[]; sum: number; count: number }>()

  constructor(name: string, help: string, buckets: number[]) {
    super(name, help)
    this.buckets = [...buckets].sort((a, b) => a - b)
  }

  observe(value: number, labels?: Labels): void {
    const k = labelKey(labels)
    let s = this.series.get(k)
    if (!s) {
      s = { counts: new Array(this.buckets.length).fill(0) as number[], sum: 0, count: 0 }
      this.series.set(k, s)
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++
    s.sum += value
    s.count++
  }

  /** Observations so far (all label sets). */
  count(): number {
    let n = 0
    for (const s of this.series.values()) n += s.count
    return n
  }

  render(): string[] {
    const out: string[] = []
    for (const [k, s] of this.series) {
      const sep = k ? ',' : ''
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{${k}${sep}le="${b}"} ${s.counts[i]}`))
      out.push(`${this.name}_bucket{${k}${sep}le="+Inf"} ${s.count}`)
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${s.sum}`)
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`)
    }
    return out
  }
}

/** Seconds buckets for request latencies: 1 ms to 2 min. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

export class Registry {
  private metrics = new Map<string, Metric>()

  private add<M extends Metric>(m: M): M {
    const existing = this.metrics.get(m.name)
    if (existing) return existing as M
    this.metrics.set(m.name, m)
    return m
  }

  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help))
  }

  gauge(name: string, help: string, fn?: () => number): Gauge {
    return this.add(new Gauge(name, help, fn))
  }

  histogram(name: string, help: string, buckets = LATENCY_BUCKETS): Histogram {
    return this.add(new Histogram(name, help, buckets))
  }

  get(name: string): Metric | undefined {
    return this.metrics.get(name)
  }

  /** The Prometheus text exposition format (version 0.0.4). */
  render(): string {
    const lines: string[] = []
    for (const m of this.metrics.values()) {
      lines.push(`# HELP ${m.name} ${m.help.replace(/\n/g, ' ')}`, `# TYPE ${m.name} ${m.type}`, ...m.render())
    }
    return lines.join('\n') + '\n'
  }
}

/** The daemon's registry. Tests that need isolation create their own. */
export const metrics = new Registry()
