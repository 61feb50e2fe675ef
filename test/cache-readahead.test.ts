// Read-ahead as the archive sees it: a header read fetches what the kernel asked for (in 64 KiB
// blocks) and nothing more; a sequential
// reader's file comes in a few large ranged requests, each byte once, although the kernel delivers
// the reader's requests several at a time and, while they wait for the network, out of order.
import t from 'tap'
import { join } from 'node:path'
import { PYTHON, makeArchive, run, sourceBytes, startDaemon, startServer, md5, until } from './helpers.js'
import { call, socketPath } from '../bin/client.js'

const MiB = 1 << 20

t.test('header reads fetch what the kernel asks for; sequential reads fetch in large runs, each byte once', async (t) => {
  const a = makeArchive(t, { largeFileBytes: 96 * MiB, hostile: false })
  const { server, tokenFile } = await startServer(t, a.root)
  const big = a.manifest.largeFile!
  const size = a.manifest.files.find((f) => f.rel === big)!.size
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const gets = () => server.log.filter((r) => r.method === 'GET' && r.port === 'pool' && r.path === big)

  // What astropy's getheader does first: the primary header, 2880 bytes.
  const head = await run(PYTHON, [
    '-c',
    'import sys\nwith open(sys.argv[1], "rb") as f: sys.stdout.write(str(len(f.read(2880))))',
    join(d.mnt, big),
  ])
  t.equal(head.stdout, '2880', head.stderr)
  // The kernel turns the 2880 bytes into a read of 16 to 128 KiB: one request, a multiple of 64 KiB (two 32 KiB blocks or more).
  // (The HDU walk the open started fetches the other headers' blocks meanwhile: requests of their own.)
  const head0 = gets()
    .filter((r) => r.range?.startsWith('bytes=0-'))
    .map((r) => r.bytes)
  t.ok(
    head0.length === 1 && head0[0]! <= 128 << 10 && head0[0]! % (64 << 10) === 0,
    `a header read fetches one request of at most 128 KiB (${head0.join(', ')} bytes)`,
  )
  // Once the walk is done (the attribute waits for it), what is cached is the header blocks.
  t.equal((await run('getfattr', ['-n', 'user.desfs.hdus', join(d.mnt, big)])).code, 0)
  const headBytes = gets().reduce((n, r) => n + r.bytes, 0)

  // Over a slower link (20 ms per request, 20 MB/s per stream) the reader waits, and the kernel's
  // requests for it pile up and arrive out of order.
  server.clearLog()
  server.faults = { latencyMs: 20, rateBytesPerSec: 20e6 }
  const cat = await run('md5sum', [join(d.mnt, big)], { timeoutMs: 120_000 })
  t.equal(cat.stdout.slice(0, 32), md5(sourceBytes(a, big)), 'the whole file reads right')
  // The server logs a request once its response has finished, which may be just after the reader
  // got its last bytes: wait (bounded) for the log to catch up.
  const logged = () => gets().reduce((n, r) => n + r.bytes, 0)
  await until(() => logged() >= size - headBytes, 10_000)
  const sizes = gets().map((r) => r.bytes)
  t.equal(
    sizes.reduce((n, b) => n + b, 0),
    size - headBytes,
    `every byte but the headers' blocks fetched once (${sizes.length} requests)`,
  )
  // Read-ahead doubles its window per MiB read up to 8 MiB runs: about 16 requests for 96 MiB, plus
  // the kernel's own requests (up to 256 KiB, the mount's read-ahead) before the first MiB read in
  // order starts it. A detector confused by reads arriving out of order keeps restarting at one or
  // two MiB, which makes dozens.
  t.ok(
    sizes.length <= Math.ceil(size / (8 * MiB)) + 8,
    `a few large requests, not one per block or two: ${sizes.map((b) => (b / MiB).toFixed(1)).join(', ')} MiB`,
  )
  t.ok(sizes.filter((b) => b >= 4 * MiB).reduce((n, b) => n + b, 0) >= (size - MiB) / 2, 'most bytes come in requests of 4 MiB or more')
})

t.test(
  'a reader of a partly cached file: the plane serves what is cached and read-ahead fetches what is not, before the reader gets there',
  async (t) => {
    const a = makeArchive(t, { largeFileBytes: 96 * MiB, hostile: false })
    const { server, tokenFile } = await startServer(t, a.root)
    const big = a.manifest.largeFile!
    const size = a.manifest.files.find((f) => f.rel === big)!.size
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    const file = join(d.mnt, big)
    const cached = async () => {
      const r = await run('getfattr', ['-n', 'user.desfs.cached', '--only-values', '--absolute-names', file])
      return Number(r.stdout.split('/')[0]) // waits until what was fetched is stored (ops.ts)
    }
    const dd = (mib: number) => run('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', `count=${mib}`, 'status=none'])
    // A first reader of 8 MiB: its reads reach JavaScript, whose read-ahead runs far past them.
    t.equal((await dd(8)).code, 0)
    const first = await cached()
    t.ok(first > 16 * MiB && first < size - 16 * MiB, `the first reader left ${first / MiB} MiB cached, the rest not`)
    server.clearLog()
    // A second reader goes further, though not past what is cached: the plane answers its reads from
    // the cache without JavaScript, and tells read-ahead where it is.
    const reads = Math.floor(first / MiB) - 8
    const hsBefore = await opsCount(d, 'read_seen')
    t.equal((await dd(reads)).code, 0, `read ${reads} MiB again`)
    const now = await cached()
    t.ok(now > first, `read-ahead fetched past what was cached (${first / MiB} -> ${now / MiB} MiB) though the reader stopped short of it`)
    t.ok(
      server.log.every(
        (r) => r.method !== 'GET' || r.port !== 'pool' || r.path !== big || Number(r.range?.match(/^bytes=(\d+)-/)?.[1]) >= first,
      ),
      'only bytes not cached were fetched',
    )
    t.ok((await opsCount(d, 'read_seen')) > hsBefore, 'the plane told of the reads it served')
  },
)

/** The daemon's count of an operation JavaScript handled (desfs_fuse_ops_total). */
async function opsCount(d: { stateDir: string }, op: string): Promise<number> {
  const text = await call<string>(socketPath(d.stateDir), 'GET', '/metrics')
  return Number(new RegExp(`^desfs_fuse_ops_total\\{op="${op}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
}
