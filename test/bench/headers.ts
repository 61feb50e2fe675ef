// `npm run bench -- headers [--files 200] [--mb 16] [--parallel 16] [--cutout yes|no]`
// A header survey of N multi-extension FITS files (a primary and SCI, MSK, WGT images, headers of
// about 10 KB like DES's) against the project's archive server on 127.0.0.1, on loopback and on a
// WAN-like link (20 ms per request, 50 MB/s per stream), side by side in one run:
//   - `desfs headers --keys '*:EXTNAME,EXPNUM'` (the daemon's job, reading headers through its cache);
//   - astropy getheader of every HDU through the mount (what a user's own script does);
//   - curl of the whole files, one by one (des-archive-access-download's way) and PARALLEL at a time
//     (what a survey costs without desfs);
//   - the same desfs survey with 1 MiB blocks (the grain before smaller blocks);
//   - astropy getheader over HTTP with use_fsspec=True and the bearer header (python3-fsspec);
//   - a 100x100 cutout of an fpacked 4096x4096 image with fitsio through the mount vs curl of the file.
// Figures: bytes the archive sent per header read, and time against curl. The files are sparse (only
// their headers take disk), so 1,000 files of 16 MB fit anywhere.
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateArchive } from '../../bin/demo/generate.js'
import type { Faults } from '../../bin/demo/server.js'
import { header, RECORD, type Card } from '../../daemon/fits.js'
import { DESFS, PYTHON, run } from '../helpers.js'
import { addBenchFiles, now, option, report, startBenchArchive, startBenchDaemon, timedRun } from './util.js'
import { DEFAULT_BLOCK_SIZE } from '../../cache/store-options.js'
import { formatSize } from '../../daemon/units.js'

const EXTS = ['SCI', 'MSK', 'WGT']

/** Cards that make a header about DES-sized (a few records). */
function filler(i: number, n: number): Card[] {
  return Array.from({ length: n }, (_, k) => ({
    key: `HK${String(k).padStart(5, '0')}`,
    value: (i * 1000 + k) / 7,
    comment: 'filler, as DES headers carry many keywords',
  }))
}

/** Writes N sparse multi-extension files of about `bytes` each and adds them to the metadata DB (test/fetch-grain-mount.test.ts uses them too). */
export function addSurveyFiles(root: string, db: string, n: number, bytes: number): string[] {
  const top = 'OPS/bench/headers'
  const width = 2048
  const height = Math.max(1, Math.floor(bytes / EXTS.length / (width * 4)))
  const dataBytes = Math.ceil((width * height * 4) / RECORD) * RECORD
  return addBenchFiles(db, n, 900_000, (i) => {
    // 50 files a directory, as in DES's exposure directories (and the test server's PROPFIND, which
    // computes every file's Adler-32, stays quick).
    const dir = `${top}/d${String(Math.floor(i / 50)).padStart(3, '0')}`
    if (i % 50 === 0) mkdirSync(join(root, dir), { recursive: true })
    const name = `survey_${String(i).padStart(5, '0')}.fits`
    const fd = openSync(join(root, dir, name), 'w')
    let at = 0
    const put = (b: Buffer) => {
      writeSync(fd, b, 0, b.length, at)
      at += b.length
    }
    put(
      header([
        { key: 'SIMPLE', value: true },
        { key: 'BITPIX', value: 8 },
        { key: 'NAXIS', value: 0 },
        { key: 'EXTEND', value: true },
        { key: 'EXPNUM', value: 500_000 + i },
        { key: 'BAND', value: 'griz'[i % 4]! },
        ...filler(i, 100),
      ]),
    )
    for (const ext of EXTS) {
      put(
        header([
          { key: 'XTENSION', value: 'IMAGE' },
          { key: 'BITPIX', value: -32 },
          { key: 'NAXIS', value: 2 },
          { key: 'NAXIS1', value: width },
          { key: 'NAXIS2', value: height },
          { key: 'PCOUNT', value: 0 },
          { key: 'GCOUNT', value: 1 },
          { key: 'EXTNAME', value: ext },
          ...filler(i, 90),
        ]),
      )
      at += dataBytes // zeros: a sparse hole
    }
    ftruncateSync(fd, at)
    closeSync(fd)
    return [dir, name]
  })
}

export async function run_(args: string[]): Promise<void> {
  const files = Number(option(args, 'files', '200'))
  const mb = Number(option(args, 'mb', '16'))
  const parallel = Number(option(args, 'parallel', '16'))
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-headers-'))
  const log = (s: string) => process.stderr.write(s + '\n')
  const results: (string | number)[][] = [['measure', 'link', 'desfs', 'baseline', 'ratio']]
  try {
    log(`generating ${files} sparse files of ${mb} MB (4 HDUs each) ...`)
    const gen = join(base, 'gen')
    generateArchive({ out: gen, exposures: 1, ccds: 1, hostile: false, fpack: 'never' })
    const root = join(gen, 'archive')
    const db = join(gen, 'metadata.db')
    const survey = addSurveyFiles(root, db, files, mb * 1e6)
    const hdus = files * (1 + EXTS.length)
    const list = join(base, 'list.txt')
    writeFileSync(list, survey.join('\n') + '\n')
    const { server, token, tokenFile } = await startBenchArchive(base, root)
    const fileBytes = () =>
      server.log.filter((r) => r.method === 'GET' && r.path.startsWith('OPS/bench/headers/')).reduce((a, r) => a + r.bytes, 0)
    const gets = () => server.log.filter((r) => r.method === 'GET' && r.port === 'pool' && r.path.startsWith('OPS/bench/headers/')).length
    const links: [string, Faults][] = [
      ['loopback', {}],
      ['WAN 20ms 50MB/s', { latencyMs: 20, rateBytesPerSec: 50e6 }],
    ]
    for (const [tag, faults] of links) {
      server.faults = { ...faults }
      let fineMs = 0
      let astropyMs = 0
      const cfg = join(base, 'curl.cfg')
      writeFileSync(cfg, survey.map((f) => `url = "${server.archiveUrl}/${f}"\noutput = "/dev/null"\n`).join(''))
      const curl = (more: string[]) => timedRun('curl', ['-sS', '-f', '-L', ...more, '-H', `Authorization: Bearer ${token}`, '-K', cfg])
      // One by one is what des-archive-access-download does (the tool desfs replaces); PARALLEL at a
      // time is the same concurrency as desfs headers, the strictest baseline.
      log(`${tag}: curl of the whole files, one by one ...`)
      const curlOneMs = await curl([])
      log(`${tag}: curl of the whole files, ${parallel} at a time ...`)
      const curlMs = await curl(['--parallel', '--parallel-max', String(parallel)])

      for (const bs of ['', '1M']) {
        log(`${tag}: desfs headers${bs ? ` with ${bs} blocks` : ''} ...`)
        const blocks = bs ? ` (${bs} blocks)` : ''
        // A cache that holds every block the survey fetches, so the second run is from the cache.
        const d = await startBenchDaemon(base, {
          db,
          archive: server.archiveUrl,
          tokenFile,
          ...(bs ? { blockSize: bs } : {}),
          flags: ['--cache-size', `${Math.ceil((files * 4 * 1.25) / 1024) + 1}G`],
        })
        try {
          await timedRun('find', [join(d.mnt, 'OPS/bench/headers'), '-type', 'f', '-size', '+0']) // the listings (sizes), outside the timing
          server.clearLog()
          const t0 = now()
          const r = await run(process.execPath, [DESFS, 'headers', '--list', list, '--keys', '*:EXTNAME,EXPNUM'], {
            env: d.env,
            timeoutMs: 3_600_000,
          })
          const ms = now() - t0
          if (r.code !== 0) throw new Error(`desfs headers failed: ${r.stderr.slice(-500)}`)
          const rows = r.stdout.trim().split('\n').length - 1
          if (rows !== hdus) throw new Error(`desfs headers gave ${rows} rows, expected ${hdus}`)
          const sent = fileBytes()
          results.push([
            `desfs headers${blocks}: bytes per header (${hdus} headers, ${gets()} GETs) vs 64 KiB goal`,
            tag,
            Math.round(sent / hdus),
            65536,
            sent / hdus / 65536,
          ])
          if (!bs)
            results.push([
              `desfs headers: time (ms) vs curl of ${files} x ${mb} MB one by one (as des-archive-access-download)`,
              tag,
              Math.round(ms),
              Math.round(curlOneMs),
              curlOneMs / ms,
            ])
          results.push([
            `desfs headers${blocks}: time (ms) vs curl -Z of ${files} x ${mb} MB, ${parallel} at a time`,
            tag,
            Math.round(ms),
            Math.round(curlMs),
            curlMs / ms,
          ])
          if (bs)
            results.push([`desfs headers${blocks}: time (ms) vs default blocks`, tag, Math.round(ms), Math.round(fineMs), fineMs / ms])
          else fineMs = ms
          // Again, with every header cached: what the survey costs without the network.
          server.clearLog()
          const t1 = now()
          const again = await run(process.execPath, [DESFS, 'headers', '--list', list, '--keys', '*:EXTNAME,EXPNUM'], {
            env: d.env,
            timeoutMs: 3_600_000,
          })
          if (again.code !== 0) throw new Error(`desfs headers failed: ${again.stderr.slice(-500)}`)
          if (!bs)
            results.push([
              `desfs headers again, headers cached (${fileBytes()} bytes fetched): time (ms) vs the first`,
              tag,
              Math.round(now() - t1),
              Math.round(ms),
              ms / (now() - t1),
            ])
        } finally {
          await d.stop()
        }
      }

      log(`${tag}: astropy getheader of every HDU through the mount ...`)
      {
        const d = await startBenchDaemon(base, { db, archive: server.archiveUrl, tokenFile })
        try {
          await timedRun('find', [join(d.mnt, 'OPS/bench/headers'), '-type', 'f', '-size', '+0']) // the listings, outside the timing
          server.clearLog()
          const script =
            'import sys\nfrom astropy.io import fits\nfor f in sys.argv[1:]:\n    for i in range(4):\n        fits.getheader(f, i)\n'
          const t0 = now()
          const r = await run(PYTHON, ['-c', script, ...survey.map((f) => join(d.mnt, f))], { timeoutMs: 3_600_000 })
          const ms = now() - t0
          if (r.code !== 0) throw new Error(`astropy survey failed: ${r.stderr.slice(-500)}`)
          const sent = fileBytes()
          results.push([
            `astropy getheader x4 via mount: bytes per header (${gets()} GETs)`,
            tag,
            Math.round(sent / hdus),
            65536,
            sent / hdus / 65536,
          ])
          results.push(['astropy getheader x4 via mount: time (ms) vs curl -Z', tag, Math.round(ms), Math.round(curlMs), curlMs / ms])
          astropyMs = ms
        } finally {
          await d.stop()
        }
      }

      log(`${tag}: astropy getheader of every HDU over HTTP (use_fsspec=True, the bearer header) ...`)
      {
        server.clearLog()
        const script = [
          'import sys',
          'from astropy.io import fits',
          "kw = {'headers': {'Authorization': 'Bearer ' + sys.argv[1]}}",
          'for u in sys.argv[2:]:',
          '    for i in range(4):',
          '        fits.getheader(u, i, use_fsspec=True, fsspec_kwargs=kw)',
        ].join('\n')
        const t0 = now()
        const r = await run(PYTHON, ['-c', script, token, ...survey.map((f) => `${server.archiveUrl}/${f}`)], { timeoutMs: 3_600_000 })
        const ms = now() - t0
        if (r.code !== 0)
          results.push(['astropy use_fsspec=True over HTTP: failed', tag, '-', r.stderr.trim().split('\n').pop() ?? '', '-'])
        else {
          results.push([
            `astropy use_fsspec=True over HTTP: bytes per header (${gets()} GETs)`,
            tag,
            Math.round(fileBytes() / hdus),
            65536,
            fileBytes() / hdus / 65536,
          ])
          results.push([
            'desfs (astropy via mount) time (ms) vs astropy use_fsspec=True',
            tag,
            Math.round(astropyMs),
            Math.round(ms),
            ms / astropyMs,
          ])
        }
      }
    }
    // A 100x100 cutout of an fpacked 4096x4096 image (fitsio, through the mount) vs downloading it whole.
    if (option(args, 'cutout', 'yes') === 'yes') {
      const dir = 'OPS/bench/cutout'
      const name = 'cutout_sci.fits.fz'
      const fpacked = fileURLToPath(new URL('../../../test/readers/fpacked_image.py', import.meta.url))
      addBenchFiles(db, 1, 990_000, () => {
        mkdirSync(join(root, dir), { recursive: true })
        execFileSync(PYTHON, [fpacked, 'make', join(root, dir, name)], { timeout: 300_000 })
        return [dir, name]
      })
      const section = ['1500', '2000', '100']
      const tiles = JSON.parse(execFileSync(PYTHON, [fpacked, 'tiles', join(root, dir, name), ...section], { encoding: 'utf8' })) as {
        tiles: number
        tileBytes: number
        fileBytes: number
      }
      const cutoutBytes = () => server.log.filter((r) => r.method === 'GET' && r.path === `${dir}/${name}`).reduce((a, r) => a + r.bytes, 0)
      for (const [tag, faults] of links) {
        server.faults = { ...faults }
        const d = await startBenchDaemon(base, { db, archive: server.archiveUrl, tokenFile })
        try {
          await timedRun('stat', [join(d.mnt, dir, name)])
          server.clearLog()
          const t0 = now()
          const r = await run(PYTHON, [fpacked, 'read', join(d.mnt, dir, name), ...section, join(base, 'cut.npy')], { timeoutMs: 600_000 })
          const ms = now() - t0
          if (r.code !== 0) throw new Error(`cutout failed: ${r.stderr.slice(-500)}`)
          const sent = cutoutBytes()
          const wholeMs = await timedRun('curl', [
            '-sS',
            '-f',
            '-L',
            '-o',
            '/dev/null',
            '-H',
            `Authorization: Bearer ${token}`,
            `${server.archiveUrl}/${dir}/${name}`,
          ])
          results.push([
            `cutout 100x100 (fitsio): bytes fetched vs 3x its ${tiles.tiles} tiles`,
            tag,
            sent,
            3 * tiles.tileBytes,
            sent / (3 * tiles.tileBytes),
          ])
          results.push([`cutout 100x100: bytes fetched vs the whole file`, tag, sent, tiles.fileBytes, sent / tiles.fileBytes])
          results.push(['cutout 100x100: time (ms) vs curl of the whole file', tag, Math.round(ms), Math.round(wholeMs), wholeMs / ms])
        } finally {
          await d.stop()
        }
      }
    }
    await server.stop()
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
  report(
    'headers',
    `; default (${formatSize(DEFAULT_BLOCK_SIZE)}) blocks unless said; ratio = desfs/goal for bytes, baseline/desfs for times`,
    results,
  )
}

export { run_ as run }
