// Settings and answers that used to be taken as given and then broke things quietly (issue 15, items
// 4, 6, 7, 8), checked in-process: URLs with credentials, a query or a fragment; durations out of
// range; sizes a server sends in other notations; facts learned from one source served for another;
// token files that are not one token. The command-line side is in input-cli.test.ts.
import t from 'tap'
import Database from 'better-sqlite3'
import { chmodSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { tmp } from './helpers.js'
import { daemonConfig, resolveSettings, type Setting } from '../daemon/config.js'
import { UserError } from '../daemon/errors.js'
import { sqlTimeoutMs } from '../daemon/control/routes-sql.js'
import { discoverToken, TokenProvider } from '../daemon/token/token.js'
import { log } from '../daemon/log.js'
import { downloadMetadataDb } from '../bin/db-download.js'
import { parseMultistatus } from '../cache/sources/propfind.js'
import { ArchiveSource } from '../cache/sources/archive.js'
import { readRangeBody, type HttpClient, type HttpResponse } from '../cache/sources/http-client.js'
import { ResponseBody } from '../cache/sources/response-body.js'
import { Facts } from '../fs/facts.js'

const NO_CONFIG = { DESFS_CONFIG: '/nonexistent/desfs-config' }

/** daemonConfig over flags only (no environment, no config file); returns the error message or the config. */
function configFrom(flags: Record<string, string>) {
  const prev = process.env.DESFS_CONFIG
  process.env.DESFS_CONFIG = NO_CONFIG.DESFS_CONFIG
  try {
    return daemonConfig(resolveSettings({ db: '/x/metadata.db', archive: 'http://127.0.0.1:9/des', ...flags }, {}), {
      needMountpoint: false,
    })
  } finally {
    if (prev === undefined) delete process.env.DESFS_CONFIG
    else process.env.DESFS_CONFIG = prev
  }
}

/** The one-line refusal of these flags, or '(accepted)'. */
function refusal(flags: Record<string, string>): string {
  try {
    configFrom(flags)
  } catch (err) {
    if (!(err instanceof UserError)) throw err
    return err.message.includes('\n') ? `(more than one line) ${err.message}` : err.message
  }
  return '(accepted)'
}

t.test('URL settings: http(s) only, never credentials, a query or a fragment', async (t) => {
  const creds = refusal({ archive: 'https://alice:s3cret-pw@dcache.example.org:2880/des' })
  t.match(creds, /^archive \(from flag --archive\): .*holds a user name or password.*token file \(--token-file/)
  t.notMatch(creds, /s3cret-pw|alice/, 'the password (and user) are never repeated')
  t.match(refusal({ archive: 'https://user@dcache.example.org/des' }), /holds a user name or password/)
  t.match(refusal({ archive: 'http://127.0.0.1:9/des?x=1' }), /has a query string.*remove the '\?\.\.\.' part/)
  t.match(refusal({ archive: 'http://127.0.0.1:9/des?' }), /has a query string/, 'even an empty one')
  t.match(refusal({ archive: 'http://127.0.0.1:9/des#top' }), /has a fragment/)
  t.match(refusal({ archive: 'ftp://127.0.0.1/des' }), /is not an http\(s\) archive URL/)
  t.match(refusal({ archive: 'not a url' }), /is not a URL/)
  t.match(
    refusal({ 's3-url': 's3://bucket/des', 's3-endpoint': 'http://k:secret@127.0.0.1:9000' }),
    /^s3_endpoint .*holds a user name or password/,
  )
  t.match(refusal({ 's3-url': 's3://bucket/des', 's3-endpoint': 'http://127.0.0.1:9000/?x=1' }), /^s3_endpoint .*has a query string/)
  await t.rejects(
    downloadMetadataDb({ url: 'https://bob:hunter2@127.0.0.1:9/db.zst', dest: join(tmp(t), 'm.db') }),
    { message: /^'https:\/\/\*\*\*@127\.0\.0\.1:9\/db\.zst' holds a user name or password/ },
    'db_url too',
  )
  const ok = configFrom({
    archive: 'https://dcache.example.org:2880/des/persistent/DESDM_ARCHIVE//',
    's3-url': 's3://bucket/des',
    's3-endpoint': 'http://127.0.0.1:9000',
  })
  t.equal(ok.archive, 'https://dcache.example.org:2880/des/persistent/DESDM_ARCHIVE', 'a good URL passes, trailing slashes dropped')
  t.equal(ok.s3Endpoint, 'http://127.0.0.1:9000')
})

t.test('durations: each has a range, refused outside it with the setting and the range named', async (t) => {
  t.match(refusal({ 'read-timeout': '0' }), /^read_timeout \(from flag --read-timeout\): '0' is out of range: use 1s to 1h$/)
  t.match(refusal({ 'read-timeout': '25d' }), /^read_timeout .*'25d' is out of range/)
  t.match(refusal({ 'read-timeout': '99999999999h' }), /^read_timeout .*out of range/)
  t.match(refusal({ 'stall-timeout': '30d' }), /^stall_timeout .*'30d' is out of range: use 1s to 1h$/)
  t.match(refusal({ 'connect-timeout': '200ms' }), /^connect_timeout .*out of range: use 1s to 10m$/)
  t.match(refusal({ 'sql-timeout': '30d' }), /^sql_timeout .*'30d' is out of range: use 100ms to 24h, or 0 for none$/)
  t.match(refusal({ 'read-timeout': 'soon' }), /^read_timeout .*is not a duration/)
  const c = configFrom({ 'read-timeout': '5s', 'stall-timeout': '1h', 'connect-timeout': '10m', 'sql-timeout': '0' })
  t.same(
    [c.readTimeoutMs, c.stallTimeoutMs, c.connectTimeoutMs, c.sqlTimeoutMs],
    [5000, 3_600_000, 600_000, 0],
    'bounds are inclusive; sql 0 means none',
  )
  const settings = new Map<string, Setting>([['sql_timeout', { value: '30d', source: 'env DESFS_SQL_TIMEOUT' }]])
  t.throws(
    () => sqlTimeoutMs(settings),
    /sql_timeout \(from env DESFS_SQL_TIMEOUT\): '30d' is out of range/,
    "the daemon's SQL engine reads it the same way",
  )
  settings.set('sql_timeout', { value: '0', source: 'flag --sql-timeout' })
  t.equal(sqlTimeoutMs(settings), 0)
})

const multistatus = (size: string) => `<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>/des/dir/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
<d:response><d:href>/des/dir/a.fits</d:href><d:propstat><d:prop><d:resourcetype/><d:getcontentlength>${size}</d:getcontentlength></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>`

t.test('sizes from the server: decimal digits within 2^53-1, nothing else', async (t) => {
  // 2^53 + 1 written out: String(2 ** 53 + 1) would already be rounded to 2^53.
  for (const bad of ['0x10', '1e20', '99999999999999999999', '9007199254740993', '9007199254740992', '-5', '5.0', ' 7 x']) {
    t.throws(
      () => parseMultistatus(multistatus(bad)),
      /getcontentlength '.*' of '\/des\/dir\/a\.fits' is not a byte count/,
      `PROPFIND size ${bad} refused`,
    )
  }
  t.equal(parseMultistatus(multistatus(String(2 ** 53 - 1)))[1]!.facts.size, 2 ** 53 - 1, '2^53-1 is fine')
  t.equal(parseMultistatus(multistatus('0'))[1]!.facts.size, 0)
  t.equal(parseMultistatus(multistatus(''))[1]!.facts.size, -1, 'no size at all stays unknown')

  // HEAD: a client that answers with a given Content-Length.
  const empty = () => {
    const body = new ResponseBody()
    body.end()
    return body
  }
  const headWith = (length: string | undefined) =>
    ({
      request: async () => ({ status: 200, headers: length === undefined ? {} : { 'content-length': length }, body: empty(), url: '' }),
      close: async () => undefined,
    }) as unknown as HttpClient
  for (const bad of ['0x10', '1e20', '99999999999999999999', '9007199254740993', '-5', undefined]) {
    const src = new ArchiveSource({ base: 'http://127.0.0.1:9/des', http: headWith(bad), tokenHint: 'get a token' })
    await t.rejects(
      src.stat('dir/a.fits'),
      { name: 'SourceError', kind: 'protocol', message: /Content-Length .* is not a byte count/ },
      `HEAD Content-Length ${bad} refused`,
    )
  }
  t.equal(
    (await new ArchiveSource({ base: 'http://127.0.0.1:9/des', http: headWith('1234'), tokenHint: 'get a token' }).stat('dir/a.fits'))!
      .size,
    1234,
  )

  // A 206 must name exactly the range asked for; a 17-digit offset that rounds onto it does not.
  // Asked for [2^53, 2^53+2), whose last offset a JS number rounds to 2^53; answered with 2^53+1 for
  // both ends, which rounds to the same. The body delivers the bytes, so only reading the
  // Content-Range strictly can refuse it.
  const start = 2 ** 53
  const twoBytes = new ResponseBody()
  twoBytes.push(Buffer.from('xy'))
  twoBytes.end()
  const res = {
    status: 206,
    headers: { 'content-range': 'bytes 9007199254740993-9007199254740993/*' },
    body: twoBytes,
    url: '',
  } satisfies HttpResponse
  await t.rejects(
    readRangeBody(res, start, start + 2, 'GET x', () => undefined),
    { name: 'SourceError', kind: 'range' },
    'Content-Range offsets beyond 2^53-1 are refused, not rounded',
  )
})

t.test("facts are kept per source: a wrong URL's facts never reach the right one", async (t) => {
  const dir = tmp(t)
  const file = join(dir, 'facts.sqlite')
  const wrong = new Facts(file, 'archive http://127.0.0.1:9/des?x=1')
  wrong.recordListing('dir', new Map([['dir/a.fits', { size: 0, adler32: null, mtime: null }]]))
  t.equal(wrong.file('dir/a.fits')?.size, 0)
  wrong.close()
  const right = new Facts(file, 'archive http://127.0.0.1:9/des')
  t.equal(right.file('dir/a.fits'), undefined, "the right URL does not see the wrong one's 0 bytes")
  t.notOk(right.dirListed('dir'), 'nor its listing')
  right.recordFile('dir/a.fits', { size: 2880, adler32: 'deadbeef', mtime: null })
  t.same(
    [...right.filesIn('dir')].map(([n, f]) => [n, f.size]),
    [['a.fits', 2880]],
  )
  right.close()
  const again = new Facts(file, 'archive http://127.0.0.1:9/des?x=1')
  t.equal(again.file('dir/a.fits')?.size, 0, 'each source keeps its own')
  again.close()

  // Seeded without a source (test and benchmark tools): the first source to open the file adopts them.
  const seeded = join(dir, 'seeded.sqlite')
  const tool = new Facts(seeded)
  tool.recordListing('d', new Map([['d/x.fits', { size: 5, adler32: null, mtime: null }]]))
  tool.close()
  const first = new Facts(seeded, 'archive http://a/des')
  t.equal(first.file('d/x.fits')?.size, 5, 'adopted')
  t.ok(first.dirListed('d'))
  first.close()
  const second = new Facts(seeded, 'archive http://b/des')
  t.equal(second.file('d/x.fits'), undefined, 'adopted by one source only')
  second.close()

  // Facts written before they were kept per source: their origin is unknown, so they are dropped.
  const legacy = join(dir, 'legacy.sqlite')
  const db = new Database(legacy)
  db.exec(`CREATE TABLE file_facts(path TEXT PRIMARY KEY, size INTEGER NOT NULL, adler32 TEXT, mtime INTEGER) WITHOUT ROWID;
    CREATE TABLE dir_listed(path TEXT PRIMARY KEY, listed_at INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO file_facts VALUES ('dir/a.fits', 0, NULL, NULL); INSERT INTO dir_listed VALUES ('dir', 1);`)
  db.close()
  const upgraded = new Facts(legacy, 'archive http://127.0.0.1:9/des')
  t.equal(upgraded.discarded, 1, 'counted for the log')
  t.equal(upgraded.file('dir/a.fits'), undefined, 'a 0 size of unknown origin is not served')
  t.notOk(upgraded.dirListed('dir'))
  upgraded.close()
})

t.test('token checks: one token per file, directories named as such, expiry said right', async (t) => {
  const dir = tmp(t)
  const tok = makeToken()
  const envFor = (file: string) => ({ DESFS_TOKEN_FILE: file })
  const lines = join(dir, 'lines', 'tok')
  writeTokenFile(lines, `${tok}\n${makeToken()}`)
  let info = await discoverToken(envFor(lines))
  t.match(info.problem, /token file .*lines\/tok holds more than one token \(a line break inside it\)/)
  t.equal(info.token, undefined, 'not used')
  t.notOk(JSON.stringify(info).includes(tok.slice(0, 20)), 'the token is not repeated in the problem')
  const spaced = join(dir, 'spaced', 'tok')
  writeTokenFile(spaced, `Bearer ${tok}`)
  t.match((await discoverToken(envFor(spaced))).problem, /holds more than one token \(a space or tab inside it\)/)
  info = await discoverToken({ BEARER_TOKEN: `${tok.slice(0, 30)} ${tok.slice(30)}` })
  t.match(info.problem, /^\$BEARER_TOKEN holds more than one token \(a space or tab/)
  t.equal((await discoverToken({ BEARER_TOKEN: `  ${tok}\n` })).token, tok, 'surrounding whitespace is still fine')

  const asDir = join(dir, 'tokdir')
  mkdirSync(asDir, { mode: 0o755 })
  chmodSync(asDir, 0o755)
  info = await discoverToken(envFor(asDir))
  t.match(info.problem, /token file .*tokdir is a directory: point --token-file/)
  t.notMatch(info.problem, /readable by group/)

  // An expired token is logged as expired, at once, and never as "expires soon".
  const expired = join(dir, 'expired', 'tok')
  writeTokenFile(expired, makeToken({}, -120))
  const from = log.recent.length
  const p = new TokenProvider(envFor(expired))
  await p.reload()
  const said = () => log.recent.slice(from).join('\n')
  t.match(said(), /warn bearer token has expired .*expired=/)
  await new Promise((r) => setTimeout(r, 50)) // a 0 ms "soon" timer, as before, would have fired by now
  t.notMatch(said(), /expires soon/)
  await p.close()
})
