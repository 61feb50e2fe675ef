// A cutout of a tile-compressed image through a real mount: fitsio reading a 100x100 section of SCI
// in a 4096x4096 fpacked image fetches the header, the table rows of the tiles it needs and those
// tiles' heap bytes, not the whole image: at most 3x the compressed bytes of the tiles that
// intersect the section (from the table's descriptors, read here from the source file), and the
// pixels equal the source's. (Debian's astropy 5.2 has no .section for compressed images: it
// decompresses the whole HDU, so only fitsio is measured here.)
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeArchive, startServer, startDaemon, run, desfs, needTool, needPythonModule, PYTHON } from './helpers.js'
import { addBenchFiles } from './bench/util.js'

const DIR = 'OPS/bench/cutout'
const NAME = 'cutout_sci.fits.fz'
const SECTION = { y0: 1500, x0: 2000, n: 100 }

/** Makes the image, counts its tiles and reads sections (test/readers/fpacked_image.py). */
const FPACKED = fileURLToPath(new URL('../../test/readers/fpacked_image.py', import.meta.url))

t.test('a 100x100 cutout of an fpacked 4096x4096 image fetches about its tiles', async (t) => {
  if (
    !needTool(t, 'fpack', 'libcfitsio-bin') ||
    !needPythonModule(t, 'astropy', 'python3-astropy') ||
    !needPythonModule(t, 'fitsio', 'python3-fitsio')
  )
    return
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false })
  addBenchFiles(a.db, 1, 950_000, () => {
    mkdirSync(join(a.root, DIR), { recursive: true })
    execFileSync(PYTHON, [FPACKED, 'make', join(a.root, DIR, NAME)], { timeout: 120_000 })
    return [DIR, NAME]
  })
  const src = join(a.root, DIR, NAME)
  const args = [String(SECTION.y0), String(SECTION.x0), String(SECTION.n)]
  const want = JSON.parse(execFileSync(PYTHON, [FPACKED, 'tiles', src, ...args], { encoding: 'utf8', timeout: 120_000 })) as {
    tiles: number
    tileBytes: number
    fileBytes: number
  }
  execFileSync(PYTHON, [FPACKED, 'read', src, ...args, join(a.root, 'want.npy')], { timeout: 120_000 })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  await run('stat', [join(d.mnt, DIR, NAME)]) // the listing first
  server.clearLog()
  const r = await run(PYTHON, [FPACKED, 'read', join(d.mnt, DIR, NAME), ...args, join(a.root, 'got.npy')], { timeoutMs: 120_000 })
  t.equal(r.code, 0, r.stderr)
  const same = await run(PYTHON, [
    '-c',
    'import sys, numpy as np; print(np.array_equal(np.load(sys.argv[1]), np.load(sys.argv[2])))',
    join(a.root, 'want.npy'),
    join(a.root, 'got.npy'),
  ])
  t.equal(same.stdout.trim(), 'True', "the pixels equal the source's")
  const fetched = server.log.filter((x) => x.method === 'GET' && x.path === `${DIR}/${NAME}`).reduce((n, x) => n + x.bytes, 0)
  const status = await desfs(['status', '--state-dir', d.stateDir, '--json'])
  const asked = (JSON.parse(status.stdout) as { ops: { bytesRequested: number } }).ops.bytesRequested
  t.ok(
    fetched <= 2 * asked,
    `fetched ${(fetched / 1024).toFixed(0)} KiB for the ${(asked / 1024).toFixed(0)} KiB the kernel asked for (at most twice)`,
  )
  // The kernel's own read-ahead doubles while cfitsio reads the tiles in order, up to the mount's
  // bound (256 KiB, fs/mount.ts); with a 1 MiB bound it asked for about 3x the tiles' bytes.
  t.ok(
    fetched <= 3 * want.tileBytes,
    `fetched ${(fetched / 1024).toFixed(0)} KiB for ${want.tiles} tiles of ${(want.tileBytes / 1024).toFixed(0)} KiB compressed (at most 3x), of a ${(want.fileBytes / 2 ** 20).toFixed(1)} MiB file`,
  )
})
