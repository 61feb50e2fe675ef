// The project's dCache-like test server (bin/demo/server.ts) as a client sees it when it gives up:
// a request abandoned while the server is still reading it (a lookup's deadline aborts its PROPFIND)
// ends that request only; the server, and the process it runs in, go on answering.
import t from 'tap'
import { request } from 'node:http'
import { makeArchive, startServer } from './helpers.js'

/** A PROPFIND Depth 1 of `url`, its body sent; resolves with the status, or rejects when it fails. */
function propfind(url: string, token: string, abortAfterMs?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'PROPFIND',
      headers: { authorization: `Bearer ${token}`, depth: '1', 'content-type': 'application/xml' },
    })
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    // The body goes out in two parts: the server is still reading it when the client gives up.
    req.write('<?xml version="1.0"?><propfind xmlns="DAV:">')
    if (abortAfterMs !== undefined) setTimeout(() => req.destroy(new Error('given up')), abortAfterMs)
    else req.end('<allprop/></propfind>')
  })
}

t.test('a PROPFIND abandoned while its body is being read ends alone: the server answers the next one', async (t) => {
  const a = makeArchive(t, { exposures: 1, ccds: 1, hostile: false, fpack: 'never' })
  const { server, token } = await startServer(t, a.root, { faults: { latencyMs: 200 } })
  const dir = `${server.archiveUrl}/${a.manifest.files[0]!.rel.split('/').slice(0, -1).join('/')}/`
  await t.rejects(propfind(dir, token, 300), /given up/, 'the client gave up')
  // Time for the server to meet the broken request (its latency ends, it reads the body).
  await new Promise((r) => setTimeout(r, 400))
  t.equal(await propfind(dir, token), 207, 'the next PROPFIND is answered')
})
