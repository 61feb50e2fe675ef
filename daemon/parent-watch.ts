// Child processes of the daemon (SQL query processes, the tree index builder) end when the daemon
// does, however it ended: after a kill -9 nothing closes them, and a query process left running a
// long aggregate, or a builder writing an index nobody will open, would go on for good.
//
// The watch runs in a worker thread: those children spend their time in long synchronous SQLite
// calls that keep their own event loop from running, so neither an IPC 'disconnect' nor a timer on
// the main thread would be noticed until the call returned. The thread checks the parent pid every
// interval; once the process has been handed to another parent (init or a subreaper), it removes the
// partial output it was told about and SIGKILLs the whole process.
import { Worker } from 'node:worker_threads'

export interface ParentWatchOptions {
  /** How often the parent pid is checked, ms. */
  intervalMs?: number
  /** Files this process may leave half-written: removed before it ends (names ending in `suffix` in `dir`). */
  partial?: { dir: string; suffix: string }
}

// CommonJS, evaluated in the worker: it shares nothing with the main thread but these few lines.
const WATCH = `
const { workerData } = require('node:worker_threads')
const { readdirSync, rmSync } = require('node:fs')
const { join } = require('node:path')
const { parent, intervalMs, partial } = workerData
setInterval(() => {
  if (process.ppid === parent) return
  if (partial) {
    try {
      for (const name of readdirSync(partial.dir)) if (name.endsWith(partial.suffix)) rmSync(join(partial.dir, name), { force: true })
    } catch {}
  }
  process.kill(process.pid, 'SIGKILL')
}, intervalMs)
`

/** Environment variable through which a parent tells its child its pid (see childEnv). */
const PARENT_PID_ENV = 'DESFS_PARENT_PID'

/** The environment for a child that calls exitWithParent: this process's, plus its pid. */
export function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, [PARENT_PID_ENV]: String(process.pid) }
}

/**
 * Ends this process when its parent is gone: on an IPC disconnect (when the event loop runs),
 * and from a watch thread within `intervalMs` otherwise. The thread does not keep the process alive.
 */
export function exitWithParent(opts: ParentWatchOptions = {}): void {
  // The parent's pid as the parent gave it: a parent killed while this process was still starting
  // has already handed it to init, so process.ppid now would name the wrong one.
  const parent = Number(process.env[PARENT_PID_ENV]) || process.ppid
  const worker = new Worker(WATCH, {
    eval: true,
    workerData: { parent, intervalMs: opts.intervalMs ?? 500, partial: opts.partial },
    resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 1 },
  })
  worker.unref()
  worker.on('error', () => undefined) // the watch is a backstop; its failure must not end the process
  // The channel closes when the parent dies, or when this process closed it after its last message:
  // either way there is nothing left to do. (While a synchronous call runs, only the thread sees it.)
  if (process.channel) process.once('disconnect', () => process.exit())
}
