// A lock file for work two processes must not do at once: refreshing a login (the issuer hands out
// a new refresh token on each refresh and kills the whole grant when an old one is used again) and
// appending to a partial DB download.
import { mkdir, open, readFile, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { EXIT, UserError } from './errors.js'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Runs fn holding `<path>.lock` (O_EXCL, holding the owner's pid). A lock whose owner is gone is
 * broken, as is one without a pid (a crash between create and write) older than staleMs; waiting
 * is bounded by waitMs.
 */
export async function withLock<T>(path: string, fn: () => Promise<T>, waitMs = 30_000, staleMs = 120_000): Promise<T> {
  const lock = `${path}.lock`
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const deadline = Date.now() + waitMs
  for (;;) {
    try {
      const fh = await open(lock, 'wx', 0o600)
      await fh.writeFile(String(process.pid))
      await fh.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const owner = Number(await readFile(lock, 'utf8').catch(() => '0'))
    const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? 0)
    if (owner > 0 ? !alive(owner) : age > staleMs) {
      await unlink(lock).catch(() => undefined)
      continue
    }
    if (Date.now() > deadline)
      throw new UserError(`another desfs process (pid ${owner}) holds ${lock}; if none is running, remove that file`, EXIT.UNAVAILABLE)
    await new Promise((r) => setTimeout(r, 100))
  }
  try {
    return await fn()
  } finally {
    await unlink(lock).catch(() => undefined)
  }
}
