// A full cache disk (a small tmpfs as the cache dir; needs root): reads still return the archive's
// bytes (served from memory) or EIO, the log says the disk is full, and nothing corrupt is recorded:
// after a restart every cached block passes its check and every file reads right.
import t from 'tap'
import { mkdirSync, statfsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { bigArchive } from './cache-helpers.js'
import { run, sourceBytes, startDaemon, startServer, tmp, md5, parseMd5sum, skipBecause } from './helpers.js'

t.jobs = 1

t.test(
  'a full cache disk: right bytes or EIO, nothing corrupt recorded',
  { skip: process.getuid?.() !== 0 && 'needs root to mount a small tmpfs as the cache dir' },
  async (t) => {
    const a = bigArchive(t)
    const { server, tokenFile } = await startServer(t, a.root)
    const cacheDir = join(tmp(t, 'desfs-fulldisk-'), 'cache')
    mkdirSync(cacheDir)
    const m = await run('mount', ['-t', 'tmpfs', '-o', 'size=12m,mode=0700', 'tmpfs', cacheDir])
    if (m.code !== 0) {
      skipBecause(t, `cannot mount a tmpfs here: ${m.stderr.trim()}`)
      return
    }
    t.teardown(() => run('umount', ['-l', cacheDir]))
    // The bound and the floor would keep the disk from filling; take them away so ENOSPC happens.
    const flags = ['--cache-size', '1G', '--cache-min-free', '0']
    let d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, cacheDir, flags })
    // Another program fills the disk behind the daemon's back (its view of free space is a moment old),
    // so its writes meet ENOSPC.
    const free = statfsSync(cacheDir)
    writeFileSync(join(cacheDir, 'ballast'), Buffer.alloc(Math.max(0, free.bavail * free.bsize - (512 << 10))))
    const files = [...a.manifest.files].sort((x, y) => y.size - x.size).map((f) => f.rel)
    const check = async (what: string) => {
      const r = await run('md5sum', files, { cwd: d.mnt, timeoutMs: 120_000 })
      const got = parseMd5sum(r.stdout)
      const wrong = files.filter((f) => got.has(f) && got.get(f) !== md5(sourceBytes(a, f)))
      const failed = files.filter((f) => !got.has(f))
      t.same(wrong, [], `${what}: no file read wrong`)
      // md5sum says one line per file it could not read: one for each failed file, each EIO.
      const errors = r.stderr.split('\n').filter((l) => l.trim())
      t.same(
        failed.filter((f) => !errors.some((l) => l.includes(f) && /Input\/output error/.test(l))),
        [],
        `${what}: failures are EIO (${failed.length})`,
      )
      t.equal(errors.length, failed.length, `${what}: no other error (${errors.join('; ') || 'none'})`)
      return failed.length
    }
    await check('disk filling up')
    t.match(d.log(), /cannot write to .*code=ENOSPC.*the cache disk is full|the cache disk is nearly full/, 'the log says the disk is full')
    await d.stop()
    d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, cacheDir, flags, mnt: d.mnt, stateDir: d.stateDir })
    server.clearLog()
    const failed = await check('after a restart')
    t.equal(failed, 0, 'every file reads')
    t.notMatch(d.log(), /failed its checksum|does not match the archive checksum/, 'nothing corrupt was on record')
  },
)
