// `npm run bench -- sync [--files 200] [--mb 10] [--parallel 50]`
// Sync throughput against the project's archive server on 127.0.0.1: `desfs sync --list` of N files
// of M MB (cold cache, fetched, checked against the archive's Adler-32, stored and pinned) vs
// `curl --parallel` of the same URLs from the same server (to files on the same disk, and to
// /dev/null), in the same run.
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { ArchiveServer } from '../archive/server.js'
import { makeToken, writeTokenFile } from '../archive/token.js'
import { prng } from '../archive/generate.js'
import { DESFS } from '../helpers.js'
import { mbps, now, table } from './util.js'
import { formatSize } from '../../daemon/units.js'

function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`)
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : def
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout!.on('data', (d: Buffer) => (err += d))
    let err = ''
    child.stderr!.on('data', (d: Buffer) => (err += d))
    child.on('exit', (code) => (code === 0 ? resolve(0) : reject(new Error(`${cmd} failed (${code}): ${err.slice(0, 400)}`))))
  })
}

export async function run(args: string[]): Promise<void> {
  const nFiles = arg(args, 'files', 200)
  const mb = arg(args, 'mb', 10)
  const parallel = arg(args, 'parallel', 50)
  const base = mkdtempSync(join(tmpdir(), 'desfs-bench-sync-'))
  try {
    // The archive: N files of random bytes in DES-like exposure directories, and their DB rows.
    const root = join(base, 'archive')
    const rows: [string, string, string][] = []
    const rand = prng(7)
    const chunk = Buffer.alloc(mb * 1_000_000)
    for (let i = 0; i < nFiles; i++) {
      const dir = `OPS/finalcut/Y6A1/20131001-r5000/D${String(300000 + Math.floor(i / 60)).padStart(8, '0')}/p01/red/immask`
      const name = `D${String(300000 + Math.floor(i / 60)).padStart(8, '0')}_r_c${String(i % 60).padStart(2, '0')}_r5000p01_immasked.fits`
      mkdirSync(join(root, dir), { recursive: true })
      for (let k = 0; k < chunk.length; k += 4) chunk.writeUInt32LE((rand() * 0xffffffff) >>> 0, k)
      writeFileSync(join(root, dir, name + '.fz'), chunk)
      rows.push([dir, name, '.fz'])
    }
    const db = join(base, 'metadata.db')
    const sql = new Database(db)
    sql.exec('CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, PATH TEXT, COMPRESSION TEXT, DESFILE_ID INTEGER)')
    const ins = sql.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, ?, ?)')
    sql.transaction(() => rows.forEach(([p, f, c], i) => ins.run(f, p, c, i)))()
    sql.close()
    const token = makeToken({}, 86400)
    const tokenFile = join(base, 'tok', 'bearer_token')
    writeTokenFile(tokenFile, token)
    const server = await new ArchiveServer({ root, tokens: [token], redirect: true }).start()
    const rels = rows.map(([p, f, c]) => `${p}/${f}${c}`)
    const total = nFiles * chunk.length
    console.log(`sync benchmark: ${nFiles} files of ${formatSize(chunk.length)} (${formatSize(total)}), archive server on 127.0.0.1 with a redirect to a pool port`)

    // curl --parallel, to files and to /dev/null.
    const curlConfig = (toDisk: boolean) => {
      const out = join(base, toDisk ? 'curl-out' : 'null')
      if (toDisk) mkdirSync(out, { recursive: true })
      const lines = rels.map((r, i) => `url = "${server.archiveUrl}/${r}"\noutput = "${toDisk ? join(out, String(i)) : '/dev/null'}"`)
      const file = join(base, `curl-${toDisk ? 'disk' : 'null'}.conf`)
      writeFileSync(file, `header = "Authorization: Bearer ${token}"\nlocation\nsilent\nfail\n${lines.join('\n')}\n`)
      return file
    }
    const results: (string | number)[][] = [['method', 'seconds', 'MB/s', 'vs curl to disk']]
    const t1 = now()
    await exec('curl', ['--parallel', '--parallel-max', String(parallel), '--config', curlConfig(true)])
    const curlDisk = now() - t1
    const t2 = now()
    await exec('curl', ['--parallel', '--parallel-max', String(parallel), '--config', curlConfig(false)])
    const curlNull = now() - t2

    // desfs sync --list, cold cache.
    const d = join(base, 'desfs')
    mkdirSync(join(d, 'mnt'), { recursive: true })
    const env = { ...process.env, DESFS_STATE_DIR: join(d, 'state'), DESFS_CACHE_DIR: join(d, 'cache'), DESFS_CONFIG: join(d, 'none'), DES_ARCHIVE_ACCESS_DB: db, DES_ARCHIVE_ACCESS_ARCHIVE: server.archiveUrl, DESFS_TOKEN_FILE: tokenFile, DESFS_CACHE_SIZE: `${Math.ceil((total * 1.5) / 1e9)}G`, DESFS_PIN_SIZE: `${Math.ceil((total * 1.2) / 1e9)}G` }
    await exec(process.execPath, [DESFS, 'mount', join(d, 'mnt')], env)
    const list = join(base, 'list.txt')
    writeFileSync(list, rels.join('\n') + '\n')
    server.clearLog()
    const t3 = now()
    await exec(process.execPath, [DESFS, 'sync', '--list', list], env)
    const sync = now() - t3
    const fetched = server.bytesSent()
    await exec(process.execPath, [DESFS, 'umount', join(d, 'mnt')], env)
    await server.stop()

    results.push(['curl --parallel to files', curlDisk / 1000, mbps(total, curlDisk), 1])
    results.push(['curl --parallel to /dev/null', curlNull / 1000, mbps(total, curlNull), curlDisk / curlNull])
    results.push(['desfs sync (cache, verify, pin)', sync / 1000, mbps(total, sync), curlDisk / sync])
    table(results)
    console.log(`desfs sync transferred ${formatSize(fetched)} for ${formatSize(total)} of files`)
  } finally {
    // A failed run may leave its mount behind: take it down before removing the directory.
    await exec('fusermount', ['-uz', join(base, 'desfs', 'mnt')]).catch(() => undefined)
    rmSync(base, { recursive: true, force: true })
  }
}
