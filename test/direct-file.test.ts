// Blocks only a sync wants are written around the page cache (cache/direct-file.ts, with the addon's
// writeDirect): the bytes on disk are right, the aligned part went O_DIRECT and the unaligned tail
// through the page cache, the data file's pages are not left in memory (fincore), a file system
// that refuses O_DIRECT turns it off and loses nothing, and a descriptor is never closed under a
// write in flight.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { BlockStore, type CachedFile } from '../cache/block-store.js'
import { adler32 } from '../cache/adler32.js'
import { DirectFile, splitAligned, type WriteDirect } from '../cache/direct-file.js'
import { cacheWriters } from '../fs/native.js'
import { hasTool, tmp } from './helpers.js'

const BS = 32 * 1024

/** A file's bytes: deterministic, different per block. */
function bytesOf(size: number): Buffer {
  const b = Buffer.alloc(size)
  for (let i = 0; i < size; i++) b[i] = (i * 31 + (i >> 12)) & 0xff
  return b
}

/** The file's blocks [first, end) as the fetcher hands them over: each in two pieces, as from a socket. */
function blocksOf(f: CachedFile, data: Buffer, first: number, end: number) {
  const blocks: Buffer[][] = []
  const adlers: number[] = []
  for (let i = first; i < end; i++) {
    const b = data.subarray(i * BS, i * BS + f.blockLength(i))
    const cut = Math.min(b.length, 1000 + i)
    blocks.push([b.subarray(0, cut), b.subarray(cut)].filter((p) => p.length))
    adlers.push(adler32(b))
  }
  return { blocks, adlers }
}

/** A counting wrapper around a writeDirect. */
function counting(inner: WriteDirect) {
  const c = { calls: 0, bytes: 0 }
  const fn: WriteDirect = (fd, pos, parts) => {
    c.calls++
    c.bytes += parts.reduce((n, p) => n + p.length, 0)
    return inner(fd, pos, parts)
  }
  return { c, fn }
}

function store(dir: string, writeDirect?: WriteDirect) {
  return new BlockStore(dir, { limit: 64 << 20, blockSize: BS, minFree: 0, cleanupDelayMs: 3_600_000, writeDirect })
}

t.test('cutting blocks at the last 4 KiB boundary', async (t) => {
  const parts = [Buffer.alloc(5000), Buffer.alloc(4000)]
  const [head, headLen, tail] = splitAligned(8192, parts)
  t.equal(headLen, 8192, 'the head is the 4 KiB multiple')
  t.same(
    head.map((p) => p.length),
    [5000, 3192],
    'cut inside the second part',
  )
  t.same(
    tail.map((p) => p.length),
    [808],
    'the tail is the rest',
  )
  t.equal(splitAligned(100, parts)[1], 0, 'an unaligned offset: nothing goes direct')
  t.same(splitAligned(0, [Buffer.alloc(8192)])[2], [], 'aligned throughout: no tail')
})

t.test("a sync's blocks are written around the page cache, the file's tail through it; the bytes are right", async (t) => {
  const { writeDirect } = cacheWriters()
  if (!writeDirect) return t.fail('the native addon does not load (npm ci builds it)')
  const dir = tmp(t)
  const { c, fn } = counting(writeDirect)
  const s = store(dir, fn)
  t.teardown(() => s.close())
  const size = 40 * BS + 1234 // a tail that is not a 4 KiB multiple
  const data = bytesOf(size)
  const f = s.file('OPS/sync.fits', size, null)
  for (const [first, end] of [
    [0, 32],
    [32, 41],
  ] as const) {
    const { blocks, adlers } = blocksOf(f, data, first, end)
    t.equal(await f.writeBlocks(first, blocks, adlers, true), true, `blocks ${first}-${end - 1} stored`)
  }
  t.equal(c.calls, 2, 'two writes went direct')
  t.equal(c.bytes, size - (size % 4096), 'all but the last partial 4 KiB')
  t.equal(s.stats.directBytes, c.bytes, 'counted for desfs cache stats')
  t.equal(f.complete, true, 'the file is complete')
  await f.closeFd()
  t.ok(readFileSync(s.dataPath(f.key)).equals(data), 'the data file holds the right bytes')

  // Written for a reader: through the page cache, as before.
  const g = s.file('OPS/read.fits', 8 * BS, null)
  const gd = bytesOf(8 * BS)
  const r = blocksOf(g, gd, 0, 8)
  t.equal(await g.writeBlocks(0, r.blocks, r.adlers), true, "a reader's blocks stored")
  t.equal(c.calls, 2, 'not direct')
  await g.closeFd()
  t.ok(
    readFileSync(s.dataPath(g.key))
      .subarray(0, 8 * BS)
      .equals(gd),
    'and right',
  )

  // A file written for later and not read since: none of its pages are in memory.
  if (!hasTool('fincore')) return t.fail('fincore (util-linux) is missing')
  const h = s.file('OPS/sync2.fits', 64 * BS, null)
  const hd = bytesOf(64 * BS)
  const w = blocksOf(h, hd, 0, 64)
  t.equal(await h.writeBlocks(0, w.blocks, w.adlers, true), true, 'a third file stored for later')
  await h.closeFd()
  const fsType = execFileSync('stat', ['-f', '-c', '%T', dir]).toString().trim()
  const resident = Number(
    execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', s.dataPath(h.key)])
      .toString()
      .trim(),
  )
  if (fsType === 'tmpfs') t.pass(`the cache dir is on tmpfs, where every page is in memory (${resident} bytes)`)
  else t.equal(resident, 0, `none of its ${64 * BS} bytes are in the page cache (${fsType})`)
})

t.test('a file system that refuses O_DIRECT turns it off; nothing is lost', async (t) => {
  const dir = tmp(t)
  let calls = 0
  const refusing: WriteDirect = async () => {
    calls++
    throw Object.assign(new Error('Invalid argument'), { code: 'EINVAL' })
  }
  const s = store(dir, refusing)
  t.teardown(() => s.close())
  const size = 10 * BS
  const data = bytesOf(size)
  const f = s.file('OPS/x.fits', size, null)
  s.hold(f) // in use throughout, as by a sync: both writes go through the same open data file
  const one = blocksOf(f, data, 0, 5)
  t.equal(await f.writeBlocks(0, one.blocks, one.adlers, true), true, 'the refused write is stored all the same')
  const two = blocksOf(f, data, 5, 10)
  t.equal(await f.writeBlocks(5, two.blocks, two.adlers, true), true, 'and the next')
  t.equal(calls, 1, 'direct writes were not tried again')
  t.equal(s.directWrites.on, false, 'they are off')
  s.release(f)
  await f.closeFd()
  t.ok(readFileSync(s.dataPath(f.key)).equals(data), 'the bytes are right')
})

t.test('an O_DIRECT descriptor is closed only after the writes in flight on it', async (t) => {
  const dir = tmp(t)
  const fh = await open(`${dir}/f`, 'w')
  let finish!: () => void
  const slow: WriteDirect = () => new Promise<void>((resolve) => (finish = resolve))
  const d = new DirectFile(fh, slow)
  const fd = fh.fd
  const write = d.write(0, [Buffer.alloc(4096)])
  const closed = d.close()
  await new Promise((r) => setTimeout(r, 50))
  t.equal(fh.fd, fd, 'still open while the write is in flight')
  await t.rejects(d.write(4096, [Buffer.alloc(4096)]), { code: 'EBADF' }, 'a write after close is refused')
  finish()
  await write
  await closed
  t.equal(fh.fd, -1, 'closed once it ended')
})

t.test("readers' blocks: the addon's writePieces puts every part at its place, through the page cache", async (t) => {
  const { writePieces } = cacheWriters()
  if (!writePieces) return t.fail('the native addon does not load (npm ci builds it)')
  const dir = tmp(t)
  const data = bytesOf(700_000)
  // Parts of every shape: empty, tiny, longer than a 64 KiB piece, and not aligned to anything.
  const cuts = [0, 0, 1, 4097, 70_000, 70_000, 131_072, 300_001, 699_999, 700_000]
  const parts = cuts.slice(1).map((end, i) => data.subarray(cuts[i]!, end))
  const fh = await open(`${dir}/pieces`, 'w+')
  try {
    await writePieces(fh.fd, 12_345, parts)
    const back = Buffer.alloc(data.length)
    await fh.read(back, 0, back.length, 12_345)
    t.ok(back.equals(data), '700,000 bytes from 9 parts, at an unaligned offset: every byte right')
    t.equal((await fh.stat()).size, 12_345 + data.length, 'and nothing past them')
  } finally {
    await fh.close()
  }
  const ro = await open(`${dir}/pieces`, 'r')
  await t.rejects(
    writePieces(ro.fd, 0, [Buffer.from('x')]),
    { code: 'EBADF' },
    'a descriptor not open for writing: the errno, as a rejection',
  )
  await ro.close()
  t.throws(() => void writePieces(-1, 0, []), { message: /writePieces: fd must be a descriptor/ }, 'a bad argument throws at once, named')
})

t.test('a data file is closed only after the pieces written to it are written', async (t) => {
  const dir = tmp(t)
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let writing = 0
  const slow: WriteDirect = async () => {
    writing++
    await gate
    writing--
  }
  const s = new BlockStore(dir, { limit: 64 << 20, minFree: 0, cleanupDelayMs: 3_600_000, blockSize: BS, writePieces: slow })
  t.teardown(() => s.close())
  const data = bytesOf(4 * BS)
  const f = s.file('OPS/read.fits', 4 * BS, null)
  const { blocks, adlers } = blocksOf(f, data, 0, 4)
  const stored = f.writeBlocks(0, blocks, adlers)
  for (let i = 0; i < 50 && writing === 0; i++) await new Promise((r) => setTimeout(r, 10))
  t.equal(writing, 1, 'a write of pieces is under way')
  let closed = false
  const closing = f.closeFd().then(() => (closed = true))
  await new Promise((r) => setTimeout(r, 50))
  t.equal(closed, false, 'closing the data file waits for it')
  release()
  await closing
  t.equal(writing, 0, 'and closes once it ended')
  await stored
})

t.test("readers' blocks of several files: two writes under way at most, for the whole store", async (t) => {
  const dir = tmp(t)
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let writing = 0
  let most = 0
  const slow: WriteDirect = async () => {
    most = Math.max(most, ++writing)
    await gate
    writing--
  }
  const s = new BlockStore(dir, { limit: 64 << 20, minFree: 0, cleanupDelayMs: 3_600_000, blockSize: BS, writePieces: slow })
  t.teardown(() => s.close())
  const data = bytesOf(2 * BS)
  const stored = ['a', 'b', 'c', 'd'].map((n) => {
    const f = s.file(`OPS/${n}.fits`, 2 * BS, null)
    const { blocks, adlers } = blocksOf(f, data, 0, 2)
    return f.writeBlocks(0, blocks, adlers)
  })
  for (let i = 0; i < 50 && writing < 2; i++) await new Promise((r) => setTimeout(r, 10))
  await new Promise((r) => setTimeout(r, 50))
  t.equal(writing, 2, 'four files to write: two writes under way')
  release()
  t.same(await Promise.all(stored), [true, true, true, true], 'all four stored once those end')
  t.equal(most, 2, 'never more than two at once')
})
