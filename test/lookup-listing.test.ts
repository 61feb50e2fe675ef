// A lookup answered by JavaScript hands its directory's listing to the native plane (when every
// file's facts are known): the directory's other names are then looked up by the plane alone, also
// after the kernel forgot them (echo 2), where a cold `stat` of files spread over a tree used to
// cost a trip to JavaScript for every name.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { makeArchive, run, startDaemon, startServer } from './helpers.js'
import { call, socketPath } from '../bin/client.js'

t.jobs = 1

t.test('after one lookup in a directory, the plane looks up its other names itself', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 4, hostile: false, fpack: 'never' })
  const { server, tokenFile } = await startServer(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const lookups = async () =>
    (await call<{ ops: { ops: Record<string, number> } }>(socketPath(d.stateDir), 'GET', '/status')).ops.ops.lookup ?? 0
  // Files sharing one directory, none of them listed by a readdir.
  const byDir = new Map<string, string[]>()
  for (const f of a.manifest.files) byDir.set(dirname(f.rel), [...(byDir.get(dirname(f.rel)) ?? []), f.rel])
  const files = [...byDir.values()].find((fs) => fs.length >= 4)!
  t.ok(files, 'a directory with 4 files')
  const stat = async (rel: string) => (await run('stat', ['-c', '%s', join(d.mnt, rel)])).stdout.trim()
  const size = (rel: string) => String(a.manifest.files.find((f) => f.rel === rel)!.size)

  t.equal(await stat(files[0]!), size(files[0]!), 'the first file: its size learned from the archive')
  const afterFirst = await lookups()
  t.ok(afterFirst > 0, 'the first lookups went to JavaScript')
  t.equal(await stat(files[1]!), size(files[1]!))
  t.equal(await stat(files[2]!), size(files[2]!))
  t.equal((await lookups()) - afterFirst, 0, "the directory's other files were looked up by the plane")

  if (process.getuid?.() === 0) {
    writeFileSync('/proc/sys/vm/drop_caches', '2')
    const before = await lookups()
    t.equal(await stat(files[3]!), size(files[3]!), 'after the kernel forgot every dentry')
    t.equal((await lookups()) - before, 0, 'still none went to JavaScript: the plane kept the listings')
  }
  t.equal((await run('stat', [join(d.mnt, dirname(files[0]!), 'no-such.fits')])).code, 1, 'a name the listing lacks: ENOENT')
})
