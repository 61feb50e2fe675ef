// Telling the kernel that names changed. desfs mounts with long entry/attribute timeouts (archive
// files never change), so after a new tree is swapped in the kernel would go on answering stat() for
// removed files from its dentry cache for up to an hour. libfuse's fix is
// fuse_lowlevel_notify_inval_entry, which fuse-native does not expose; it is nothing but a message
// written to the /dev/fuse descriptor, so desfs writes that message itself. Invalidating the root's
// entries drops every cached path below them (the kernel prunes the whole subtree); files already
// open stay open. The write goes through libuv's thread pool: the kernel may wait for a lookup in
// progress, which needs the JS thread to answer, so writing from the JS thread could deadlock.
import { readdir, readlink, write } from 'node:fs'
import { promisify } from 'node:util'

const writeAsync = promisify(write)
const readdirAsync = promisify(readdir)
const readlinkAsync = promisify(readlink)

/** FUSE_NOTIFY_INVAL_ENTRY, from linux/fuse.h. */
const NOTIFY_INVAL_ENTRY = 3
export const FUSE_ROOT_ID = 1n

/** File descriptors of this process open on /dev/fuse. */
export async function fuseDeviceFds(): Promise<Set<number>> {
  const out = new Set<number>()
  for (const name of await readdirAsync('/proc/self/fd').catch(() => [] as string[])) {
    const link = await readlinkAsync(`/proc/self/fd/${name}`).catch(() => '')
    if (link === '/dev/fuse') out.add(Number(name))
  }
  return out
}

/** The notification message: fuse_out_header{len, error=code, unique=0} + fuse_notify_inval_entry_out + name + NUL. */
export function invalEntryMessage(parent: bigint, name: string): Buffer {
  const n = Buffer.from(name)
  const buf = Buffer.alloc(32 + n.length + 1)
  buf.writeUInt32LE(buf.length, 0)
  buf.writeInt32LE(NOTIFY_INVAL_ENTRY, 4)
  buf.writeBigUInt64LE(0n, 8)
  buf.writeBigUInt64LE(parent, 16)
  buf.writeUInt32LE(n.length, 24)
  buf.writeUInt32LE(0, 28)
  n.copy(buf, 32)
  return buf
}

/**
 * Drops the kernel's cached entries for `names` in the mount's root directory, and everything cached
 * below them. A name the kernel has not cached is not an error (ENOENT from the kernel).
 */
export async function invalidateRootEntries(fd: number, names: Iterable<string>): Promise<{ dropped: number; failed: string[] }> {
  let dropped = 0
  const failed: string[] = []
  for (const name of names) {
    try {
      await writeAsync(fd, invalEntryMessage(FUSE_ROOT_ID, name))
      dropped++
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT') failed.push(`${name}: ${code ?? (err as Error).message}`)
    }
  }
  return { dropped, failed }
}
