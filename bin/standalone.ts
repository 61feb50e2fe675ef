// The fetch engine without a daemon, for `desfs get` when nothing is mounted: the same sources, block
// cache and whole-file fetch the daemon uses, opened on the configured cache dir for one command.
// Sizes and checksums come from a HEAD per file (no tree index is needed for a list of paths).
import type { DaemonConfig } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { ensurePrivateDir } from '../daemon/state-dir.js'
import { log } from '../daemon/log.js'
import { TokenProvider } from '../daemon/token/token.js'
import type { FetchDeps } from '../daemon/jobs/sync.js'
import { buildSources, openReadPath } from '../cache/setup.js'

export async function withStandaloneEngine<T>(c: DaemonConfig, fn: (deps: FetchDeps) => Promise<T>): Promise<T> {
  // A command, not a daemon: only warnings and errors reach the terminal unless asked otherwise.
  if (!process.env.DESFS_LOG_LEVEL) log.setLevel('warn')
  ensurePrivateDir(c.cacheDir, 'cache dir')
  const token = new TokenProvider(c.tokenFile ? { ...process.env, DESFS_TOKEN_FILE: c.tokenFile } : process.env)
  await token.reload()
  const sources = buildSources(c, token)
  let read
  try {
    read = await openReadPath(c, sources)
  } catch (err) {
    await sources.close()
    if (err instanceof UserError && /in use by another desfs daemon/.test(err.message)) {
      throw new UserError(
        `${err.message.split(':')[0]}; its daemon is not answering on this state dir: pass the same --state-dir, or stop it`,
        EXIT.UNAVAILABLE,
      )
    }
    throw err
  }
  const { store, fetcher } = read
  const deps: FetchDeps = {
    async facts(rel) {
      const f = await sources.stat(rel)
      if (!f) throw new Error('not in the archive (HTTP 404)')
      return f
    },
    async fetchWhole(rel, facts, signal, onBytes) {
      const file = store.file(rel, facts.size, facts.adler32)
      const fetched = await fetcher.fetchWhole(file, signal, onBytes)
      return { fetched, cacheFile: file.dataPath }
    },
    async evict(rel) {
      await store.evict([rel])
    },
    locate: (rel) => sources.locate(rel),
  }
  try {
    return await fn(deps)
  } finally {
    await store.close()
    await sources.close()
    await token.close()
  }
}
