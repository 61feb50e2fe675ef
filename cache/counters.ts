// Figures a store or fetcher keeps of its own (`desfs status`, `desfs cache stats`, tests read them
// per instance), each counted once: `add` updates the figure and the daemon-wide metric it feeds.
// metrics.ts says which metric each figure feeds.

/** How a figure feeds its metric: `by` added, `label` the one label it takes (a source, an errno code). */
export type Feed = ((by: number, label?: string) => void) | null

export class Counters<K extends string> {
  /** The figures, in the order the feeds were given (the order `cache stats` shows them in). */
  readonly values: Record<K, number>
  private feeds: Record<K, Feed>

  constructor(feeds: Record<K, Feed>) {
    this.feeds = feeds
    this.values = Object.fromEntries(Object.keys(feeds).map((k) => [k, 0])) as Record<K, number>
  }

  add(key: K, by = 1, label?: string): void {
    this.values[key] += by
    this.feeds[key]?.(by, label)
  }
}
