// desfs mount / desfs umount.
import { spawn } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { resolve, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { settingOptions, settingFlags, type Command } from './command.js'
import { call, socketPath } from './client.js'
import { ProgressBar } from './progress.js'
import { daemonConfig, resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { LOG_NAME } from '../daemon/paths.js'
import { ensurePrivateDir } from '../daemon/state-dir.js'
import { APPEND_FLAGS } from '../daemon/safe-write.js'
// The daemon and FUSE modules load only when needed: every other command starts faster without them.
import type { Notice } from '../daemon/main.js'
import { FLAGS_ON_STDIN } from '../daemon/daemon-args.js'
const daemonMain = () => import('../daemon/main.js')
const fuseMount = () => import('../fs/mount.js')

const MOUNT_SETTINGS = [
  'db',
  'archive',
  'cache_dir',
  'state_dir',
  'cache_size',
  'pin_size',
  'cache_min_free',
  'sources',
  'mirror_dir',
  'site_cache',
  'site_token_file',
  's3_url',
  's3_endpoint',
  's3_region',
  'read_timeout',
  'connect_timeout',
  'stall_timeout',
  'min_rate',
  'ca_file',
  'token_file',
  'tree_query',
  'index_timeout',
  'sql_timeout',
  'passthrough',
  'allow_other',
  'log_level',
]

export const mountCommand: Command = {
  name: 'mount',
  summary: 'Mount the DES archive read-only at MOUNTPOINT (default $DESDATA). Runs in the background unless --foreground.',
  usage: 'desfs mount [MOUNTPOINT] [options]',
  options: {
    foreground: { type: 'boolean', short: 'f', help: 'stay in the foreground and log to stderr' },
    ...settingOptions(MOUNT_SETTINGS),
  },
  details:
    'Settings come from flags, then the environment, then ~/.config/desfs/config (key = value), then defaults;\n`desfs status` shows each value and where it came from.',
  async run({ flags, positionals }) {
    if (positionals.length > 1) throw new UserError('desfs mount takes one MOUNTPOINT', EXIT.USAGE)
    const sflags = settingFlags(flags)
    if (positionals[0]) sflags.mountpoint = positionals[0]
    const config = daemonConfig(resolveSettings(sflags))
    if (flags.foreground) {
      await (await daemonMain()).runDaemon(config, { notify: false })
      await new Promise(() => undefined) // until a signal stops the daemon
      return EXIT.OK
    }
    ensurePrivateDir(config.stateDir, 'state dir')
    const logPath = join(config.stateDir, LOG_NAME)
    // Appended to without following a link (nothing in the state dir is reached through one).
    let logFd: number
    try {
      logFd = openSync(logPath, APPEND_FLAGS, 0o600)
    } catch (err) {
      throw new UserError(
        `cannot open the log ${logPath} (${(err as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symbolic link: remove it' : (err as Error).message})`,
      )
    }
    const daemonScript = fileURLToPath(new URL('../daemon/main.js', import.meta.url))
    // The settings go over the daemon's stdin, not the command line (/proc/PID/cmdline is readable by
    // every user), as one line; the pipe then stays open: the daemon watches it until it is mounted,
    // and when this process goes away (Ctrl-C, killed) the pipe ends and the daemon calls start-up off.
    const child = spawn(process.execPath, [daemonScript, FLAGS_ON_STDIN], { detached: true, stdio: ['pipe', 'pipe', logFd] })
    closeSync(logFd)
    child.stdin!.on('error', () => undefined) // a daemon that died at once: its exit is reported below
    child.stdin!.write(JSON.stringify(sflags) + '\n')
    const bar = new ProgressBar('building the tree index')
    let cancelled = false
    const result = await new Promise<Notice | undefined>((done) => {
      let last: Notice | undefined
      process.once('SIGINT', () => {
        cancelled = true
        bar.done()
        process.stderr.write('desfs: mount cancelled; the daemon stops its start-up\n')
        child.stdin!.destroy()
        // Normally it is gone within a second; the tree index builder is killed, not waited for.
        setTimeout(() => done(undefined), 15_000).unref()
      })
      const lines = createInterface({ input: child.stdout! })
      lines.on('line', (line) => {
        let n: Notice
        try {
          n = JSON.parse(line) as Notice
        } catch {
          return
        }
        if (n.event === 'progress') bar.update(n.progress.rows, n.progress.total)
        else last = n
      })
      lines.on('close', () => done(last))
      child.on('exit', () => setTimeout(() => done(last), 50))
    })
    bar.done()
    child.stdin?.destroy()
    child.stdout?.destroy()
    child.unref()
    if (result?.event === 'ready') {
      // (Also after a Ctrl-C that came just as the mount was up: the daemon then stays.)
      process.stdout.write(`desfs: mounted ${result.mountpoint} (${result.files} files; log ${result.log})\n`)
      return EXIT.OK
    }
    if (cancelled) return EXIT.INTERRUPTED
    if (result?.event === 'error') throw new UserError(result.message, result.exitCode)
    throw new UserError(`the daemon exited during start-up; see ${logPath}`, EXIT.FAILURE)
  },
}

export const umountCommand: Command = {
  name: 'umount',
  summary: 'Unmount MOUNTPOINT (default $DESDATA) and stop its daemon.',
  usage: 'desfs umount [MOUNTPOINT] [--state-dir DIR]',
  options: settingOptions(['state_dir']),
  async run({ flags, positionals }) {
    const settings = resolveSettings({ ...settingFlags(flags), mountpoint: positionals[0] })
    const mnt = settings.get('mountpoint')!.value
    if (!mnt) throw new UserError('desfs umount: give the MOUNTPOINT or set DESDATA', EXIT.USAGE)
    const dir = resolve(mnt)
    const sock = socketPath(resolve(settings.get('state_dir')!.value!))
    let status: { mountpoint?: string } | undefined
    try {
      status = await call<{ mountpoint: string }>(sock, 'GET', '/status', undefined, { timeoutMs: 5000 })
    } catch {
      status = undefined
    }
    if (status?.mountpoint === dir) {
      await call(sock, 'POST', '/shutdown', undefined, { timeoutMs: 5000 })
      for (let i = 0; i < 150; i++) {
        if (!(await (await fuseMount()).mountedType(dir))?.startsWith('fuse')) {
          process.stdout.write(`desfs: unmounted ${dir}\n`)
          return EXIT.OK
        }
        await new Promise((r) => setTimeout(r, 100))
      }
      throw new UserError(`the daemon did not unmount ${dir} within 15s; try fusermount -uz ${dir}`, EXIT.FAILURE)
    }
    const { mountedType, fusermountUnmount } = await fuseMount()
    if ((await mountedType(dir))?.startsWith('fuse')) {
      await fusermountUnmount(dir)
      process.stdout.write(`desfs: unmounted ${dir} (no daemon of this state dir answered; lazy unmount)\n`)
      return EXIT.OK
    }
    throw new UserError(`${dir} is not mounted`, EXIT.FAILURE)
  },
}
