// Progress on a terminal only: a bar redrawn in place on stderr when it is a TTY, nothing otherwise
// (scripts and logs get the final line from the command itself).
import { formatDuration } from '../daemon/units.js'

export function progressLine(label: string, done: number, total: number, unit = '', startedAt?: number): string {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0
  const width = 24
  const fill = Math.round((pct / 100) * width)
  let eta = ''
  if (startedAt && done > 0 && total > done) {
    const elapsed = Date.now() - startedAt
    eta = ` ETA ${formatDuration((elapsed / done) * (total - done))}`
  }
  const counts =
    total > 0 ? `${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')}${unit}` : `${done.toLocaleString('en-US')}${unit}`
  return `${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${pct.toFixed(0).padStart(3)}% ${counts}${eta}`
}

export class ProgressBar {
  private label: string
  private shown = false
  private startedAt = Date.now()
  private tty = process.stderr.isTTY === true

  constructor(label: string) {
    this.label = label
  }

  update(done: number, total: number, unit = ''): void {
    if (!this.tty) return
    this.shown = true
    process.stderr.write(`\r${progressLine(this.label, done, total, unit, this.startedAt)}\x1b[K`)
  }

  done(): void {
    if (this.shown) process.stderr.write('\n')
    this.shown = false
  }
}
