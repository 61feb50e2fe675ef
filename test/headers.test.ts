// FITS headers through a real mount: the user.desfs.hdus attribute (the HDU index, read through the
// cache on first ask, then kept with the file's facts so a restart answers it with no request), and
// `desfs headers --keys` against astropy reading the source files, NULLs included.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  makeArchive,
  startServer,
  startDaemon,
  run,
  desfs,
  tmp,
  until,
  needTool,
  needPythonModule,
  PYTHON,
  type ArchiveFixture,
} from './helpers.js'

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
  return JSON.parse(
    execFileSync(PYTHON, ['-c', ASTROPY], { input: JSON.stringify({ paths, keys }), encoding: 'utf8', timeout: 120_000 }),
  ) as Record<string, AstropyFile>
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
    return JSON.parse(r.stdout || 'null') as {
      index: number
      extname: string | null
      type: string
      headerOffset: number
      headerLength: number
      dataOffset: number
      dataLength: number
    }[]
  }

  await t.test('matches astropy on the source files', async (t) => {
    for (const rel of picks) {
      const got = await hdus(rel)
      const w = want[join(a.root, rel)]!.hdus!
      t.same(
        got.map((h) => [
          h.index,
          h.extname,
          h.type,
          h.headerOffset,
          h.headerOffset + h.headerLength,
          h.dataOffset,
          Math.ceil(h.dataLength / 2880) * 2880,
        ]),
        w.map((h) => [h.index, h.extname ?? null, h.type, h.headerOffset, h.dataOffset, h.dataOffset, h.dataSpan]),
        rel,
      )
    }
    t.ok(
      (await hdus(picks[0]!)).some((h) => h.type === 'compressed'),
      'an fpacked file has compressed HDUs',
    )
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
    t.same(
      server.log.map((r) => `${r.method} ${r.path}`),
      [],
      'no request reached the archive',
    )
  })
})

t.test('desfs headers --keys matches astropy on the source files', async (t) => {
  if (!needPythonModule(t, 'astropy', 'python3-astropy')) return
  const a = makeArchive(t, { exposures: 2, ccds: 3, hostile: true })
  const notFits = spoil(a)
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const rels = a.manifest.files.filter((f) => f.rel !== notFits).map((f) => f.rel)
  const keys = ['EXPNUM', 'BAND', 'AIRMASS', 'TILENAME', 'SCI:BUNIT', '1:EXTNAME', '0:ORIGIN', 'MSK:NAXIS1']
  const want = astropy(
    rels.map((rel) => join(a.root, rel)),
    keys,
  )
  const dir = tmp(t)
  const state = ['--state-dir', d.stateDir]
  // One file named by its path under the mount, the rest by archive path.
  const named = [join(d.mnt, rels[0]!), ...rels.slice(1)]

  await t.test('JSON output: every file, values and NULLs as astropy reads them', async (t) => {
    const out = join(dir, 'h.json')
    const r = await desfs(['headers', ...state, '--keys', keys.join(','), '--output', out, ...named], { timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>[]
    t.same(
      rows.map((row) => row.path),
      rels,
      'one row per file, the archive path first, in the order given',
    )
    t.same(Object.keys(rows[0]!), ['path', ...keys])
    for (const row of rows)
      t.same(
        keys.map((k) => row[k]),
        want[join(a.root, row.path as string)]!.row,
        row.path as string,
      )
    t.ok(rows.some((row) => row.AIRMASS === null) && rows.some((row) => row['SCI:BUNIT'] !== null), 'NULLs and values both occur')
  })

  await t.test('TSV on a pipe; unreadable files are one line each and exit 1', async (t) => {
    const missing = a.manifest.missing[0]!
    const r = await desfs(['headers', ...state, '--keys', 'EXPNUM,AIRMASS', rels[0]!, notFits, missing], { timeoutMs: 120_000 })
    t.equal(r.code, 1)
    const lines = r.stdout.replace(/\n$/, '').split('\n')
    t.same(lines[0]!.split('\t'), ['path', 'EXPNUM', 'AIRMASS'])
    const w = want[join(a.root, rels[0]!)]!.row!
    t.same(lines.slice(1), [`${rels[0]}\t${w[0] ?? ''}\t`], 'the readable file, AIRMASS empty (NULL)')
    const errs = r.stderr.trim().split('\n')
    t.equal(errs.length, 2, r.stderr)
    t.match(errs[0], `cannot read the headers of ${notFits}: not a FITS file`)
    t.match(errs[1], `cannot read the headers of ${missing}`)
  })

  await t.test('*:KEY gives a row per HDU; FITS output reads back in astropy', async (t) => {
    const out = join(dir, 'h.fits')
    const some = rels.filter((r) => r.endsWith('.fz')).slice(0, 3)
    const r = await desfs(['headers', ...state, '--keys', '*:NAXIS,EXPNUM', '--output', out, ...some], { timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    const back = JSON.parse(
      execFileSync(
        PYTHON,
        [
          '-c',
          'import sys, json; from astropy.io import fits; d = fits.getdata(sys.argv[1], 1); print(json.dumps([[str(x["path"]), int(x["hdu"]), str(x["extname"]), int(x["*:NAXIS"])] for x in d]))',
          out,
        ],
        { encoding: 'utf8' },
      ),
    ) as unknown[][]
    const expected = some.flatMap((rel) => want[join(a.root, rel)]!.hdus!.map((h) => [rel, h.index, h.extname ?? '', 2]))
    t.same(
      back,
      expected.map((e) => [e[0], e[1], e[2], e[1] === 0 ? 0 : 2]),
      'a row per HDU: compressed HDUs have NAXIS 2 (the table), the primary 0',
    )
  })

  await t.test('--attach gives a finished survey again; bad keys are one line', async (t) => {
    const jobs = await desfs(['jobs', ...state, '--json'])
    const id = (JSON.parse(jobs.stdout) as { id: string; kind: string }[]).find((j) => j.kind === 'headers')!.id
    const again = await desfs(['headers', ...state, '--attach', id, '--output', join(dir, 'again.json')])
    t.equal(again.code, 0, again.stderr)
    t.same(JSON.parse(readFileSync(join(dir, 'again.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'h.json'), 'utf8')))
    const bad = await desfs(['headers', ...state, '--keys', 'EXP NUM', rels[0]!])
    t.equal(bad.code, 2)
    t.match(bad.stderr.trim(), /^desfs: --keys: 'EXP NUM' is not a header keyword; give KEY or HDU:KEY/)
  })

  await t.test('a survey cut short by a daemon restart resumes, and --attach gets every row', async (t) => {
    // A daemon of its own: the one above has every header cached already.
    await d.stop()
    const d1 = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
    const state = ['--state-dir', d1.stateDir]
    server.faults.latencyMs = 500 // slow enough that the stop lands mid-survey
    const out = join(dir, 'resumed.json')
    const client = desfs(['headers', ...state, '--keys', keys.join(','), ...rels], { timeoutMs: 120_000 })
    type Listed = { id: string; kind: string; state: string; filesDone: number; files: number }
    let job: Listed | undefined
    await until(
      async () => {
        const list = JSON.parse((await desfs(['jobs', ...state, '--json'])).stdout || '[]') as Listed[]
        job = list.filter((j) => j.kind === 'headers' && j.state === 'running').pop()
        return !!job && job.filesDone > 0
      },
      60_000,
      100,
    )
    t.ok(job && job.filesDone > 0 && job.filesDone < job.files, `stopped mid-survey (${job?.filesDone} of ${job?.files} files read)`)
    await d1.stop()
    const lost = await client
    t.equal(lost.code, 4, 'the client says the daemon went away')
    t.match(lost.stderr, `desfs headers --attach ${job!.id}`)
    server.faults.latencyMs = 0
    server.clearLog()
    const again = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, stateDir: d1.stateDir, cacheDir: d1.cacheDir })
    const r = await desfs(['headers', '--state-dir', again.stateDir, '--attach', job!.id, '--output', out], { timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>[]
    t.same(
      rows.map((row) => row.path),
      rels,
      'every file, in order',
    )
    for (const row of rows)
      t.same(
        keys.map((k) => row[k]),
        want[join(a.root, row.path as string)]!.row,
        row.path as string,
      )
  })
})
