// Entry point of the daemon process. `desfs mount` starts it detached with --notify: it then logs to
// the state dir and reports start-up on stdout as JSON lines (progress, ready or error) for the CLI to
// show, and closes stdout once mounted. In the foreground (`desfs mount --foreground`, the demo) it
// logs to stderr and runs until a signal.
import { fstatSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { daemonConfig, resolveSettings, type DaemonConfig } from './config.js'
import { Daemon } from './daemon.js'
import { EXIT, UserError, oneLine } from './errors.js'
import { log } from './log.js'
import { LOG_NAME } from './paths.js'
import { ensurePrivateDir } from './state-dir.js'
import { mountedType } from '../fs/mount.js'
import type { BuildProgress } from '../fs/tree-build.js'
import { FLAGS_ON_STDIN, readFlags } from './daemon-args.js'

export type Notice =
  | { event: 'progress'; progress: BuildProgress }
  | { event: 'ready'; mountpoint: string; files: number; log: string }
  | { event: 'error'; message: string; exitCode: number }

export interface RunOptions {
  /** Report start-up as JSON lines on stdout and log to the state dir (detached mode). */
  notify: boolean
}

/** Stops the daemon when its mount disappears from under it (fusermount -u by hand). */
function watchMount(daemon: Daemon): NodeJS.Timeout {
  const t = setInterval(() => {
    void mountedType(daemon.config.mountpoint).then((type) => {
      if (!type?.startsWith('fuse')) void daemon.stop('the mount was removed from outside').then(() => process.exit(0))
    })
  }, 2000)
  t.unref()
  return t
}

/** True when stdin is a pipe: `desfs mount` gives its detached daemon one, to see it go away. */
function stdinIsPipe(): boolean {
  try {
    return fstatSync(0).isFIFO()
  } catch {
    return false
  }
}

/** Runs a daemon until it is stopped; resolves with the process exit code. */
export async function runDaemon(config: DaemonConfig, opts: RunOptions): Promise<Daemon> {
  // `desfs mount` reads our notices until the mount is up; it may go away first (Ctrl-C, killed).
  let clientGone = false
  const notice = (n: Notice) => {
    if (opts.notify && !clientGone) process.stdout.write(JSON.stringify(n) + '\n')
  }
  log.setLevel(config.logLevel)
  const logFile = join(config.stateDir, LOG_NAME)
  if (opts.notify) {
    ensurePrivateDir(config.stateDir, 'state dir')
    log.toFile(logFile)
  }
  const daemon = new Daemon(config)
  const shutdown = (reason: string, code: number) => {
    void daemon.stop(reason).then(async () => {
      await log.close()
      process.exit(code)
    })
  }
  process.on('SIGINT', () => shutdown('SIGINT', 0))
  process.on('SIGTERM', () => shutdown('SIGTERM', 0))
  process.on('SIGHUP', () => log.info('SIGHUP ignored; use desfs umount to stop'))
  let ready = false
  let stopWatchingClient = (): void => undefined
  if (opts.notify) {
    // Start-up is for the `desfs mount` that asked for it: once it is gone, nobody will learn how it
    // ended, so it is called off (an index build stopped, its partial output removed) rather than
    // left running. Its stdin pipe ends when that client goes, and a notice written after that fails
    // with EPIPE, which must not become an "internal error".
    const gone = (how: string) => {
      if (clientGone) return
      clientGone = true
      if (!ready) shutdown(`desfs mount went away during start-up (${how})`, EXIT.INTERRUPTED)
    }
    process.stdout.on('error', () => gone('its pipe closed'))
    if (stdinIsPipe()) {
      process.stdin.on('error', () => gone('its pipe closed'))
      process.stdin.on('end', () => gone('Ctrl-C or killed'))
      process.stdin.resume()
    }
    stopWatchingClient = () => {
      ready = true
      process.stdin.destroy()
    }
  }
  let failing = false
  process.on('uncaughtException', (err) => {
    // One internal error stops the daemon; errors raised while stopping must not start it again.
    if (failing) return
    failing = true
    log.error('internal error; stopping', { error: err.stack })
    shutdown('internal error', 1)
  })
  let lastNotice = 0
  try {
    await daemon.start({
      onProgress: (p) => {
        if (Date.now() - lastNotice < 200) return
        lastNotice = Date.now()
        notice({ event: 'progress', progress: p })
      },
    })
  } catch (err) {
    await daemon.stop('start-up failed', true)
    throw err
  }
  watchMount(daemon)
  notice({ event: 'ready', mountpoint: config.mountpoint, files: daemon.catalog.index.result.files, log: logFile })
  if (opts.notify) {
    stopWatchingClient()
    if (!clientGone) process.stdout.end()
  }
  return daemon
}

async function main(): Promise<void> {
  // Detached daemons get the CLI's flags as JSON on stdin (never on the command line, which every
  // user can read); the environment is inherited.
  let config: DaemonConfig
  try {
    const flags = process.argv[2] === FLAGS_ON_STDIN ? await readFlags(process.stdin) : {}
    config = daemonConfig(resolveSettings(flags))
    await runDaemon(config, { notify: true })
  } catch (err) {
    const exitCode = err instanceof UserError ? err.exitCode : EXIT.FAILURE
    if (!(err instanceof UserError)) log.error('start-up failed', { error: (err as Error).stack })
    process.stdout.on('error', () => undefined) // `desfs mount` may be gone already
    process.stdout.write(JSON.stringify({ event: 'error', message: oneLine(err), exitCode } satisfies Notice) + '\n')
    await log.close()
    process.exit(exitCode)
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) void main()
