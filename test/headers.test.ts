// FITS headers through a real mount: the user.desfs.hdus attribute (the HDU index, read through the
// cache on first ask, then kept with the file's facts so a restart answers it with no request), and
// `desfs headers --keys` against astropy reading the source files, NULLs included.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, startServer, startDaemon, run, needTool, needPythonModule, PYTHON, type ArchiveFixture } from './helpers.js'

t.jobs = 1

/**
 * astropy's view of source files: each HDU's index, EXTNAME, type and offsets (compressed HDUs as
 * their tables, since those are the bytes on disk), and the keywords asked for, by the rule
 * `desfs headers` documents: KEY from the first HDU that has it, N:KEY or EXTNAME:KEY from that HDU.
 */
const ASTROPY = String.raw`
import json, sys
from astropy.io import fits
req = json.load(sys.stdin)
out = {}
def plain(v):
    if isinstance(v, bool): return 'T' if v else 'F'
    return v
for path in req['paths']:
    try:
        with fits.open(path, disable_image_compression=True) as h:
            hdus = []
            for i, hdu in enumerate(h):
                info = h.fileinfo(i)
                x = hdu.header.get('XTENSION', 'IMAGE').strip()
                kind = {'IMAGE': 'image', 'TABLE': 'table', 'BINTABLE': 'compressed' if hdu.header.get('ZIMAGE') else 'bintable'}[x]
                hdus.append({'index': i, 'extname': hdu.header.get('EXTNAME'), 'type': kind, 'headerOffset': info['hdrLoc'], 'dataOffset': info['datLoc'], 'dataSpan': info['datSpan']})
            row = []
            for k in req['keys']:
                if ':' in k:
                    which, key = k.split(':', 1)
                    try: hdr = h[int(which)].header
                    except ValueError:
                        hdr = next((u.header for u in h if u.header.get('EXTNAME') == which), None)
                    row.append(plain(hdr.get(key)) if hdr is not None else None)
                else:
                    row.append(next((plain(u.header[k]) for u in h if k in u.header), None))
            out[path] = {'hdus': hdus, 'row': row}
    except OSError as e:
        out[path] = {'error': str(e)}
print(json.dumps(out))
`

interface AstropyFile {
  hdus?: { index: number; extname: string | null; type: string; headerOffset: number; dataOffset: number; dataSpan: number }[]
  row?: unknown[]
  error?: string
}

function astropy(paths: string[], keys: string[] = []): Record<string, AstropyFile> {
  return JSON.parse(execFileSync(PYTHON, ['-c', ASTROPY], { input: JSON.stringify({ paths, keys }), encoding: 'utf8', timeout: 120_000 })) as Record<string, AstropyFile>
}

/** Makes one archive file not FITS (same size, so the archive's listing still fits it). */
function spoil(a: ArchiveFixture): string {
  const f = a.manifest.files.find((x) => x.rel.endsWith('.psf'))!
  const path = join(a.root, f.rel)
  const bytes = readFileSync(path)
  bytes.fill(0x42)
  bytes.write('\x1f\x8b', 0, 'latin1')
  writeFileSync(path, bytes)
  return f.rel
}

t.test('user.desfs.hdus', async (t) => {
  if (!needTool(t, 'getfattr', 'attr') || !needPythonModule(t, 'astropy', 'python3-astropy')) return
  const a = makeArchive(t, { exposures: 2, ccds: 2, hostile: false })
  const notFits = spoil(a)
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const picks = [
    a.manifest.files.find((f) => f.rel.endsWith('_immasked.fits.fz'))!.rel, // fpacked: primary + 3 compressed
    a.manifest.files.find((f) => f.rel.endsWith('_cat.fits'))!.rel, // a binary table
    a.manifest.files.find((f) => f.kind === 'coadd_segmap')!.rel, // primary + image
  ]
  const want = astropy(picks.map((rel) => join(a.root, rel)))
  const hdus = async (rel: string, mnt = d.mnt) => {
    const r = await run('getfattr', ['--absolute-names', '--only-values', '-n', 'user.desfs.hdus', join(mnt, rel)])
    t.equal(r.code, 0, `getfattr ${rel}: ${r.stderr.trim()}`)
    return JSON.parse(r.stdout || 'null') as { index: number; extname: string | null; type: string; headerOffset: number; headerLength: number; dataOffset: number; dataLength: number }[]
  }

  await t.test('matches astropy on the source files', async (t) => {
    for (const rel of picks) {
      const got = await hdus(rel)
      const w = want[join(a.root, rel)]!.hdus!
      t.same(got.map((h) => [h.index, h.extname, h.type, h.headerOffset, h.headerOffset + h.headerLength, h.dataOffset, Math.ceil(h.dataLength / 2880) * 2880]), w.map((h) => [h.index, h.extname ?? null, h.type, h.headerOffset, h.dataOffset, h.dataOffset, h.dataSpan]), rel)
    }
    t.ok((await hdus(picks[0]!)).some((h) => h.type === 'compressed'), 'an fpacked file has compressed HDUs')
  })

  await t.test('a file that is not FITS has an empty index', async (t) => {
    t.same(await hdus(notFits), [])
  })

  await t.test('a restart answers from the facts: no request at all', async (t) => {
    await d.stop()
    // A fresh cache: only the facts could remember the index.
    const again = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, stateDir: d.stateDir })
    server.clearLog()
    for (const rel of [...picks, notFits]) await hdus(rel, again.mnt)
    t.same(server.log.map((r) => `${r.method} ${r.path}`), [], 'no request reached the archive')
  })
})
