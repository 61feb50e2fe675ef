// The HTTP/1.1 client GETs go through (cache/sources/get-pool.ts, http1-response.ts), against raw
// servers on 127.0.0.1 that answer exactly what each case needs: the three ways a body is framed, read
// whole and cut at every byte; keep-alive, and a kept-alive connection the server closed; the
// connection limit; every deadline; aborts; a body held before anyone reads it; what a server may not
// send; and TLS with a CA of its own.
import t from 'tap'
import { createServer, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { GetPool, type GetPoolOptions } from '../cache/sources/get-pool.js'
import { Http1Response, type Http1Head } from '../cache/sources/http1-response.js'
import { classifyError } from '../cache/sources/http-client.js'
import type { RawResponse } from '../cache/sources/response-body.js'
import { localCert } from './helpers.js'

const OPTS: GetPoolOptions = { connections: 4, connectTimeoutMs: 2000, headersTimeoutMs: 2000, stallTimeoutMs: 2000 }

/** A raw server: `answer` gets each request's head (as text) and the socket. Counts connections. */
async function rawServer(
  answer: (head: string, s: Socket, n: number) => void,
): Promise<{ url: string; server: Server; conns: () => number; open: () => number }> {
  let conns = 0
  let open = 0
  let requests = 0
  const server = createServer((s) => {
    conns++
    open++
    s.on('close', () => open--)
    s.on('error', () => undefined)
    let text = ''
    s.on('data', (d) => {
      text += d.toString('latin1')
      let i: number
      while ((i = text.indexOf('\r\n\r\n')) >= 0) {
        const head = text.slice(0, i)
        text = text.slice(i + 4)
        answer(head, s, ++requests)
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}`, server, conns: () => conns, open: () => open }
}

async function bodyOf(res: RawResponse): Promise<Buffer> {
  const parts: Buffer[] = []
  await res.body.each((c) => parts.push(Buffer.from(c)) > 0)
  return Buffer.concat(parts)
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex')

t.test('Http1Response: the same answer whether bytes come whole or one at a time', async (t) => {
  const body = randomBytes(3000)
  const chunked = Buffer.concat([
    Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n'),
    Buffer.from('a;ext=1\r\n'),
    body.subarray(0, 10),
    Buffer.from('\r\nbae\r\n'),
    body.subarray(10),
    Buffer.from('\r\n0\r\nTrailer: x\r\n\r\n'),
  ])
  const sized = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n'), body])
  for (const [name, wire, reusable] of [
    ['chunked', chunked, true],
    ['Content-Length', sized, true],
  ] as const) {
    for (const step of [wire.length, 1, 7]) {
      let head: Http1Head | undefined
      const got: Buffer[] = []
      let ended: boolean | undefined
      const r = new Http1Response({ head: (h) => (head = h), body: (v) => got.push(Buffer.from(v)) > 0, end: (re) => (ended = re) })
      for (let i = 0; i < wire.length; i += step) r.feed(wire.subarray(i, i + step))
      t.equal(head?.status, name === 'chunked' ? 206 : 200, `${name} in pieces of ${step}: the final status, past the 100`)
      t.ok(Buffer.concat(got).equals(body), `${name} in pieces of ${step}: the body`)
      t.equal(ended, reusable, `${name} in pieces of ${step}: ended, connection reusable`)
      if (name === 'chunked') t.same(head?.headers['x-a'], ['1', '2'], 'a repeated header is a list')
    }
  }
  const bad = [
    ['HTTP/2 200 OK\r\n\r\n', /bad status line/],
    ['HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n', /bad Content-Length/],
    ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /bad Content-Length/],
    ['HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n', /bad header line/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /bad chunk size/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n', /longer than its size/],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab', /1 bytes after the end/],
    ['HTTP/1.1 101 Switching\r\n\r\n', /switched protocols/],
  ] as const
  for (const [wire, why] of bad) {
    const r = new Http1Response({ head: () => undefined, body: () => true, end: () => undefined })
    t.throws(() => r.feed(Buffer.from(wire)), why, `refused: ${JSON.stringify(wire.slice(0, 50))}`)
  }
  const long = new Http1Response({ head: () => undefined, body: () => true, end: () => undefined })
  t.throws(() => long.feed(Buffer.from('HTTP/1.1 200 OK\r\nX: ' + 'a'.repeat(70_000))), /headers longer/, 'endless headers are refused')
  const toClose = new Http1Response({
    head: () => undefined,
    body: () => true,
    end: (re) => t.equal(re, false, 'a body to the close ends with it, not reusable'),
  })
  toClose.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\nabc'))
  t.notOk(toClose.done, 'no length, no coding: the body runs to the close (not over after its bytes)')
  toClose.closed()
  t.ok(toClose.done, 'and is over once the connection closes')
  const cut = new Http1Response({ head: () => undefined, body: () => true, end: () => undefined })
  cut.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc'))
  t.throws(() => cut.closed(), /before the response was complete/, 'a close inside a sized body is an error')
})

t.test('bodies of every framing, keep-alive, and the connection limit', async (t) => {
  const big = randomBytes(5 << 20)
  const s = await rawServer((head, sock) => {
    const path = head.split(' ')[1]
    if (path === '/sized') sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial\r\nContent-Length: ${big.length}\r\n\r\n`), big]))
    else if (path === '/chunked') {
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')
      for (let i = 0; i < big.length; i += 1 << 20) {
        const piece = big.subarray(i, i + (1 << 20))
        sock.write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
      }
      sock.write('0\r\n\r\n')
    } else if (path === '/to-close') sock.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), big]))
    else if (path === '/empty') sock.write('HTTP/1.1 204 No Content\r\n\r\n')
    else if (path === '/echo') sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(head)}\r\n\r\n${head}`)
  })
  t.teardown(() => s.server.close())
  const pool = new GetPool(s.url, { ...OPTS, connections: 2 })
  t.teardown(() => pool.close())
  for (const path of ['/sized', '/chunked', '/to-close']) {
    const res = await pool.get(path, {})
    t.equal(md5(await bodyOf(res)), md5(big), `${path}: 5 MiB, every byte right`)
  }
  const empty = await pool.get('/empty', {})
  t.equal(empty.status, 204)
  t.equal((await bodyOf(empty)).length, 0, '204: no body')
  const echo = await bodyOf(await pool.get('/echo', { Range: 'bytes=0-9', authorization: 'Bearer x' }))
  t.match(
    echo.toString(),
    /^GET \/echo HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\nRange: bytes=0-9\r\nauthorization: Bearer x$/,
    'the request as sent',
  )
  const before = s.conns()
  for (let i = 0; i < 3; i++) await bodyOf(await pool.get('/sized', {}))
  t.equal(s.conns(), before, 'one after another, the kept-alive connection carries them all')
  let most = 0
  const watch = setInterval(() => (most = Math.max(most, s.open())), 1)
  const all = await Promise.all(Array.from({ length: 6 }, () => pool.get('/sized', {}).then(bodyOf)))
  clearInterval(watch)
  t.ok(
    all.every((b) => b.equals(big)),
    '6 at once: every body right',
  )
  t.ok(most <= 2, `never more than 2 connections open (saw ${most})`)
  await t.rejects(pool.get('/x', { 'x-bad': 'a\r\nInjected: 1' }), /bad request header/, 'a header value with CR LF is refused')
  await t.rejects(pool.get('/a b', {}), /bad request path/, 'a path with a space is refused')
})

t.test('a kept-alive connection the server closed is replaced once; a fresh one that fails is not', async (t) => {
  let answered = 0
  const s = await rawServer((head, sock, n) => {
    if (head.includes('/fail')) return void sock.destroy()
    answered++
    sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    if (n === 1) setTimeout(() => sock.end(), 20) // closes the idle connection soon after
  })
  t.teardown(() => s.server.close())
  const pool = new GetPool(s.url, OPTS)
  t.teardown(() => pool.close())
  t.equal((await bodyOf(await pool.get('/a', {}))).toString(), 'ok')
  await new Promise((r) => setTimeout(r, 100))
  t.equal((await bodyOf(await pool.get('/b', {}))).toString(), 'ok', 'the second GET succeeded on a new connection')
  t.equal(answered, 2)
  const conns = s.conns()
  await t.rejects(pool.get('/fail', {}), { code: 'UND_ERR_SOCKET' }, 'a connection closed before any answer fails the GET')
  t.ok(s.conns() - conns <= 2, 'and is not tried over and over')
})

t.test('deadlines: connect, headers, a stalled body; aborts at every stage', async (t) => {
  const s = await rawServer((head, sock) => {
    if (head.includes('/silent')) return
    if (head.includes('/stall')) return void sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc')
    sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  })
  t.teardown(() => s.server.close())
  const quick = { ...OPTS, connections: 1, headersTimeoutMs: 300, stallTimeoutMs: 300 }
  const pool = new GetPool(s.url, quick)
  t.teardown(() => pool.close())
  await t.rejects(pool.get('/silent', {}), { code: 'UND_ERR_HEADERS_TIMEOUT' }, 'no answer: the headers deadline')
  const stalled = await pool.get('/stall', {})
  await t.rejects(bodyOf(stalled), { code: 'UND_ERR_BODY_TIMEOUT' }, 'a body that stops: the stall deadline')

  // A TLS origin whose server accepts and never shakes hands: the connect deadline.
  const mute = createServer(() => undefined)
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r))
  t.teardown(() => mute.close())
  const tlsPool = new GetPool(`https://127.0.0.1:${(mute.address() as { port: number }).port}`, { ...quick, connectTimeoutMs: 300 })
  await t.rejects(tlsPool.get('/', {}), { code: 'UND_ERR_CONNECT_TIMEOUT' }, 'no handshake: the connect deadline')

  // Aborts: before the answer; while waiting for the one connection (the next GET still goes); mid-body.
  const ac = new AbortController()
  const silent = pool.get('/silent', {}, ac.signal)
  const queued = new AbortController()
  const waiting = pool.get('/ok', {}, queued.signal)
  const after = pool.get('/ok', {})
  queued.abort(new Error('called off while queued'))
  await t.rejects(waiting, /called off while queued/, 'a queued GET aborts')
  ac.abort()
  await t.rejects(silent, { name: 'AbortError' }, 'an unanswered GET aborts')
  t.equal((await bodyOf(await after)).toString(), 'ok', 'the GET queued behind them goes on a new connection')
  const mid = new AbortController()
  const res = await pool.get('/stall', {}, mid.signal)
  const reading = bodyOf(res)
  mid.abort(new Error('deadline'))
  await t.rejects(reading, /deadline/, 'a body aborted midway fails with the reason')
  t.equal((await bodyOf(await pool.get('/ok', {}))).toString(), 'ok', 'and the pool goes on')
  const conns = s.conns()
  await t.rejects(
    pool.get('/silent', {}),
    { code: 'UND_ERR_HEADERS_TIMEOUT' },
    'a kept-alive connection that does not answer: the deadline',
  )
  t.equal(s.conns(), conns, 'and the GET is not tried again on a new connection (that is only for one the server closed)')
})

t.test('a body that arrives before anyone reads it is held, then paused, and read whole', async (t) => {
  const big = randomBytes(4 << 20)
  const s = await rawServer(
    (_h, sock) => void sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big])),
  )
  t.teardown(() => s.server.close())
  const pool = new GetPool(s.url, { ...OPTS, stallTimeoutMs: 300 })
  t.teardown(() => pool.close())
  const res = await pool.get('/', {})
  await new Promise((r) => setTimeout(r, 600)) // longer than the stall deadline: a paused body is not stalled
  t.equal(md5(await bodyOf(res)), md5(big), 'every byte, in order')
})

t.test('what a server may not send fails the GET and closes the connection', async (t) => {
  const s = await rawServer((head, sock) => {
    if (head.includes('/status')) sock.write('HTTP/1.1 2x0 OK\r\n\r\n')
    else if (head.includes('/extra')) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA')
    else sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  })
  t.teardown(() => s.server.close())
  const pool = new GetPool(s.url, OPTS)
  t.teardown(() => pool.close())
  await t.rejects(pool.get('/status', {}), { code: 'HTTP1_PROTOCOL', message: /broke HTTP\/1\.1: bad status line/ })
  const bad = await pool.get('/status', {}).catch((err: unknown) => classifyError(err, 'GET /status'))
  t.match(
    bad,
    { kind: 'protocol', message: /^GET \/status: the server broke HTTP\/1\.1: bad status line/ },
    'a protocol failure, named, for the log',
  )
  const extra = await pool.get('/extra', {})
  t.equal((await bodyOf(extra)).toString(), 'ok', 'the answer itself is delivered')
  await new Promise((r) => setTimeout(r, 50))
  t.equal(s.open(), 0, 'the connection that sent bytes after it was closed, not reused')
})

t.test('https with a CA of its own: bytes right; without the CA, a certificate error', async (t) => {
  const made = await localCert(t)
  if (!made) return
  const [key, cert] = [made.keyFile, made.certFile]
  const big = randomBytes(3 << 20)
  const server = createTlsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (sock) => {
    sock.on('error', () => undefined)
    sock.once('data', () => sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big])))
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res))
  t.teardown(() => server.close())
  const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`
  const pool = new GetPool(url, { ...OPTS, ca: readFileSync(cert) })
  t.teardown(() => pool.close())
  t.equal(md5(await bodyOf(await pool.get('/', {}))), md5(big), 'over TLS, every byte right')
  const untrusting = new GetPool(url, OPTS)
  await t.rejects(untrusting.get('/', {}), { code: /SELF_SIGNED|CERT/ }, 'without the CA the server is not trusted')
  for (const code of ['DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'])
    t.match(classifyError(Object.assign(new Error('x'), { code }), 'GET /'), { message: /--ca-file/ }, `${code}: the log names the fix`)
})
