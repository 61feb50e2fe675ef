// The tree's learning through the sources' retry, in this process with a scripted source: a PROPFIND
// that fails for a passing reason (a 503) is tried again and the directory is learned; a source that
// keeps failing still gets the lookup its answer at the deadline, and the tries stop there.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { tmp } from './helpers.js'
import { buildTreeIndex } from '../fs/tree-build.js'
import { TreeIndex } from '../fs/tree-index.js'
import { Facts } from '../fs/facts.js'
import { Tree } from '../fs/tree.js'
import { SourceSet } from '../cache/sources/source-set.js'
import { SourceError, type FileFacts } from '../cache/sources/source.js'
import { systemClock } from '../cache/clock.js'
import { FakeClock, ScriptedSource } from './fakes/scripted-source.js'

const DIR = 'OPS/finalcut/r1'
const NAMES = ['a.fits', 'b.fits', 'c.fits']

/** An archive whose first `failures` PROPFINDs fail with the errors given in turn (the last repeated), then list DIR. */
class FlakyArchive extends ScriptedSource {
  lists = 0
  heads = 0
  constructor(
    private failures: number,
    private errors: SourceError[],
  ) {
    super('archive')
  }
  override list(rel = ''): Promise<Map<string, FileFacts> | null> {
    if (this.lists++ < this.failures) return Promise.reject(this.errors[Math.min(this.lists, this.errors.length) - 1]!)
    return Promise.resolve(new Map(NAMES.map((n, i) => [`${rel}/${n}`, { size: 1000 + i, adler32: null, mtime: null }])))
  }
  override stat(): Promise<FileFacts | null> {
    this.heads++
    return Promise.reject(new SourceError('server', 'HTTP 503 on HEAD', 503))
  }
}

/** A tree over a metadata DB with the files of DIR, asking `set`. */
function treeOver(t: Test, set: SourceSet, deadlineMs: number): Tree {
  const dir = tmp(t)
  const db = new Database(join(dir, 'metadata.db'))
  db.exec('CREATE TABLE Y6A2_FILE_ARCHIVE_INFO (PATH TEXT, FILENAME TEXT, COMPRESSION TEXT)')
  for (const n of NAMES) db.prepare('INSERT INTO Y6A2_FILE_ARCHIVE_INFO VALUES (?, ?, NULL)').run(DIR, n)
  db.close()
  const out = join(dir, 'tree.sqlite')
  buildTreeIndex({
    dbPath: join(dir, 'metadata.db'),
    sql: 'SELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO',
    outPath: out,
    identity: 'test',
  })
  const index = new TreeIndex(out)
  const facts = new Facts(join(dir, 'facts.sqlite'), set.identity)
  t.teardown(() => {
    index.close()
    facts.close()
  })
  return new Tree(index, facts, set, { deadlineMs })
}

t.test('a PROPFIND that fails with a 503 is tried again, and the directory is learned', async (t) => {
  const archive = new FlakyArchive(2, [new SourceError('server', 'HTTP 503 on PROPFIND', 503), new SourceError('network', 'reset')])
  const clock = new FakeClock()
  const tree = treeOver(t, new SourceSet([archive], { clock, random: () => 0.5 }), 30_000)
  const f = await tree.fileFacts(`${DIR}/b.fits`)
  t.equal(f.size, 1001, "the file's size, from the listing")
  t.equal(archive.lists, 3, 'the third PROPFIND answered')
  t.equal(archive.heads, 0, 'no HEAD')
  t.same(clock.sleeps, [200, 400], 'after backoff waits')
  t.same(
    (await tree.list(`/${DIR}`)).map((l) => [l.name, l.facts?.size]),
    NAMES.map((n, i) => [n, 1000 + i]),
    'the listing has every size',
  )
})

t.test('a source that keeps failing: the lookup answers at its deadline, and the tries stop there', async (t) => {
  const archive = new FlakyArchive(Infinity, [new SourceError('server', 'HTTP 503 on PROPFIND', 503)])
  // The wall clock here: the deadline is a real timer, and the tries must stop when it fires.
  const set = new SourceSet([archive], { clock: systemClock, factRetry: { tries: 1000, baseMs: 20, maxMs: 20 }, random: () => 0.5 })
  const tree = treeOver(t, set, 300)
  const err = await tree.fileFacts(`${DIR}/a.fits`).catch((e: Error) => e)
  t.ok(err instanceof SourceError && err.kind === 'timeout', `a timeout (${String(err)})`)
  t.match(String(err), /listing OPS\/finalcut\/r1: no answer within 0s/)
  t.ok(archive.lists > 1, `tried again meanwhile (${archive.lists} PROPFINDs)`)
  const atDeadline = archive.lists
  await sleep(300) // fifteen backoff waits
  t.ok(archive.lists <= atDeadline + 1, `no more PROPFINDs after the deadline (${archive.lists} after ${atDeadline})`)
})
