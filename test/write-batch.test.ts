// WriteBatch (cache/write-batch.ts): blocks queued in one turn are written with one writev per run
// of adjacent blocks, short writes continue, a failed writev fails each of its blocks, and no more
// than two writes are under way at once.
import t from 'tap'
import type { FileHandle } from 'node:fs/promises'
import { WriteBatch } from '../cache/write-batch.js'

/** A FileHandle that records each writev (position, bytes) into a byte array; `short` caps one call's bytes. */
function fakeHandle(size: number, opts: { short?: number; fail?: boolean } = {}) {
  const data = Buffer.alloc(size)
  const calls: [pos: number, bytes: number][] = []
  const fh = {
    async writev(parts: Buffer[], pos: number) {
      if (opts.fail) throw Object.assign(new Error('no space'), { code: 'ENOSPC' })
      let n = 0
      for (const p of parts) {
        const take = Math.min(p.length, (opts.short ?? Infinity) - n)
        if (take <= 0) break
        p.copy(data, pos + n, 0, take)
        n += take
      }
      calls.push([pos, n])
      return { bytesWritten: n, buffers: parts }
    },
  }
  return { fh: fh as unknown as FileHandle, data, calls }
}

const block = (i: number, len = 100) => [Buffer.alloc(len / 2, i), Buffer.alloc(len / 2, i + 100)]

t.test('adjacent blocks queued in one turn: one writev; a gap starts another', async (t) => {
  const { fh, data, calls } = fakeHandle(1000)
  const w = new WriteBatch()
  await Promise.all([w.write(fh, 100, block(1)), w.write(fh, 0, block(0)), w.write(fh, 200, block(2)), w.write(fh, 500, block(5))])
  t.same(
    calls,
    [
      [0, 300],
      [500, 100],
    ],
    'blocks 0-2 in one call (sorted by position), block 5 in its own',
  )
  t.equal(data[0], 0)
  t.equal(data[150], 101, 'each block at its own place')
  t.equal(data[599], 105)
  await w.write(fh, 300, block(3))
  t.same(calls.slice(2), [[300, 100]], 'a later turn is a new batch')
})

t.test('a short write continues with what is left', async (t) => {
  const { fh, data, calls } = fakeHandle(400, { short: 70 })
  const w = new WriteBatch()
  await Promise.all([w.write(fh, 0, block(0)), w.write(fh, 100, block(1))])
  t.same(
    calls,
    [
      [0, 70],
      [70, 70],
      [140, 60],
    ],
    'three calls for 200 bytes written 70 at a time',
  )
  t.same([data[0], data[60], data[99], data[100], data[199]], [0, 100, 100, 1, 101], 'every byte in place')
})

t.test('a failed writev fails every block written with it', async (t) => {
  const { fh } = fakeHandle(400, { fail: true })
  const w = new WriteBatch()
  const r = await Promise.allSettled([w.write(fh, 0, block(0)), w.write(fh, 100, block(1))])
  t.same(
    r.map((x) => x.status),
    ['rejected', 'rejected'],
  )
  t.match((r[0] as PromiseRejectedResult).reason, { code: 'ENOSPC' })
})

t.test('different files are never merged', async (t) => {
  const a = fakeHandle(200)
  const b = fakeHandle(200)
  const w = new WriteBatch()
  await Promise.all([w.write(a.fh, 0, block(0)), w.write(b.fh, 100, block(1))])
  t.same([a.calls, b.calls], [[[0, 100]], [[100, 100]]])
})

t.test('a run longer than 1024 buffers (IOV_MAX) is split into several writevs', async (t) => {
  const { fh, calls } = fakeHandle(1100 * 10)
  const w = new WriteBatch()
  await Promise.all(Array.from({ length: 550 }, (_, i) => w.write(fh, i * 20, [Buffer.alloc(10, 1), Buffer.alloc(10, 2)])))
  t.same(calls, [
    [0, 512 * 20],
    [512 * 20, 38 * 20],
  ])
})

t.test('at most two writes are under way at once; the others start, in order, as those end', async (t) => {
  const started: number[] = []
  const finish: (() => void)[] = []
  // The addon's writer, held until the test lets each write end.
  const pieces = (_fd: number, pos: number) =>
    new Promise<void>((resolve) => {
      started.push(pos)
      finish.push(resolve)
    })
  const w = new WriteBatch(pieces)
  const files = Array.from({ length: 5 }, () => ({ fd: 3 }) as unknown as FileHandle) // five files: five writes
  const done = files.map((fh, i) => w.write(fh, i * 100, block(i)))
  const turn = () => new Promise((r) => setImmediate(r))
  await turn()
  t.same(started, [0, 100], 'two started')
  finish.shift()!()
  await turn()
  t.same(started, [0, 100, 200], 'one ended: the next started')
  for (let i = 0; i < 8 && finish.length; i++) {
    finish.shift()!()
    await turn()
  }
  await Promise.all(done)
  t.same(started, [0, 100, 200, 300, 400], 'all of them, in order')
})
