// Read-ahead when the cache cannot store anything (full of pinned files): blocks fetched ahead live
// only in the fetcher's small memory of recent blocks, so a window wider than that memory fetches
// blocks that are dropped before the reader gets to them, and fetched again. First the fetcher in
// this process over a local mirror (counting the bytes the source served), then a mount (counting
// the bytes the archive server sent).
import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BlockStore } from '../cache/block-store.js'
import { newReadPattern } from '../cache/fetcher.js'
import { fetcherOver } from './fakes/fetcher-over.js'
import { MirrorSource } from '../cache/sources/mirror.js'
import { SourceSet } from '../cache/sources/source-set.js'
import type { ReadOptions, Source } from '../cache/sources/source.js'
import { adler32 } from '../cache/adler32.js'
import { desfs, makeArchive, md5, run, sourceBytes, startDaemon, startServer, tmp } from './helpers.js'

const MiB = 1 << 20

/** Deterministic bytes that differ from block to block (so a block served in the wrong place shows). */
function content(size: number): Buffer {
  const b = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i)
  return b
}

/** A source that counts the bytes it served and can say when no read is in progress. */
class CountingSource implements Source {
  readonly name = 'counting'
  readonly authoritative = true
  served = 0
  private active = 0
  private idleWaiters: (() => void)[] = []
  constructor(private inner: Source) {}
  get identity(): string {
    return this.inner.identity
  }
  locate(rel: string): string {
    return this.inner.locate(rel)
  }
  async read(rel: string, start: number, end: number, opts: ReadOptions): Promise<void> {
    this.active++
    try {
      await this.inner.read(rel, start, end, {
        ...opts,
        onData: (c) => {
          this.served += c.length
          opts.onData(c)
        },
      })
    } finally {
      if (--this.active === 0) for (const w of this.idleWaiters.splice(0)) w()
    }
  }
  /** Resolves once no read is in progress (at once when none is). */
  idle(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((r) => this.idleWaiters.push(r))
  }
  list(): Promise<null> {
    return Promise.resolve(null)
  }
  stat(): Promise<null> {
    return Promise.resolve(null)
  }
  close(): Promise<void> {
    return Promise.resolve()
  }
}

t.test('with nothing evictable, a sequential read fetches each byte about once', async (t) => {
  const dir = tmp(t, 'desfs-rafull-')
  const mirror = join(dir, 'mirror')
  mkdirSync(join(mirror, 'OPS'), { recursive: true })
  const size = 64 * MiB
  const data = content(size)
  writeFileSync(join(mirror, 'OPS/big.fits'), data)
  const store = new BlockStore(join(dir, 'cache'), {
    limit: 8 * MiB,
    pinLimit: 8 * MiB,
    blockSize: MiB,
    minFree: 0,
    cleanupDelayMs: 3_600_000,
  })
  t.teardown(() => store.close())
  // Fill the cache with a pinned file: nothing can be evicted, so no new block is stored.
  store.pin([{ rel: 'OPS/pinned.fits', size: 8 * MiB }])
  const pinned = store.file('OPS/pinned.fits', 8 * MiB, null)
  for (let i = 0; i < pinned.blocks; i++) {
    const b = Buffer.alloc(MiB, i)
    t.ok(await pinned.writeBlock(i, b, adler32(b)), `pinned block ${i} stored`)
  }
  const source = new CountingSource(new MirrorSource(mirror))
  const sources = new SourceSet([source])
  const fetcher = fetcherOver(sources, store, { backoffMs: 1 })
  const file = store.file('OPS/big.fits', size, null)
  store.hold(file)
  t.teardown(() => store.release(file))

  // The kernel's reads of a sequential reader: 128 KiB at a time, each after the last one answered.
  // The reader is slower than the network: before each new block every fetch started has finished
  // (the worst case for read-ahead that runs further than what can be kept).
  const pattern = newReadPattern()
  const hash = createHash('md5')
  const buf = Buffer.allocUnsafe(128 << 10)
  for (let pos = 0; pos < size; pos += buf.length) {
    if (pos % MiB === 0) {
      await source.idle()
      await new Promise((r) => setImmediate(r)) // and the blocks it brought were offered to the store
    }
    const n = await fetcher.readInto(file, pos, buf.length, buf, () => true, pattern)
    hash.update(buf.subarray(0, n))
  }
  t.equal(hash.digest('hex'), createHash('md5').update(data).digest('hex'), 'the file reads right')
  t.equal(store.summary().bytes, 8 * MiB, 'nothing of it was stored (the cache is full of the pinned file)')
  const ratio = source.served / size
  t.ok(
    ratio <= 1.15,
    `bytes served by the source / bytes read = ${ratio.toFixed(2)} (${source.served} bytes in ${fetcher.stats.requests} requests)`,
  )
})

t.test('through a mount, with the cache full of pinned files, a 64 MiB read fetches 64 MiB', async (t) => {
  const a = makeArchive(t, { largeFileBytes: 64 * MiB, coaddSize: [1536, 1536], hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const big = a.manifest.largeFile!
  const d = await startDaemon(t, {
    db: a.db,
    archive: server.archiveUrl,
    tokenFile,
    flags: ['--cache-size', '16M', '--pin-size', '16M', '--cache-min-free', '0'],
  })
  // Pin other files up to the bound (largest first), so no block of the big file can be stored.
  let pinned = 0
  const pins: string[] = []
  for (const f of a.manifest.files.filter((f) => f.rel !== big).sort((x, y) => y.size - x.size)) {
    if (pinned + f.size > 16 * MiB - 64 * 1024) continue
    pins.push(f.rel)
    pinned += f.size
  }
  const list = join(tmp(t), 'pins.txt')
  writeFileSync(list, pins.join('\n') + '\n')
  const env = { ...process.env, DESFS_CONFIG: join(d.stateDir, 'no-config'), DESFS_STATE_DIR: d.stateDir }
  const sync = await desfs(['sync', '--list', list], { env, timeoutMs: 120_000 })
  t.equal(sync.code, 0, sync.stderr)
  t.comment(`pinned ${(pinned / MiB).toFixed(1)} MiB in ${pins.length} files`)

  server.clearLog()
  server.faults = { rateBytesPerSec: 100e6 } // a fast link, but not one that outruns the reader
  const cat = await run('md5sum', [join(d.mnt, big)], { timeoutMs: 300_000 })
  t.equal(cat.stdout.slice(0, 32), md5(sourceBytes(a, big)), 'the file reads right')
  const sent = server.log.filter((r) => r.method === 'GET' && r.port === 'pool' && r.path === big).reduce((n, r) => n + r.bytes, 0)
  t.ok(sent <= 1.15 * 64 * MiB, `the server sent ${(sent / MiB).toFixed(1)} MiB for a 64 MiB read (${(sent / (64 * MiB)).toFixed(2)}x)`)
})
