// The base of the Source wrappers (with-retry.ts, stall-guard.ts, counted.ts): it stands for the
// source it wraps (same name, identity and kind, so logs, metrics and the set's health see through
// it) and passes every call on; a wrapper overrides the calls its policy applies to.
import type { FileFacts, ReadOptions, Source } from './source.js'

export class SourceWrapper implements Source {
  readonly name: string
  readonly identity: string
  readonly authoritative: boolean
  readonly bytesOnly: boolean | undefined

  constructor(protected readonly inner: Source) {
    this.name = inner.name
    this.identity = inner.identity
    this.authoritative = inner.authoritative
    this.bytesOnly = inner.bytesOnly
  }

  locate(relPath: string): string {
    return this.inner.locate(relPath)
  }

  read(relPath: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    return this.inner.read(relPath, start, end, opts)
  }

  list(relDir: string, signal?: AbortSignal): Promise<Map<string, FileFacts> | null> {
    return this.inner.list(relDir, signal)
  }

  stat(relPath: string, signal?: AbortSignal): Promise<FileFacts | null> {
    return this.inner.stat(relPath, signal)
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}
