// A cache file is never writable through a name outside the cache: `desfs get` has no hardlink mode
// (its copies are reflinks or copies, other inodes), and a cache file that has gained another name
// anyway (a hardlink an older desfs made) is let go of before it is served, so editing the outside
// name cannot change what the mount serves.
import t from 'tap'
import { createHash } from 'node:crypto'
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { BlockStore, cacheKey } from '../cache/block-store.js'
import { Fetcher, newReadPattern } from '../cache/fetcher.js'
import { fetcherOver } from './fakes/fetcher-over.js'
import { MirrorSource } from '../cache/sources/mirror.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { desfs, makeArchive, md5, run, sourceBytes, startDaemon, startServer, tmp } from './helpers.js'

const MiB = 1 << 20

t.test('desfs get refuses --mode hardlink; a copy shares no inode with the cache', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 2, hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const env = { ...process.env, DESFS_CONFIG: join(d.stateDir, 'no-config'), DESFS_STATE_DIR: d.stateDir }
  const file = a.manifest.files.find((f) => f.kind === 'red_immask')!.rel
  const base = tmp(t)

  const hard = await desfs(['get', '--desdata', join(base, 'hard'), '--mode', 'hardlink', file], { env, timeoutMs: 60_000 })
  t.equal(hard.code, 2, `--mode hardlink is a usage error (${hard.stderr.trim()})`)
  t.match(
    hard.stderr,
    /^desfs: --mode hardlink is no longer offered: .*editing it changed what the mount serves; use --mode copy .* or --mode symlink .*\n$/,
    'one line: why, and what to use',
  )

  const copy = await desfs(['get', '--desdata', join(base, 'copy'), file], { env, timeoutMs: 60_000 })
  t.equal(copy.code, 0, copy.stderr)
  const placed = join(base, 'copy', file)
  const cacheFile = join(d.cacheDir, 'data', cacheKey(file).slice(0, 2), cacheKey(file))
  t.not(statSync(placed).ino, statSync(cacheFile).ino, 'the copy is another inode')
  t.equal(statSync(cacheFile).nlink, 1, 'the cache file has one name')
  // Root ignores file modes: edit the copy in place, then read the file through the mount.
  const fd = openSync(placed, 'r+')
  writeSync(fd, Buffer.from('EDITED BY HAND'), 0, 14, 0)
  closeSync(fd)
  const r = await run('md5sum', [join(d.mnt, file)], { timeoutMs: 60_000 })
  t.equal(r.stdout.slice(0, 32), md5(sourceBytes(a, file)), 'the mount still serves the archive bytes')
})

t.test('a cache file that gained another name is let go of, not served', async (t) => {
  const dir = tmp(t)
  const mirror = join(dir, 'mirror')
  mkdirSync(join(mirror, 'OPS'), { recursive: true })
  const size = 8 * MiB
  const data = Buffer.alloc(size)
  for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i)
  writeFileSync(join(mirror, 'OPS/f.fits'), data)
  // linkCheckMs 0: look at the link count on every read (the daemon looks once a second per file).
  const store = new BlockStore(join(dir, 'cache'), { limit: 64 * MiB, minFree: 0, cleanupDelayMs: 3_600_000, linkCheckMs: 0 })
  t.teardown(() => store.close())
  const sources = new SourceSet([new MirrorSource(mirror)])
  const f = store.file('OPS/f.fits', size, null)
  store.hold(f)
  t.teardown(() => store.release(f))
  const readAll = async (fetcher: Fetcher): Promise<string> => {
    const pattern = newReadPattern()
    const hash = createHash('md5')
    const buf = Buffer.allocUnsafe(128 << 10)
    for (let pos = 0; pos < size; pos += buf.length)
      hash.update(buf.subarray(0, await fetcher.readInto(f, pos, buf.length, buf, () => true, pattern)))
    return hash.digest('hex')
  }
  const first = fetcherOver(sources, store)
  t.equal(await readAll(first), md5(data), 'the first read is right')
  await first.fetchWhole(f) // waits until every block is stored
  t.ok(f.complete, 'and the whole file is in the cache')

  // What `desfs get --mode hardlink` of an older desfs left: another name, editable by its owner.
  const outside = join(dir, 'DESDATA-copy.fits')
  linkSync(store.dataPath(f.key), outside)
  const fd = openSync(outside, 'r+')
  writeSync(fd, Buffer.alloc(MiB, 0x58), 0, MiB, 0)
  closeSync(fd)

  // A new fetcher: nothing of the file in memory, so reads come from the cache file.
  const second = fetcherOver(sources, store)
  t.equal(await readAll(second), md5(data), 'after the outside name was edited the file still reads right')
  t.ok(second.stats.bytesFetched >= size, 'because it was fetched again')
  t.equal(statSync(store.dataPath(f.key)).nlink, 1, 'the cache file has one name again')
  t.equal(readFileSync(outside).subarray(0, 4).toString(), 'XXXX', 'the outside copy is left as its owner made it')
})
