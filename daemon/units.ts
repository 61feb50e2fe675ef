// Human sizes and durations, both ways: "50G" <-> 53687091200, 1.5e9 -> "1.4 GiB".

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
}

/** Parses "50G", "512MiB", "1.5TB", "1048576"; single letters are binary (like `du`, `df -h`). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const mult = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || mult === undefined) throw new Error(`'${text}' is not a size; use a number with an optional unit such as 512M, 50G or 2T`)
  return Math.round(parseFloat(m[1]!) * mult)
}

export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes)
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = Math.abs(bytes)
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  const s = i === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)
  return `${bytes < 0 ? '-' : ''}${s} ${units[i]}`
}

/** Parses "30s", "5m", "2h", "500ms" or a bare number of seconds; returns milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text)
  if (!m) throw new Error(`'${text}' is not a duration; use a number of seconds or a value such as 500ms, 30s, 5m`)
  const n = parseFloat(m[1]!)
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms']
  return Math.round(n * mult)
}

/** Where a duration setting may lie; `zero` names what 0 means when 0 is allowed outside the range. */
export interface DurationRange {
  minMs: number
  maxMs: number
  zero?: string
}

/** A range bound as a person writes it: 100ms, 1s, 10m, 24h. */
function boundText(ms: number): string {
  for (const [unit, mult] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms >= mult && ms % mult === 0) return `${ms / mult}${unit}`
  return `${ms}ms`
}

/**
 * parseDuration within a range. Node's timers hold at most 2^31-1 ms (about 24.8 days; a longer one
 * fires at once), and a deadline of 0 fails everything at once, so every duration setting has one.
 */
export function parseDurationIn(text: string, range: DurationRange): number {
  const ms = parseDuration(text)
  if (ms === 0 && range.zero) return 0
  if (ms < range.minMs || ms > range.maxMs) {
    throw new Error(
      `'${text.trim()}' is out of range: use ${boundText(range.minMs)} to ${boundText(range.maxMs)}${range.zero ? `, or 0 for ${range.zero}` : ''}`,
    )
  }
  return ms
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  const s = ms / 1000
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`
}
