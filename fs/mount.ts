// Mounting and unmounting through the native plane (fs/native.ts), and what comes around it:
// checking the mountpoint first (so a bad one gets a line naming the real cause), recovering a stale
// mount left by a crashed daemon (ENOTCONN), a watchdog that unmounts a root mount if the daemon
// dies (fusermount3's auto_unmount does this for user mounts), and the mount's read-ahead raised so
// buffered reads come to the plane in 1 MiB requests. Kernel options: read-only, page cache kept
// across opens, long entry/attribute timeouts (archive files never change), no direct_io (astropy
// memory-maps), passthrough of complete cache files where the kernel and privileges allow.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { readFile, readdir, realpath, stat, writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { UserError } from '../daemon/errors.js'
import { log } from '../daemon/log.js'
import { native, type Dispatch, type NativeAddon, type Plane, type PlaneStats } from './native.js'

const exec = promisify(execFile)

export interface MountOptions {
  allowOther: boolean
  /** Deadline our own operations keep; the native backstop is set beyond it. */
  deadlineMs: number
  mountTimeMs: number
  /** Worker threads taking requests off the device. */
  threads?: number
  /** Try FUSE passthrough for complete cache files (root, Linux 6.9+). */
  passthrough?: boolean
  /** Read-ahead's step and largest window (the fetcher's): reads the plane serves are told at that grain. */
  readAhead: { stepBytes: number; windowBytes: number }
}

/** Entry and attribute timeouts (seconds). Files never change; the tree changes only on DB reload. */
export const ENTRY_TIMEOUT = 3600
export const ATTR_TIMEOUT = 86400
/**
 * Read-ahead of the mount's BDI: buffered reads reach the plane in requests up to this large. The
 * kernel's first window at the start of a file grows with it (a 32 KiB read became 128 KiB at 1 MiB,
 * 64 KiB at 256 KiB), so a header survey paid for the larger one on every file. 256 KiB keeps that
 * down and still lets the plane answer a sequential reader's requests from blocks the daemon's own
 * read-ahead fetched in MiBs; complete files are read through passthrough, with the cache disk's own
 * read-ahead, whatever this says.
 */
const READ_AHEAD_KB = 256

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** The file system type mounted at `dir` according to /proc/self/mountinfo, if any. */
export async function mountedType(dir: string): Promise<string | undefined> {
  let text: string
  try {
    text = await readFile('/proc/self/mountinfo', 'utf8')
  } catch {
    return undefined
  }
  let found: string | undefined
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (!left || !right) continue
    const mnt = unescapeMountinfo(left.split(' ')[4] ?? '')
    if (mnt === dir) found = right.split(' ')[0]
  }
  return found
}

/** Lazily unmounts a FUSE mount: fusermount3 for a user's, umount for root (who may lack fuse3). */
export async function fusermountUnmount(dir: string): Promise<void> {
  const [cmd, args] = process.getuid?.() === 0 ? ['umount', ['-l', dir]] : ['fusermount3', ['-uz', dir]]
  try {
    await exec(cmd, args, { timeout: 10_000 })
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string }
    if (e.code === 'ENOENT') throw new UserError(`${cmd} not found: install FUSE 3 (Debian: apt-get install fuse3)`)
    throw new UserError(`cannot unmount ${dir}: ${(e.stderr || e.message).trim()}`)
  }
}

/** Places no FUSE mount belongs: the root, and the kernel's own pseudo file systems. */
const FORBIDDEN = ['/proc', '/sys', '/dev']

/**
 * Checks the mountpoint before mounting: it must be an existing, empty directory outside /proc, /sys
 * and /dev, and not /; a dead FUSE mount left by a crashed daemon is unmounted; a live one is refused.
 * Never called once our own mount is up.
 */
export async function prepareMountpoint(dir: string): Promise<void> {
  const type = await mountedType(dir)
  try {
    const st = await stat(dir)
    if (type?.startsWith('fuse')) throw new UserError(`${dir} is already mounted (${type}): run desfs umount ${dir} first`)
    if (!st.isDirectory()) throw new UserError(`mountpoint ${dir} is not a directory: choose an empty directory`)
    const real = await realpath(dir)
    if (real === '/') throw new UserError(`cannot mount on /: choose an empty directory such as ~/DESDATA`)
    const under = FORBIDDEN.find((f) => real === f || real.startsWith(f + '/'))
    if (under)
      throw new UserError(
        `cannot mount on ${dir} (${real} is inside ${under}, a kernel file system): choose an empty directory such as ~/DESDATA`,
      )
    const names = await readdir(dir)
    if (names.length > 0)
      throw new UserError(
        `mountpoint ${dir} is not empty (${names.length} entries, e.g. ${names[0]}): the mount would hide them; choose an empty directory`,
      )
  } catch (err) {
    if (err instanceof UserError) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN' || (type?.startsWith('fuse') && code !== 'ENOENT')) {
      log.warn('found a stale mount left by a crashed daemon; unmounting it', { mountpoint: dir })
      await fusermountUnmount(dir)
      return prepareMountpoint(dir)
    }
    if (code === 'ENOENT') throw new UserError(`mountpoint ${dir} does not exist: create it with mkdir -p ${dir}`)
    if (code === 'EACCES') throw new UserError(`cannot access mountpoint ${dir}: check its permissions`)
    throw new UserError(`cannot use mountpoint ${dir}: ${(err as Error).message}`)
  }
}

/**
 * A watchdog for a root mount: a shell waiting on a pipe only this process holds. When the daemon
 * dies, however it dies, the pipe closes and the shell unmounts (lazily: the kernel has already
 * aborted the connection, so readers get an error, never a hang; the unmount clears the path).
 */
function startWatchdog(dir: string): ChildProcess {
  const child = spawn('/bin/sh', ['-c', 'read _ ; exec umount -l -- "$0" 2>/dev/null', dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  })
  child.on('error', (err) => log.warn('cannot start the unmount watchdog; a crash would leave a dead mount', { error: err.message }))
  child.unref()
  ;(child.stdin as unknown as { unref?: () => void })?.unref?.()
  return child
}

export class Mount {
  readonly dir: string
  private addon: NativeAddon | undefined
  private plane: Plane | undefined
  private watchdog: ChildProcess | undefined

  constructor(dir: string) {
    this.dir = dir
  }

  /** Mounts; jobs for JavaScript go to `dispatch`. Returns the plane for replies. */
  async mount(dispatch: Dispatch, opts: MountOptions): Promise<{ addon: NativeAddon; plane: Plane }> {
    await prepareMountpoint(this.dir)
    const addon = native()
    let plane: Plane
    try {
      plane = addon.mount(
        this.dir,
        {
          allowOther: opts.allowOther,
          entryTimeout: ENTRY_TIMEOUT,
          attrTimeout: ATTR_TIMEOUT,
          mountTimeMs: opts.mountTimeMs,
          // Beyond our own deadline: it answers only when the event loop itself is stuck.
          backstopMs: opts.deadlineMs + 15_000,
          threads: opts.threads ?? 4,
          passthrough: opts.passthrough ?? true,
          uid: process.getuid?.() ?? 0,
          gid: process.getgid?.() ?? 0,
          readSeenStep: opts.readAhead.stepBytes,
          readSeenAhead: opts.readAhead.windowBytes,
        },
        dispatch,
      )
    } catch (err) {
      throw new UserError(`cannot mount ${this.dir}: ${(err as Error).message}`)
    }
    this.addon = addon
    this.plane = plane
    const st = addon.stats(plane)
    if (st.rootMount) this.watchdog = startWatchdog(this.dir)
    await this.raiseReadAhead(st)
    return { addon, plane }
  }

  /** Root may raise the mount's read-ahead (INIT can only lower it) from the kernel's 128 KiB to READ_AHEAD_KB. */
  private async raiseReadAhead(st: PlaneStats): Promise<void> {
    if (process.getuid?.() !== 0 || (!st.devMajor && !st.devMinor)) return
    await writeFile(`/sys/class/bdi/${st.devMajor}:${st.devMinor}/read_ahead_kb`, String(READ_AHEAD_KB)).catch((err) =>
      log.debug("cannot raise the mount's read-ahead", { error: (err as Error).message }),
    )
  }

  stats(): PlaneStats | undefined {
    return this.addon && this.plane ? this.addon.stats(this.plane) : undefined
  }

  /** Makes the plane forget every listing and name (a new tree is in service). */
  forgetTree(): void {
    if (this.addon && this.plane) this.addon.forgetTree(this.plane)
  }

  /** Makes the kernel forget cached names under these root entries (after the tree changed). */
  async invalidate(rootNames: Iterable<string>): Promise<void> {
    if (!this.addon || !this.plane) return
    const r = await this.addon.invalidate(this.plane, [...rootNames])
    if (r.failed) log.warn('the kernel refused to forget some cached names', { failed: r.failed })
  }

  async unmount(): Promise<void> {
    const { addon, plane } = this
    if (!addon || !plane) return
    this.addon = undefined
    this.plane = undefined
    this.watchdog?.kill('SIGKILL')
    this.watchdog = undefined
    addon.unmount(plane)
    if (await mountedType(this.dir)) await fusermountUnmount(this.dir).catch(() => undefined)
  }
}
