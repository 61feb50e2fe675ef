// Response bodies read without a stream (cache/sources/response-body.ts): chunks that come before a
// reader are held in order (and pause the socket past a bound), a failure reaches the reader, a
// reader that stops early leaves the rest to discard (connection kept) or destroy (connection
// closed), and a signal aborts a request before its answer and during its body. The last part runs
// through undici against a real HTTP server on 127.0.0.1.
import t, { type Test } from 'tap'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { Pool } from 'undici'
import { dispatch, parseHeaders, ResponseBody } from '../cache/sources/response-body.js'

const b = (s: string) => Buffer.from(s)

t.test('chunks before the reader are held in order, then delivered; the end reaches a late reader', async (t) => {
  const body = new ResponseBody()
  body.push(b('ab'))
  body.push(b('cd'))
  body.end()
  t.equal(await body.text(), 'abcd')
  await t.rejects(body.text(), /read once/, 'a body is read once')
})

t.test('a failure after held chunks: the reader gets the chunks, then the error', async (t) => {
  const body = new ResponseBody()
  body.push(b('ab'))
  body.fail(new Error('connection reset'))
  const got: string[] = []
  await t.rejects(
    body.each((c) => got.push(c.toString()) > 0),
    /connection reset/,
  )
  t.same(got, ['ab'])
})

t.test('chunks while reading go straight to the reader; a failure rejects it', async (t) => {
  const body = new ResponseBody()
  const got: string[] = []
  const reading = body.each((c) => got.push(c.toString()) > 0)
  body.push(b('x'))
  body.push(b('y'))
  t.same(got, ['x', 'y'], 'delivered synchronously, as they arrive')
  body.fail(new Error('body stalled'))
  await t.rejects(reading, /body stalled/)
})

t.test('past the hold bound the socket pauses, and resumes once a reader comes', async (t) => {
  const body = new ResponseBody()
  let resumed = 0
  body.resume = () => void resumed++
  t.equal(body.push(Buffer.alloc(200 * 1024)), true, 'under the bound: keep reading')
  t.equal(body.push(Buffer.alloc(100 * 1024)), false, 'over it: pause')
  let n = 0
  const reading = body.each((c) => (n += c.length) > 0)
  t.equal(resumed, 1, 'resumed when the reader came')
  t.equal(n, 300 * 1024)
  body.end()
  await reading
})

t.test('a reader that stops: the rest is drained up to a limit by discard, or aborted by destroy', async (t) => {
  const body = new ResponseBody()
  const aborted: Error[] = []
  body.abort = (e) => void aborted.push(e)
  const reading = body.each(() => false)
  body.push(b('first'))
  await reading
  t.equal(body.push(b('dropped')), true, 'a stopped body drops what comes')
  body.discard(10)
  body.push(Buffer.alloc(8))
  t.equal(aborted.length, 0, 'a small rest is read to its end: the connection can be reused')
  body.push(Buffer.alloc(8))
  t.equal(aborted.length, 1, 'past the limit the request is aborted')

  const other = new ResponseBody()
  other.abort = (e) => void aborted.push(e)
  other.push(b('a'))
  other.destroy()
  t.equal(aborted.length, 2, 'destroy aborts')
  await t.rejects(other.text(), /aborted/, 'and a later read says so')
  other.destroy()
  t.equal(aborted.length, 2, 'once')
})

t.test('a body that ended is neither aborted by discard nor destroy', async (t) => {
  const body = new ResponseBody()
  let aborted = 0
  body.abort = () => void aborted++
  body.push(b('all'))
  body.end()
  body.discard()
  body.destroy()
  t.equal(aborted, 0)
})

t.test('headers: lower-case names, repeated ones as an array', async (t) => {
  t.same(parseHeaders([b('Content-Range'), b('bytes 0-1/2'), b('Set-Cookie'), b('a'), b('set-cookie'), b('b')]), {
    'content-range': 'bytes 0-1/2',
    'set-cookie': ['a', 'b'],
  })
})

/** An HTTP server on 127.0.0.1 whose handler the test sets; counts the connections it saw. */
async function server(t: Test): Promise<{ url: string; handle: (fn: (res: ServerResponse) => void) => void; sockets: Set<Socket> }> {
  let fn: (res: ServerResponse) => void = (res) => res.end()
  const sockets = new Set<Socket>()
  const s: Server = createServer((_req, res) => fn(res))
  s.on('connection', (sock) => sockets.add(sock))
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    s.closeAllConnections()
    return new Promise<void>((r) => s.close(() => r()))
  })
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, handle: (f) => (fn = f), sockets }
}

t.test('through undici: a body arrives whole; a small discarded rest keeps the connection', async (t) => {
  const srv = await server(t)
  const pool = new Pool(srv.url, { connections: 1 })
  t.teardown(() => pool.close())
  const payload = Buffer.alloc(3 << 20, 7)
  srv.handle((res) => res.end(payload))
  const res = await dispatch(pool, { method: 'GET', path: '/a' })
  t.equal(res.status, 200)
  t.equal(res.headers['content-length'], String(payload.length))
  let n = 0
  await res.body.each((c) => (n += c.length) > 0)
  t.equal(n, payload.length)

  srv.handle((res) => res.end('0123456789'))
  const r2 = await dispatch(pool, { method: 'GET', path: '/b' })
  await r2.body.each(() => false) // stops after the first chunk
  r2.body.discard()
  srv.handle((res) => res.end('ok'))
  const r3 = await dispatch(pool, { method: 'GET', path: '/c' })
  t.equal(await r3.body.text(), 'ok')
  t.equal(srv.sockets.size, 1, 'one connection served all three')
})

t.test('through undici: a signal aborts before the answer and during the body; destroy closes the connection', async (t) => {
  const srv = await server(t)
  const pool = new Pool(srv.url, { connections: 1 })
  t.teardown(() => pool.close())
  srv.handle(() => undefined) // never answers
  const early = new AbortController()
  const waiting = dispatch(pool, { method: 'GET', path: '/slow' }, early.signal)
  setTimeout(() => early.abort(), 50)
  await t.rejects(waiting, { name: 'AbortError' }, 'aborted while waiting for headers')

  srv.handle((res) => res.write(Buffer.alloc(1000))) // sends a part, then nothing
  const during = new AbortController()
  const res = await dispatch(pool, { method: 'GET', path: '/part' }, during.signal)
  let n = 0
  const reading = res.body.each((c) => (n += c.length) > 0)
  setTimeout(() => during.abort(), 50)
  await t.rejects(reading, { name: 'AbortError' }, 'aborted during the body')
  t.equal(n, 1000, 'after the bytes that came')

  srv.handle((res) => res.write(Buffer.alloc(1 << 20)))
  const big = await dispatch(pool, { method: 'GET', path: '/big' })
  const before = srv.sockets.size
  big.body.destroy()
  srv.handle((res) => res.end('next'))
  const next = await dispatch(pool, { method: 'GET', path: '/next' })
  t.equal(await next.body.text(), 'next')
  t.equal(srv.sockets.size, before + 1, 'a destroyed body does not leave its connection for the next request')

  const aborted = new AbortController()
  aborted.abort()
  await t.rejects(dispatch(pool, { method: 'GET', path: '/x' }, aborted.signal), { name: 'AbortError' }, 'an aborted signal sends nothing')
})

t.test('through undici: a reader that throws gets its own error, and the request is aborted', async (t) => {
  const srv = await server(t)
  const pool = new Pool(srv.url, { connections: 1 })
  t.teardown(() => pool.close())
  srv.handle((res) => res.end(Buffer.alloc(1 << 20)))
  const res = await dispatch(pool, { method: 'GET', path: '/' })
  await t.rejects(
    res.body.each(() => {
      throw new Error('reader broke')
    }),
    /reader broke/,
  )
})
