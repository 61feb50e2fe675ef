// `npm run bench -- fetch [--size-mb 256] [--scan-files 200] [--scan-mb 16] [--stream-gb 10] [--block-sizes 1M,4M]`
// The fetch engine against the project's archive server on 127.0.0.1, every figure a ratio to a
// baseline measured in the same run: cold sequential cat through the mount vs curl of the same URL
// (plain, with 20 ms before each response, and on a WAN-like link of 20 ms and 50 MB/s per stream); the first pass from a full cache with the
// kernel page cache dropped, and the second pass from the page cache, vs cat of a local file; a
// header scan with astropy (bytes transferred vs one first fetch per file, time vs downloading whole
// files); 32 concurrent readers over overlapping ranges (requests, each block fetched once); daemon
// RSS while streaming many GB through. Repeated for each block size. Dropping the page cache needs
// root (echo 3 > /proc/sys/vm/drop_caches); without it those rows say so.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateArchive } from '../../bin/demo/generate.js'
import type { Faults } from '../../bin/demo/server.js'
import { emptyPrimary, imageHdu } from '../../daemon/fits.js'
import { adler32Fast } from '../../cache/adler32.js'
import { parseSize, formatSize } from '../../daemon/units.js'
import { DESFS, PYTHON, run } from '../helpers.js'
import {
  addBenchFiles,
  dropCaches,
  mbps,
  now,
  option,
  rssMb,
  startBenchArchive,
  report,
  startBenchDaemon,
  timedRun,
  type BenchDaemon,
} from './util.js'

const startDaemon = (
  base: string,
  db: string,
  archive: string,
  tokenFile: string,
  blockSize: string,
  extra: string[] = [],
): Promise<BenchDaemon> => startBenchDaemon(base, { db, archive, tokenFile, blockSize, flags: extra })

/** Adds N files of S bytes (a FITS header and an image) to the archive and its metadata DB. */
function addScanFiles(root: string, db: string, n: number, bytes: number): string[] {
  const dir = 'OPS/bench/scan'
  mkdirSync(join(root, dir), { recursive: true })
  const width = 1024
  const height = Math.max(1, Math.floor(bytes / (width * 4)))
  const data = Buffer.alloc(width * height * 4, 0x41)
  return addBenchFiles(db, n, 800_000, (i) => {
    const name = `scan_${String(i).padStart(5, '0')}.fits`
    writeFileSync(
      join(root, dir, name),
      Buffer.concat([
        emptyPrimary([{ key: 'OBJECT', value: `scan ${i}` }]),
        imageHdu({ bitpix: -32, axes: [width, height], extname: 'SCI', data }),
      ]),
    )
    return [dir, name]
  })
}

export async function run_(args: string[]): Promise<void> {
  const sizeMb = Number(option(args, 'size-mb', '256'))
  const scanFiles = Number(option(args, 'scan-files', '200'))
  const scanMb = Number(option(args, 'scan-mb', '16'))
  const streamGb = Number(option(args, 'stream-gb', '10'))
  const blockSizes = option(args, 'block-sizes', '1M,4M').split(',')
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-fetch-'))
  const results: (string | number)[][] = [['measure', 'block', 'desfs', 'baseline', 'ratio']]
  const log = (s: string) => process.stderr.write(s + '\n')
  try {
    log(`generating a ${sizeMb} MB file and ${scanFiles} files of ${scanMb} MB ...`)
    const gen = join(base, 'gen')
    const m = generateArchive({ out: gen, largeFileBytes: sizeMb * 1e6, hostile: false })
    const root = join(gen, 'archive')
    const db = join(gen, 'metadata.db')
    const scan = addScanFiles(root, db, scanFiles, scanMb * 1e6)
    const big = m.largeFile!
    const bigBytes = m.files.find((f) => f.rel === big)!.size
    const { server, token, tokenFile } = await startBenchArchive(base, root)
    const url = `${server.archiveUrl}/${big}`
    const curl = () => timedRun('curl', ['-sS', '-f', '-L', '-o', '/dev/null', '-H', `Authorization: Bearer ${token}`, url])
    const local = join(root, big)
    const adlerMs = (() => {
      const b = Buffer.alloc(256 << 20, 7)
      const t0 = now()
      adler32Fast(b)
      return now() - t0
    })()
    log(`adler32 (WebAssembly SIMD, on the event loop): ${mbps(256 << 20, adlerMs).toFixed(0)} MB/s`)

    for (const bs of blockSizes) {
      const bsBytes = parseSize(bs)
      // Cold sequential read vs curl: on loopback; with 20 ms before each response (a request's round
      // trip, which one stream pays once); and a WAN-like link, where a stream is also held to its
      // window per round trip (1 MiB per 20 ms: 50 MB/s), so parallel ranges can beat one stream.
      const links: [string, Faults][] = [
        ['', {}],
        [' +20ms per request', { latencyMs: 20 }],
        [' WAN (20ms, 50 MB/s per stream)', { latencyMs: 20, rateBytesPerSec: 50e6 }],
      ]
      for (const [tag, faults] of links) {
        server.faults = { ...faults }
        const d = await startDaemon(base, db, server.archiveUrl, tokenFile, bs)
        try {
          await timedRun('stat', [join(d.mnt, big)]) // learn the directory first, outside the timing
          const c = await curl()
          const f = await timedRun('cat', [join(d.mnt, big)])
          results.push([`cold cat vs curl${tag} (MB/s)`, bs, mbps(bigBytes, f), mbps(bigBytes, c), c / f])
          if (tag === '') {
            // From the full desfs cache with the page cache dropped, then from the page cache.
            if (dropCaches()) {
              const l1 = await timedRun('cat', [local])
              dropCaches()
              const f1 = await timedRun('cat', [join(d.mnt, big)])
              results.push([
                '1st pass from cache, page cache dropped, vs local cat (MB/s)',
                bs,
                mbps(bigBytes, f1),
                mbps(bigBytes, l1),
                l1 / f1,
              ])
            } else results.push(['1st pass from cache (needs root to drop caches)', bs, '-', '-', '-'])
            const l2 = await timedRun('cat', [local])
            const f2 = await timedRun('cat', [join(d.mnt, big)])
            results.push(['2nd pass (page cache) vs local cat (MB/s)', bs, mbps(bigBytes, f2), mbps(bigBytes, l2), l2 / f2])
          }
        } finally {
          await d.stop()
        }
      }
      server.faults = {}

      // Header scan with astropy vs downloading whole files.
      {
        const d = await startDaemon(base, db, server.archiveUrl, tokenFile, bs)
        try {
          await timedRun('ls', ['-l', join(d.mnt, 'OPS/bench/scan')])
          server.clearLog()
          const script = 'import sys\nfrom astropy.io import fits\nfor f in sys.argv[1:]:\n    fits.getheader(f)\n'
          const t0 = now()
          const r = await run(PYTHON, ['-c', script, ...scan.map((f) => join(d.mnt, f))], { timeoutMs: 600_000 })
          const scanMs = now() - t0
          if (r.code !== 0) throw new Error(`astropy scan failed: ${r.stderr.slice(-500)}`)
          const sent = server.bytesSent()
          const firstFetch = Math.min(bsBytes, scanMb * 1e6)
          results.push([
            `header scan ${scanFiles}x${scanMb}MB: bytes vs ${scanFiles} x first fetch`,
            bs,
            sent,
            scanFiles * firstFetch,
            sent / (scanFiles * firstFetch),
          ])
          const t1 = now()
          await run(PYTHON, ['-c', script, ...scan.map((f) => join(root, f))], { timeoutMs: 600_000 })
          results.push(['header scan: time (ms) vs astropy on local files', bs, scanMs, now() - t1, (now() - t1) / scanMs])
          const cfg = join(base, 'curl.cfg')
          writeFileSync(cfg, scan.map((f) => `url = "${server.archiveUrl}/${f}"\noutput = "/dev/null"\n`).join(''))
          const whole = await timedRun('curl', ['-sS', '-f', '-L', '-H', `Authorization: Bearer ${token}`, '-K', cfg])
          results.push(['header scan: time (ms) vs curl of the whole files', bs, scanMs, whole, whole / scanMs])
        } finally {
          await d.stop()
        }
      }

      // 32 concurrent readers over overlapping ranges: each block fetched once.
      {
        const d = await startDaemon(base, db, server.archiveUrl, tokenFile, bs)
        try {
          await timedRun('stat', [join(d.mnt, big)])
          server.clearLog()
          const mb = Math.floor(bigBytes / (1 << 20))
          const span = Math.min(64, mb)
          await Promise.all(
            Array.from({ length: 32 }, (_, i) =>
              timedRun('dd', [
                `if=${join(d.mnt, big)}`,
                'of=/dev/null',
                'bs=1M',
                `skip=${(i * 3) % Math.max(1, mb - span)}`,
                `count=${span}`,
                'status=none',
              ]),
            ),
          )
          const gets = server.log.filter((r) => r.method === 'GET' && r.port === 'pool' && r.range)
          // How many times each block was fetched (ranges are block-aligned runs).
          const times = new Map<number, number>()
          for (const g of gets) {
            const [a, b] = g.range!.slice(6).split('-').map(Number) as [number, number]
            for (let blk = Math.floor(a / bsBytes); blk <= Math.floor(b / bsBytes); blk++) times.set(blk, (times.get(blk) ?? 0) + 1)
          }
          const twice = [...times.values()].filter((n) => n > 1).length
          results.push([
            `32 overlapping readers: blocks fetched twice or more (${gets.length} GETs for ${times.size} blocks)`,
            bs,
            twice,
            0,
            Math.max(...times.values()),
          ])
        } finally {
          await d.stop()
        }
      }
    }

    // RSS while streaming many GB: the big file over and over, evicted and dropped from the page cache each time.
    {
      const bs = blockSizes[0]!
      const d = await startDaemon(base, db, server.archiveUrl, tokenFile, bs, ['--cache-size', `${Math.ceil(sizeMb * 1.5)}M`])
      try {
        let maxRss = 0
        let sampling = true
        const sampler = (async () => {
          while (sampling) {
            maxRss = Math.max(maxRss, await rssMb(d.child.pid!))
            await new Promise((r) => setTimeout(r, 200))
          }
        })()
        const passes = Math.max(1, Math.round((streamGb * 1e9) / bigBytes))
        const t0 = now()
        for (let i = 0; i < passes; i++) {
          await timedRun(process.execPath, [DESFS, 'cache', 'clear', '--yes'], { env: d.env })
          await run('dd', [`if=${join(d.mnt, big)}`, 'iflag=nocache', 'count=0', 'status=none'])
          await timedRun('cat', [join(d.mnt, big)])
        }
        const ms = now() - t0
        sampling = false
        await sampler
        results.push([
          `daemon RSS (MB) streaming ${formatSize(passes * bigBytes)} at ${mbps(passes * bigBytes, ms).toFixed(0)} MB/s, vs 300 MB target`,
          bs,
          maxRss,
          300,
          maxRss / 300,
        ])
      } finally {
        await d.stop()
      }
    }
    await server.stop()
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
  report('fetch', '; ratio = desfs/baseline for rates, baseline/desfs for times', results)
}

export { run_ as run }
