// The daemon's log: one line per event, `time level message key=value...`. Written to stderr in the
// foreground and to the state dir's log file when detached. Anything shaped like a JWT is redacted
// before it is written, so a token that slips into an error message never reaches the disk.
import { createWriteStream, openSync, type WriteStream } from 'node:fs'
import { APPEND_FLAGS } from './safe-write.js'

export type Level = 'debug' | 'info' | 'warn' | 'error'
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g
const BEARER = /(Bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*/gi

export function redact(text: string): string {
  return text.replace(JWT, '[token]').replace(BEARER, '$1[token]')
}

function fmtValue(v: unknown): string {
  if (v === undefined || v === null) return String(v)
  if (v instanceof Error) return JSON.stringify(v.message)
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v)
  return /[\s"=]/.test(s) || s === '' ? JSON.stringify(s) : s
}

export class Logger {
  private level: number
  private out: NodeJS.WritableStream
  private file: WriteStream | undefined
  /** Recent lines kept for `desfs status` and tests. */
  readonly recent: string[] = []

  constructor(level: Level = 'info', out: NodeJS.WritableStream = process.stderr) {
    this.level = ORDER[level]
    this.out = out
    this.guard(out)
  }

  /**
   * A log whose reader went away (a foreground daemon's terminal closed: EPIPE) must not turn every
   * later line into an uncaught error: from then on lines are kept in `recent` only.
   */
  private guard(out: NodeJS.WritableStream): void {
    out.on('error', () => {
      if (this.out === out) this.out = { write: () => true } as unknown as NodeJS.WritableStream
    })
  }

  setLevel(level: Level): void {
    this.level = ORDER[level]
  }

  toFile(path: string): void {
    // Appended to without following a link (nothing in the state dir is reached through one).
    const fd = openSync(path, APPEND_FLAGS, 0o600)
    this.file = createWriteStream(path, { fd })
    this.out = this.file
    this.guard(this.file)
  }

  log(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < this.level) return
    let line = `${new Date().toISOString()} ${level} ${msg}`
    if (fields) for (const [k, v] of Object.entries(fields)) line += ` ${k}=${fmtValue(v)}`
    line = redact(line)
    this.recent.push(line)
    if (this.recent.length > 200) this.recent.shift()
    this.out.write(line + '\n')
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.log('debug', msg, fields)
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log('info', msg, fields)
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log('warn', msg, fields)
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log('error', msg, fields)
  }

  close(): Promise<void> {
    const f = this.file
    if (!f) return Promise.resolve()
    return new Promise((resolve) => f.end(resolve))
  }
}

export const log = new Logger((process.env.DESFS_LOG_LEVEL as Level) || 'info')
