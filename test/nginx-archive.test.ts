// desfs against a lean WebDAV server instead of the dCache-shaped test server: Debian nginx-light with
// the dav-ext module (test/archive/nginx.ts, the plane benchmark's lean baseline). nginx answers
// PROPFIND with sizes but no checksum (no Checksums property, no Digest header on HEAD), so the mount
// must list sizes from PROPFIND and serve the right bytes with the Adler-32 unknown.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { DAV_EXT_MODULE, NGINX, NginxArchive } from './archive/nginx.js'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { makeArchive, md5, needTool, parseMd5sum, run, sourceBytes, startDaemon, tmp } from './helpers.js'

t.jobs = 1

async function nginxFor(t: Test, root: string) {
  const token = makeToken()
  const tokenFile = join(tmp(t, 'desfs-token-'), 'bearer_token')
  writeTokenFile(tokenFile, token)
  const server = await new NginxArchive({ root, token, accessLog: true }).start()
  t.teardown(() => server.stop())
  return { server, token, tokenFile }
}

t.test('nginx serves the archive: bearer check, ranges, PROPFIND with sizes', async (t) => {
  if (!needTool(t, NGINX, 'nginx-light') || !needTool(t, DAV_EXT_MODULE, 'libnginx-mod-http-dav-ext')) return
  const a = makeArchive(t, { hostile: false })
  const { server, token } = await nginxFor(t, a.root)
  const f = a.manifest.files.find((x) => x.size > 100)!
  const url = `${server.archiveUrl}/${f.rel}`
  const auth = ['-H', `Authorization: Bearer ${token}`]
  t.equal((await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', url])).stdout, '401', 'no token: 401')
  t.equal(
    (await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Authorization: Bearer nope', url])).stdout,
    '401',
    'a wrong token: 401',
  )
  const r = await run('curl', ['-sS', '-f', '-r', '10-19', ...auth, url], { binary: true })
  t.equal(r.code, 0)
  t.equal(
    Buffer.from(r.stdout, 'latin1').toString('hex'),
    sourceBytes(a, f.rel).subarray(10, 20).toString('hex'),
    'a range gives those bytes',
  )
  const dir = f.rel.slice(0, f.rel.lastIndexOf('/'))
  const p = await run('curl', ['-sS', '-X', 'PROPFIND', '-H', 'Depth: 1', ...auth, `${server.archiveUrl}/${dir}/`])
  t.match(p.stdout, new RegExp(`<D:getcontentlength>${f.size}</D:getcontentlength>`), 'PROPFIND gives the size')
  t.same(
    server.log().map((x) => [x.method, x.path, x.status]),
    [
      ['GET', f.rel, 401],
      ['GET', f.rel, 401],
      ['GET', f.rel, 206],
      ['PROPFIND', dir, 207],
    ],
    'the request log',
  )
})

t.test('a mount on nginx: sizes from PROPFIND, the right bytes, checksums unknown', async (t) => {
  if (!needTool(t, NGINX, 'nginx-light') || !needTool(t, DAV_EXT_MODULE, 'libnginx-mod-http-dav-ext')) return
  const a = makeArchive(t, { hostile: false })
  const { server, tokenFile } = await nginxFor(t, a.root)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const dir = a.manifest.files[0]!.rel.slice(0, a.manifest.files[0]!.rel.lastIndexOf('/'))
  const files = a.manifest.files.filter((f) => f.rel.slice(0, f.rel.lastIndexOf('/')) === dir)
  t.ok(files.length >= 2, `a directory with several files (${files.length})`)

  const st = await run('stat', ['-c', '%s %n', ...files.map((f) => join(d.mnt, f.rel))])
  t.equal(st.code, 0, st.stderr)
  t.same(
    st.stdout.trim().split('\n'),
    files.map((f) => `${f.size} ${join(d.mnt, f.rel)}`),
    'every size as in the archive',
  )
  t.same(
    server.log().filter((x) => x.method === 'HEAD'),
    [],
    'sizes came from PROPFIND, no HEAD per file',
  )
  t.ok(
    server.log().some((x) => x.method === 'PROPFIND' && x.path === dir && x.status === 207),
    'the directory was listed with PROPFIND',
  )

  const sums = await run(
    'md5sum',
    files.map((f) => join(d.mnt, f.rel)),
  )
  t.equal(sums.code, 0, sums.stderr)
  const got = parseMd5sum(sums.stdout)
  t.same(
    files.filter((f) => got.get(join(d.mnt, f.rel)) !== md5(sourceBytes(a, f.rel))).map((f) => f.rel),
    [],
    "the bytes read through the mount are the archive's",
  )
  t.ok(
    server.log().some((x) => x.method === 'GET' && x.status === 206),
    'read with ranged GETs',
  )

  const x = await run('getfattr', ['--absolute-names', '--only-values', '-n', 'user.desfs.adler32', join(d.mnt, files[0]!.rel)])
  t.not(x.code, 0, 'no Adler-32 is known: nginx sends no Digest and no Checksums')
})
