// POST /reload on the control socket: re-read the bearer token now (instead of waiting for the file
// watcher or a 401), and re-check the metadata DB file. SQL queries then open the DB afresh (the tree
// follows the DB file on its own: TreeReloader).
import type { ControlServer } from './control.js'
import type { Daemon } from './daemon.js'
import { log } from './log.js'
import { dbFileIdentity } from './sql-engine.js'

export function registerReloadRoutes(control: ControlServer, daemon: Daemon): void {
  let known: Promise<string> | string = dbFileIdentity(daemon.config.db)
  control.route('POST', '/reload', async () => {
    const tok = daemon.token ? await daemon.token.reload() : undefined
    const now = await dbFileIdentity(daemon.config.db)
    const dbChanged = now !== (await known)
    known = now
    if (dbChanged) {
      log.info('metadata DB changed on disk', { db: daemon.config.db, present: now !== 'missing' })
      daemon.sql?.recycle()
    }
    return {
      token: tok ? { source: tok.source, expires: tok.exp ? new Date(tok.exp * 1000).toISOString() : undefined, problem: tok.problem } : null,
      db: { path: daemon.config.db, present: now !== 'missing', changed: dbChanged },
    }
  })
}
