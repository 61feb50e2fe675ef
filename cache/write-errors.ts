// Failed writes to the cache, logged at most once every 10 s (a full disk fails every block written
// meanwhile), with the fix: for a full disk, free space or lower the bound; reads go on from memory.
import { log } from '../daemon/log.js'

const LOG_EVERY_MS = 10_000

export class WriteErrorLog {
  private last = 0

  log(relPath: string | undefined, err: NodeJS.ErrnoException, what: string): void {
    const now = Date.now()
    if (now - this.last <= LOG_EVERY_MS) return
    this.last = now
    const full = err.code === 'ENOSPC' || /SQLITE_FULL|disk is full/i.test(String(err.code) + err.message)
    const hint = full
      ? 'the cache disk is full: free space or lower --cache-size; reads are served from memory meanwhile'
      : 'check the cache dir'
    log.error(`cannot write to ${what}`, { ...(relPath ? { path: relPath } : {}), code: err.code, error: err.message, fix: hint })
  }
}
