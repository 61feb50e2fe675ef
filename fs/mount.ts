// Mounting and unmounting with fuse-native, plus what fuse-native leaves to us: checking the
// mountpoint, recovering a stale mount left by a crashed daemon (ENOTCONN), and the kernel options
// desfs wants (read-only, kernel page cache kept across opens, long attribute/entry timeouts since
// archive files never change; no direct_io, so astropy can memory-map).
import Fuse, { type Ops } from 'fuse-native'
import { execFile } from 'node:child_process'
import { readFile, stat } from 'node:fs/promises'
import { promisify } from 'node:util'
import { UserError } from '../daemon/errors.js'
import { log } from '../daemon/log.js'
import { fuseDeviceFds, invalidateRootEntries } from './kernel-notify.js'

const exec = promisify(execFile)

export interface MountOptions {
  allowOther: boolean
  /** Deadline our own operations keep; fuse-native's backstop is set beyond it. */
  deadlineMs: number
}

/** Entry and attribute timeouts (seconds). Files never change; the tree changes only on DB reload. */
export const ENTRY_TIMEOUT = 3600
export const ATTR_TIMEOUT = 86400

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

export async function fusermountUnmount(dir: string): Promise<void> {
  try {
    await exec('fusermount', ['-uz', dir], { timeout: 10_000 })
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string }
    if (e.code === 'ENOENT') throw new UserError('fusermount not found: install FUSE (Debian: apt-get install fuse libfuse2)')
    throw new UserError(`cannot unmount ${dir}: ${(e.stderr || e.message).trim()}`)
  }
}

/**
 * Checks the mountpoint before mounting: it must be an existing directory; a dead FUSE mount left by a
 * crashed daemon is unmounted; a live one is refused. Never called once our own mount is up.
 */
export async function prepareMountpoint(dir: string): Promise<void> {
  const type = await mountedType(dir)
  try {
    const st = await stat(dir)
    if (type?.startsWith('fuse')) throw new UserError(`${dir} is already mounted (${type}): run desfs umount ${dir} first`)
    if (!st.isDirectory()) throw new UserError(`mountpoint ${dir} is not a directory: choose an empty directory`)
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

export class Mount {
  readonly dir: string
  private fuse: Fuse | undefined
  /** This mount's /dev/fuse descriptor (opened by libfuse), for invalidation messages. */
  private deviceFd: number | undefined

  constructor(dir: string) {
    this.dir = dir
  }

  async mount(ops: Ops, opts: MountOptions): Promise<void> {
    await prepareMountpoint(this.dir)
    const fdsBefore = await fuseDeviceFds()
    const backstop = opts.deadlineMs + 15_000
    const fuse = new Fuse(this.dir, ops, {
      // fuse-native passes unknown options through `subtype`; it maps neither `ro` nor the FUSE
      // timeouts' zero values, so they are spelled out here.
      subtype: 'desfs,ro',
      fsname: 'desfs',
      kernelCache: true,
      entryTimeout: ENTRY_TIMEOUT,
      attrTimeout: ATTR_TIMEOUT,
      allowOther: opts.allowOther,
      defaultPermissions: true,
      timeout: { default: backstop },
    })
    await new Promise<void>((resolve, reject) => {
      fuse.mount((err) => {
        if (!err) return resolve()
        const msg = err.message === 'fuse failed' ? 'the kernel refused the mount (is /dev/fuse available and fusermount installed? see `desfs doctor`)' : err.message
        reject(new UserError(`cannot mount ${this.dir}: ${msg}`))
      })
    })
    this.fuse = fuse
    const fds = [...(await fuseDeviceFds())].filter((fd) => !fdsBefore.has(fd))
    this.deviceFd = fds.length === 1 ? fds[0] : undefined
    if (this.deviceFd === undefined) log.warn('cannot find the mount\'s /dev/fuse descriptor; after a tree swap, stat may see removed files until the kernel forgets them', { found: fds.length })
  }

  /** Makes the kernel forget cached names under these root entries (after the tree changed). */
  async invalidate(rootNames: Iterable<string>): Promise<void> {
    if (this.deviceFd === undefined || !this.fuse) return
    const r = await invalidateRootEntries(this.deviceFd, rootNames)
    if (r.failed.length) log.warn('the kernel refused to forget some cached names', { failed: r.failed.slice(0, 5).join('; ') })
  }

  async unmount(): Promise<void> {
    const fuse = this.fuse
    if (!fuse) return
    this.fuse = undefined
    this.deviceFd = undefined
    await new Promise<void>((resolve) => {
      fuse.unmount((err) => {
        if (err) log.warn('unmount failed; trying a lazy unmount', { mountpoint: this.dir, error: err.message })
        resolve()
      })
    })
    if (await mountedType(this.dir)) await fusermountUnmount(this.dir).catch(() => undefined)
  }
}
