// Jobs the plane sends JavaScript that nobody waits for (fs/ops.ts): an open the plane answered
// itself, a read it served itself, a release. In this process, with a fake addon and fakes of the
// tree and the cache: a failure in one is logged and counted, not lost, and nothing is replied.
import t from 'tap'
import { createOps } from '../fs/ops.js'
import { JOB, type NativeAddon, type Plane } from '../fs/native.js'
import type { Tree } from '../fs/tree.js'
import type { FileHandles } from '../cache/file-handle.js'
import { log } from '../daemon/log.js'

t.test('a job with no request that fails is logged and counted; a read the plane served moves its handle on', async (t) => {
  const seen: [number, number][] = []
  let broken = false
  const handle = {
    rel: 'OPS/a.fits',
    file: { key: 'a', has: () => true },
    readSeen: (pos: number, len: number) => {
      if (broken) throw new Error('read-ahead broke')
      seen.push([pos, len])
    },
    close: () => true,
  }
  const tree = { resolveNow: () => ({ kind: 'file', rel: 'OPS/a.fits', facts: { size: 100, adler32: null } }) } as unknown as Tree
  const files = { file: () => handle.file, open: () => handle } as unknown as FileHandles
  const replies: string[] = []
  const addon = new Proxy({}, { get: (_o, name) => () => void replies.push(String(name)) }) as unknown as NativeAddon
  const ops = createOps({ tree, files, cacheDir: '/tmp', deadlineMs: 1000, locate: (r) => r, mountTime: 0 })
  ops.bind(addon, {} as Plane)

  ops.dispatch(JOB.OPENED, 0, '/OPS/a.fits', 7, 0, 0, null, 1)
  ops.dispatch(JOB.READ_SEEN, 0, null, 7, 1 << 20, 1 << 19, null, 0)
  t.same(seen, [[1 << 20, 1 << 19]], "the handle's read-ahead heard of the read")
  t.equal(ops.stats.ops.read_seen, 1, 'counted as read_seen')

  const from = log.recent.length
  broken = true
  ops.dispatch(JOB.READ_SEEN, 0, null, 7, 2 << 20, 1 << 19, null, 0)
  const said = log.recent.slice(from).join('\n')
  t.match(said, /read_seen failed with an internal error: EIO.*read-ahead broke/s, `logged: ${said}`)
  t.equal(ops.stats.errors.read_seen, 1, 'and counted as an error of read_seen')
  t.same(replies, [], 'no reply to the plane: nobody waits for these jobs')
})
