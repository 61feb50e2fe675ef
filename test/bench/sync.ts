// `npm run bench -- sync [--files 200] [--mb 10] [--parallel 50]`
// Sync throughput against the project's archive server on 127.0.0.1: `desfs sync --list` of N files
// of M MB (cold cache, fetched, checked against the archive's Adler-32, stored and pinned) vs
// `curl --parallel` of the same URLs from the same server (to files on the same disk, and to
// /dev/null), in the same run. The pieces (the archive of random files, one curl run, one sync run)
// are exported for the plane benchmark, which repeats them against nginx too.
import { randomFillSync } from 'node:crypto'
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { DESFS } from '../helpers.js'
import { cpuTime, mbps, startBenchArchive, table, timedRun } from './util.js'
import { call, socketPath } from '../../bin/client.js'
import { formatSize } from '../../daemon/units.js'

function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : def
}

/** A file table row: PATH, FILENAME, COMPRESSION. */
export type FileRow = [string, string, string]

/**
 * Writes N files of `bytes` random bytes in DES-like exposure directories (60 to a directory) under
 * `root`, starting at exposure `firstExposure`; returns their rows.
 */
export function writeRandomFiles(root: string, nFiles: number, bytes: number, opts: { firstExposure?: number } = {}): FileRow[] {
  const rows: FileRow[] = []
  const chunk = Buffer.alloc(Math.min(bytes, 8 << 20))
  for (let i = 0; i < nFiles; i++) {
    const exp = String((opts.firstExposure ?? 300000) + Math.floor(i / 60)).padStart(8, '0')
    const dir = `OPS/finalcut/Y6A1/20131001-r5000/D${exp}/p01/red/immask`
    const name = `D${exp}_r_c${String(i % 60).padStart(2, '0')}_r5000p01_immasked.fits`
    mkdirSync(join(root, dir), { recursive: true })
    const fd = openSync(join(root, dir, name + '.fz'), 'w')
    try {
      for (let done = 0; done < bytes;) {
        const n = Math.min(chunk.length, bytes - done)
        randomFillSync(chunk, 0, n) // OpenSSL's generator: GB/s, where a JavaScript one made 1 GB in a minute
        done += writeSync(fd, chunk, 0, n)
      }
    } finally {
      closeSync(fd)
    }
    rows.push([dir, name, '.fz'])
  }
  return rows
}

/** Creates the metadata DB's file table with these rows. */
export function writeFileTable(db: string, rows: FileRow[]): void {
  const sql = new Database(db)
  sql.exec('CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, PATH TEXT, COMPRESSION TEXT, DESFILE_ID INTEGER)')
  const ins = sql.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, ?, ?)')
  sql.transaction(() => rows.forEach(([p, f, c], i) => ins.run(f, p, c, i)))()
  sql.close()
}

export const relPath = ([p, f, c]: FileRow): string => `${p}/${f}${c}`

/** Times one `curl --parallel` of these files, to files in `outDir` (created) or to /dev/null. */
export async function curlParallel(o: {
  archiveUrl: string
  token: string
  rels: string[]
  parallel: number
  config: string
  outDir?: string
}): Promise<number> {
  if (o.outDir) mkdirSync(o.outDir, { recursive: true })
  const lines = o.rels.map((r, i) => `url = "${o.archiveUrl}/${r}"\noutput = "${o.outDir ? join(o.outDir, String(i)) : '/dev/null'}"`)
  writeFileSync(o.config, `header = "Authorization: Bearer ${o.token}"\nlocation\nsilent\nfail\n${lines.join('\n')}\n`)
  return timedRun('curl', ['--parallel', '--parallel-max', String(o.parallel), '--config', o.config])
}

/**
 * Mounts desfs (a daemon of its own, state and cache under `dir`, cold), times `desfs sync --list`
 * of these files, and unmounts. `onCpu` gets the daemon's CPU seconds (user, system) during the sync:
 * the steadiest way to compare two builds here, where throughput swings with the VM's memory.
 */
export async function desfsSync(o: {
  dir: string
  db: string
  archiveUrl: string
  tokenFile: string
  rels: string[]
  totalBytes: number
  onCpu?: (user: number, sys: number) => void
}): Promise<number> {
  const d = o.dir
  mkdirSync(join(d, 'mnt'), { recursive: true })
  const env = {
    ...process.env,
    DESFS_STATE_DIR: join(d, 'state'),
    DESFS_CACHE_DIR: join(d, 'cache'),
    DESFS_CONFIG: join(d, 'none'),
    DES_ARCHIVE_ACCESS_DB: o.db,
    DES_ARCHIVE_ACCESS_ARCHIVE: o.archiveUrl,
    DESFS_TOKEN_FILE: o.tokenFile,
    DESFS_CACHE_SIZE: `${Math.ceil((o.totalBytes * 1.5) / 1e9)}G`,
    DESFS_PIN_SIZE: `${Math.ceil((o.totalBytes * 1.2) / 1e9)}G`,
  }
  await timedRun(process.execPath, [DESFS, 'mount', join(d, 'mnt')], { env })
  try {
    const list = join(d, 'list.txt')
    writeFileSync(list, o.rels.join('\n') + '\n')
    const { pid } = await call<{ pid: number }>(socketPath(env.DESFS_STATE_DIR), 'GET', '/status')
    const before = cpuTime(pid)
    const ms = await timedRun(process.execPath, [DESFS, 'sync', '--list', list], { env })
    const after = cpuTime(pid)
    o.onCpu?.((after.user - before.user) / 100, (after.sys - before.sys) / 100)
    return ms
  } finally {
    await timedRun(process.execPath, [DESFS, 'umount', join(d, 'mnt')], { env }).catch(() =>
      timedRun('fusermount', ['-uz', join(d, 'mnt')]).catch(() => undefined),
    )
  }
}

export async function run(args: string[]): Promise<void> {
  const nFiles = arg(args, 'files', 200)
  const mb = arg(args, 'mb', 10)
  const parallel = arg(args, 'parallel', 50)
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-sync-'))
  try {
    // The archive: N files of random bytes in DES-like exposure directories, and their DB rows.
    const root = join(base, 'archive')
    const rows = writeRandomFiles(root, nFiles, mb * 1_000_000)
    const db = join(base, 'metadata.db')
    writeFileTable(db, rows)
    const { server, token, tokenFile } = await startBenchArchive(base, root)
    const rels = rows.map(relPath)
    const total = nFiles * mb * 1_000_000
    console.log(
      `sync benchmark: ${nFiles} files of ${formatSize(mb * 1_000_000)} (${formatSize(total)}), archive server on 127.0.0.1 with a redirect to a pool port`,
    )

    // curl --parallel, to files and to /dev/null.
    const results: (string | number)[][] = [['method', 'seconds', 'MB/s', 'vs curl to disk']]
    const curlDisk = await curlParallel({
      archiveUrl: server.archiveUrl,
      token,
      rels,
      parallel,
      config: join(base, 'curl-disk.conf'),
      outDir: join(base, 'curl-out'),
    })
    const curlNull = await curlParallel({ archiveUrl: server.archiveUrl, token, rels, parallel, config: join(base, 'curl-null.conf') })

    // desfs sync --list, cold cache.
    server.clearLog()
    const sync = await desfsSync({ dir: join(base, 'desfs'), db, archiveUrl: server.archiveUrl, tokenFile, rels, totalBytes: total })
    const fetched = server.bytesSent()
    await server.stop()

    results.push(['curl --parallel to files', curlDisk / 1000, mbps(total, curlDisk), 1])
    results.push(['curl --parallel to /dev/null', curlNull / 1000, mbps(total, curlNull), curlDisk / curlNull])
    results.push(['desfs sync (cache, verify, pin)', sync / 1000, mbps(total, sync), curlDisk / sync])
    table(results)
    console.log(`desfs sync transferred ${formatSize(fetched)} for ${formatSize(total)} of files`)
  } finally {
    // A failed run may leave its mount behind: take it down before removing the directory.
    await timedRun('fusermount', ['-uz', join(base, 'desfs', 'mnt')]).catch(() => undefined)
    rmSync(base, { recursive: true, force: true })
  }
}
