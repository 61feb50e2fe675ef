// Fetching what is read, through a real mount, judged by the test server's request log and by the
// daemon's count of the bytes the kernel's READ requests asked for: astropy getheader of every HDU
// of 200 multi-extension files, and fitsio read_header of each HDU, fetch at most twice what the
// kernel asked for, and at most 64 KiB per header on average. (A sequential cat still fetches in large
// runs: test/cache-readahead.test.ts.)
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, desfs, run, needPythonModule, PYTHON, type DaemonFixture } from './helpers.js'
import { addSurveyFiles } from './bench/headers.js'

t.jobs = 1

const FILES = 200
const HDUS = 4 // a primary and SCI, MSK, WGT images (test/bench/headers.ts)

const ASTROPY = 'import sys\nfrom astropy.io import fits\nfor f in sys.argv[1:]:\n    for i in range(4):\n        fits.getheader(f, i)\n'
const FITSIO =
  'import sys, fitsio\nfor f in sys.argv[1:]:\n    with fitsio.FITS(f) as h:\n        for hdu in h:\n            hdu.read_header()\n'

/**
 * Bytes the kernel's READ requests asked for: those that reached the daemon (status:
 * ops.bytesRequested) and those the FUSE plane answered itself from verified cached blocks
 * (plane.nativeReadBytes: header blocks the HDU walk on open brought in before the reader asked).
 */
async function requested(d: DaemonFixture): Promise<number> {
  const r = await desfs(['status', '--state-dir', d.stateDir, '--json'])
  const s = JSON.parse(r.stdout) as { ops: { bytesRequested: number }; plane: { nativeReadBytes: number } | null }
  return s.ops.bytesRequested + (s.plane?.nativeReadBytes ?? 0)
}

t.test('header surveys through the mount fetch about what the kernel asks for', async (t) => {
  if (!needPythonModule(t, 'astropy', 'python3-astropy') || !needPythonModule(t, 'fitsio', 'python3-fitsio')) return
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  const files = addSurveyFiles(a.root, a.db, FILES, 16e6)
  const { server, tokenFile } = await startServer(t, a.root)
  const fetched = () =>
    server.log.filter((r) => r.method === 'GET' && r.path.startsWith('OPS/bench/headers/')).reduce((n, r) => n + r.bytes, 0)

  const survey = async (t: Test, tool: string, script: string) => {
    // A daemon (and cache) of its own for each reader.
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    t.teardown(() => d.stop())
    await run('find', [join(d.mnt, 'OPS/bench/headers'), '-type', 'f', '-size', '+0']) // the listings first
    server.clearLog()
    const before = await requested(d)
    const r = await run(PYTHON, ['-c', script, ...files.map((f) => join(d.mnt, f))], { timeoutMs: 600_000 })
    t.equal(r.code, 0, r.stderr)
    const got = fetched()
    const asked = (await requested(d)) - before
    const perHeader = got / (FILES * HDUS)
    // The kernel's first window at the start of a file (the mount's read-ahead bound, fs/mount.ts)
    // and a reader's buffer (the mount's st_blksize) over the cache's blocks (store-options.ts)
    // decide this: with 1 MiB read-ahead or 64 KiB blocks it was 75-107 KiB.
    t.ok(perHeader <= 64 << 10, `${tool}: ${(perHeader / 1024).toFixed(1)} KiB fetched per header (at most 64 KiB)`)
    t.ok(
      asked > 0 && got <= 2 * asked,
      `${tool}: fetched ${(got / 2 ** 20).toFixed(1)} MiB for ${(asked / 2 ** 20).toFixed(1)} MiB the kernel asked for (at most twice)`,
    )
  }
  await t.test('astropy getheader of every HDU', (t) => survey(t, 'astropy', ASTROPY))
  await t.test('fitsio read_header of each HDU', (t) => survey(t, 'fitsio', FITSIO))
})
