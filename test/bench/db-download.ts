// `npm run bench -- db-download [MiB]`: downloads a generated metadata-like DB (.zst) from a local
// server with `desfs db download`'s code, and compares with a plain copy of the compressed file and
// with `zstd -d` alone, so the cost of resumable streaming decompression is visible.
import Database from 'better-sqlite3'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { downloadMetadataDb } from '../../bin/db-download.js'
import { FileServer } from '../archive/file-server.js'
import { mbps, table, timed } from './util.js'

/** A DB that compresses roughly like a catalogue: repetitive paths and names, random floats. */
function makeDb(path: string, mib: number): void {
  const db = new Database(path)
  db.pragma('journal_mode = OFF')
  db.exec('CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (FILENAME TEXT, PATH TEXT, COMPRESSION TEXT, DESFILE_ID INTEGER)')
  db.exec('CREATE TABLE Y6A2_IMAGE (FILENAME TEXT, BAND TEXT, EXPNUM INTEGER, CCDNUM INTEGER, RA REAL, DEC REAL, X BLOB)')
  const fai = db.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, ?, ?)')
  const img = db.prepare('INSERT INTO Y6A2_IMAGE VALUES (?, ?, ?, ?, ?, ?, ?)')
  db.transaction(() => {
    for (let i = 0; i % 10000 !== 0 || statSync(path).size < mib * 1024 * 1024; i++) {
      const e = 400000 + (i >> 6)
      const f = `D00${e}_${'grizY'[i % 5]}_c${String((i % 62) + 1).padStart(2, '0')}_r4056p01_immasked.fits`
      fai.run(f, `OPS/finalcut/Y6A1/20181129-r4056/D00${e}/p01/red/immask`, '.fz', i)
      img.run(f, 'grizY'[i % 5], e, (i % 62) + 1, Math.random() * 360, Math.random() * 90 - 90, randomBytes(8))
    }
  })()
  db.close()
}

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[0] ?? 512)
  const dir = mkdtempSync(join(tmpdir(), 'desfs-bench-db-'))
  const server = await new FileServer().start()
  try {
    const src = join(dir, 'src.db')
    makeDb(src, mib)
    execFileSync('zstd', ['-q', '-3', '-f', src, '-o', `${src}.zst`])
    const dbBytes = statSync(src).size
    const zBytes = statSync(`${src}.zst`).size
    server.files.set('/m.db.zst', `${src}.zst`)
    server.files.set('/m.db', src)
    const zOnly = await timed(async () => execFileSync('sh', ['-c', `zstd -d -q -c ${src}.zst > ${join(dir, 'plain')}`]))
    const plain = await timed(() => downloadMetadataDb({ url: `${server.url}/m.db`, dest: join(dir, 'a.db'), force: true }))
    const zst = await timed(() => downloadMetadataDb({ url: `${server.url}/m.db.zst`, dest: join(dir, 'b.db'), force: true }))
    console.log(
      `DB ${(dbBytes / 2 ** 20).toFixed(0)} MiB, compressed ${(zBytes / 2 ** 20).toFixed(0)} MiB (ratio ${(dbBytes / zBytes).toFixed(2)}), decoder ${zst.value.decoder}`,
    )
    table([
      ['what', 'seconds', 'MB/s of DB written'],
      ['zstd -d to a file (local, no network)', (zOnly.ms / 1000).toFixed(2), mbps(dbBytes, zOnly.ms).toFixed(0)],
      ['db download, uncompressed URL', (plain.ms / 1000).toFixed(2), mbps(dbBytes, plain.ms).toFixed(0)],
      ['db download, .zst URL (decompress while downloading)', (zst.ms / 1000).toFixed(2), mbps(dbBytes, zst.ms).toFixed(0)],
    ])
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
