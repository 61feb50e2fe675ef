// A Source that serves deterministic bytes from memory and does what a test script says, in this
// process (no sockets): fail a read (after delivering a prefix), or hold it until the test lets it
// go. It records every read it was asked for, and the bytes it had in flight at most.
import { SourceError, type ReadOptions, type Source } from '../../cache/sources/source.js'
import type { Clock } from '../../cache/clock.js'
import type { FileFacts } from '../../cache/sources/source.js'

/** The byte at `pos` of every file a ScriptedSource serves. */
export function byteAt(pos: number): number {
  return (pos * 7 + 3) % 251
}

/** Bytes [start, end) as a ScriptedSource serves them. */
export function expected(start: number, end: number): Buffer {
  const b = Buffer.allocUnsafe(end - start)
  for (let i = 0; i < b.length; i++) b[i] = byteAt(start + i)
  return b
}

/** What one read does; reads beyond the script succeed. */
export interface Step {
  /** Deliver this many bytes of the range first (default: none when failing). */
  deliver?: number
  /** Then fail with this error. */
  fail?: SourceError
  /** Deliver the range with one byte changed (a damaged copy). */
  corrupt?: boolean
}

export interface ReadCall {
  rel: string
  start: number
  end: number
}

export class ScriptedSource implements Source {
  readonly identity: string
  readonly authoritative: boolean = true
  readonly calls: ReadCall[] = []
  /** Bytes of reads started and not yet ended, now and at most. */
  inflightBytes = 0
  maxInflightBytes = 0
  /** While set, every read waits for it before answering (a slow network the test releases). */
  private gate: Promise<void> | undefined
  private openGate: (() => void) | undefined

  constructor(
    readonly name = 'scripted',
    private script: Step[] = [],
    private files = new Map<string, number>(),
  ) {
    this.identity = `scripted:${name}`
  }

  /** Reads wait from now on, until release(). */
  hold(): void {
    this.gate ??= new Promise((res) => {
      this.openGate = res
    })
  }

  release(): void {
    this.openGate?.()
    this.gate = undefined
  }

  /** Scripts the next reads. */
  then(...steps: Step[]): this {
    this.script.push(...steps)
    return this
  }

  locate(rel: string): string {
    return `${this.name}:${rel}`
  }

  async read(rel: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    this.calls.push({ rel, start, end })
    const step = this.script.shift() ?? {}
    this.inflightBytes += end - start
    this.maxInflightBytes = Math.max(this.maxInflightBytes, this.inflightBytes)
    try {
      if (this.gate) await this.gate
      if (opts.signal?.aborted) throw new SourceError('network', 'aborted')
      const n = step.fail ? Math.min(step.deliver ?? 0, end - start) : end - start
      const bytes = expected(start, start + n)
      if (step.corrupt && n > 0) bytes[0] = bytes[0]! ^ 0xff
      if (n > 0) opts.onData(bytes)
      if (step.fail) throw step.fail
    } finally {
      this.inflightBytes -= end - start
    }
  }

  list(): Promise<Map<string, FileFacts> | null> {
    return Promise.resolve(null)
  }

  stat(rel: string): Promise<FileFacts | null> {
    const size = this.files.get(rel)
    return Promise.resolve(size === undefined ? null : { size, mtime: 0, adler32: null })
  }

  close(): Promise<void> {
    return Promise.resolve()
  }
}

/** A scripted site cache: serves bytes only, like cache/sources/site.ts (no facts, not authoritative). */
export class ScriptedSite extends ScriptedSource {
  override readonly authoritative = false
  readonly bytesOnly = true
}

/** A clock whose time moves only when someone sleeps on it (or the test says so); every sleep is recorded. */
export class FakeClock implements Clock {
  readonly sleeps: number[] = []
  constructor(private t = 1_000_000) {}
  now(): number {
    return this.t
  }
  advance(ms: number): void {
    this.t += ms
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    this.sleeps.push(ms)
    this.t += ms
    return Promise.resolve()
  }
}
