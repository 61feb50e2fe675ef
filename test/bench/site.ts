// `npm run bench -- site [--size 512M] [--files 8] [--nodes 1,2,4]`
// The site tier: N simulated nodes (desfs daemons, each with its own mount and cold cache) read the
// same files (--size in all, in --files files of random bytes) at the same time, without and with a
// site cache: a real XCache (test/xcache.ts) in front of an xrootd origin serving the archive's
// directory. Reported per run: bytes taken from the archive (the dCache-like door's GETs, plus what
// the xrootd origin served the XCache: in production both are the archive), that as a multiple of
// the data, and each node's time to read everything.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatSize, parseSize } from '../../daemon/units.js'
import { until } from '../helpers.js'
import { XCache } from '../xcache.js'
import { writeFileTable, writeRandomFiles, relPath } from './sync.js'
import { dropCaches, mbps, median, option, report, startBenchArchive, startBenchDaemon, timedRun, type BenchDaemon } from './util.js'

/** Body bytes of the archive door's GETs (the redirect's pool port included). */
function doorGetBytes(server: { log: { method: string; status: number; bytes: number }[] }): number {
  return server.log.filter((r) => r.method === 'GET' && r.status < 300).reduce((a, r) => a + r.bytes, 0)
}

export async function run(args: string[]): Promise<void> {
  const total = parseSize(option(args, 'size', '512M'))
  const nFiles = Math.max(1, Number(option(args, 'files', '8')))
  const nodeCounts = option(args, 'nodes', '1,2,4').split(',').map(Number)
  const fileBytes = Math.floor(total / nFiles)
  const data = fileBytes * nFiles
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-site-'))
  const log = (s: string) => process.stderr.write(s + '\n')
  const rows: (string | number)[][] = [
    [
      'source',
      'nodes',
      'from archive (MB)',
      'of which via XCache origin (MB)',
      'x data',
      'node time median (s)',
      'node time max (s)',
      'MB/s per node (median)',
    ],
  ]
  const daemons: BenchDaemon[] = []
  let xcache: XCache | undefined
  try {
    log(`writing ${nFiles} files of ${formatSize(fileBytes)} ...`)
    const root = join(base, 'archive')
    const files = writeRandomFiles(root, nFiles, fileBytes)
    const db = join(base, 'metadata.db')
    writeFileTable(db, files)
    const rels = files.map(relPath)
    const { server, tokenFile } = await startBenchArchive(base, root)
    for (const site of [false, true]) {
      for (const n of nodeCounts) {
        // A fresh XCache each time: every run starts cold everywhere.
        if (site) xcache = await new XCache(root).start()
        for (let i = 0; i < n; i++)
          daemons.push(
            await startBenchDaemon(base, { db, archive: server.archiveUrl, tokenFile, flags: site ? ['--site-cache', xcache!.url] : [] }),
          )
        // Learn the directories (sizes and checksums from the archive) outside the timing.
        for (const d of daemons)
          await timedRun(
            'stat',
            rels.map((r) => join(d.mnt, r)),
          )
        dropCaches()
        server.clearLog()
        log(`${site ? 'site cache' : 'archive only'}: ${n} node(s) reading ${formatSize(data)} ...`)
        const times = await Promise.all(
          daemons.map((d) =>
            timedRun(
              'cat',
              rels.map((r) => join(d.mnt, r)),
            ),
          ),
        )
        let origin = 0
        if (xcache) {
          // xrootd writes its trace line after the read: wait (bounded) until every byte is accounted for.
          const x = xcache
          await until(() => x.originBytes() >= data, 10_000)
          origin = x.originBytes()
        }
        const fromArchive = doorGetBytes(server) + origin
        rows.push([
          site ? 'site,archive' : 'archive',
          n,
          fromArchive / 1e6,
          origin / 1e6,
          fromArchive / data,
          median(times) / 1000,
          Math.max(...times) / 1000,
          mbps(data, median(times)),
        ])
        for (const d of daemons.splice(0)) await d.stop()
        await xcache?.stop()
        xcache = undefined
      }
    }
    await server.stop()
  } finally {
    for (const d of daemons) await d.stop().catch(() => undefined)
    await xcache?.stop()
    rmSync(base, { recursive: true, force: true })
  }
  report(
    'site',
    `; ${nFiles} files, ${formatSize(data)} in all, read by every node at once; XCache pfc.ram 1g, origin and door on 127.0.0.1`,
    rows,
  )
}
