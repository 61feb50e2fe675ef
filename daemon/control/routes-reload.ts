// POST /reload on the control socket: re-read the bearer token now (instead of waiting for the file
// watcher or a 401), and re-check the metadata DB file. SQL queries then open the DB afresh (the tree
// follows the DB file on its own: TreeReloader).
import type { ControlServer } from './control.js'
import { log } from '../log.js'
import { dbFileIdentity } from '../catalog/metadata.js'
import type { TokenProvider } from '../token/token.js'

/** What the reload route uses. */
export interface ReloadRouteDeps {
  dbPath: string
  /** The token provider, once the daemon has started it. */
  token(): TokenProvider | undefined
  /** Makes the next SQL queries open the DB file afresh. */
  recycleSql(): void
}

export function registerReloadRoutes(control: ControlServer, d: ReloadRouteDeps): void {
  let known = dbFileIdentity(d.dbPath)
  control.route('POST', '/reload', async () => {
    const token = d.token()
    const tok = token ? await token.reload() : undefined
    const now = dbFileIdentity(d.dbPath)
    const dbChanged = now !== known
    known = now
    if (dbChanged) {
      log.info('metadata DB changed on disk', { db: d.dbPath, present: now !== '' })
      d.recycleSql()
    }
    return {
      token: tok
        ? { source: tok.source, expires: tok.exp ? new Date(tok.exp * 1000).toISOString() : undefined, problem: tok.problem }
        : null,
      db: { path: d.dbPath, present: now !== '', changed: dbChanged },
    }
  })
}
