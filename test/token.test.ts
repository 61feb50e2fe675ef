// Bearer tokens from files and the environment: discovery order, refusing files and directories
// others can read, `desfs token status` (never the token itself), and a token rotated and expiring
// while a large file is being read through the mount.
import t from 'tap'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { makeToken, writeTokenFile } from '../bin/demo/token.js'
import { readSlowly } from './slow-read.js'
import { desfs, makeArchive, sourceBytes, needTool, PYTHON, startDaemon, startServer, tmp, until, skipBecause } from './helpers.js'

t.jobs = 1
const uid = process.getuid!()

t.test('desfs token status without a daemon', async (t) => {
  const dir = tmp(t)
  const daa = join(dir, 'daa')
  const xdg = join(dir, 'xdg')
  mkdirSync(xdg, { mode: 0o700 })
  const base: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    DESFS_CONFIG: join(dir, 'none'),
    DES_ARCHIVE_ACCESS_DIR: daa,
    XDG_RUNTIME_DIR: xdg,
    DESFS_STATE_DIR: join(dir, 'state'),
  }
  delete base.BEARER_TOKEN
  delete base.BEARER_TOKEN_FILE
  delete base.DESFS_TOKEN_FILE
  const status = (env: NodeJS.ProcessEnv = base, args: string[] = []) => desfs(['token', 'status', ...args], { env })

  const daaToken = makeToken({ sub: 'from-daa' })
  writeTokenFile(join(daa, 'bearer_token'), daaToken)

  await t.test('des-archive-access token file, with subject, issuer, scopes and time left', async (t) => {
    if (existsSync(`/tmp/bt_u${uid}`)) return skipBecause(t, `/tmp/bt_u${uid} exists on this machine and comes first`)
    const r = await status()
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, new RegExp(`source\\s+${join(daa, 'bearer_token')}`))
    t.match(r.stdout, /subject\s+from-daa/)
    t.match(r.stdout, /issuer\s+https:\/\/desfs\.test\/des/)
    t.match(r.stdout, /scopes\s+storage\.read:\/des/)
    t.match(r.stdout, /expires\s+\S+Z \(in (59m\d\ds|1h00m)\)/)
    t.match(r.stdout, /via\s+read directly \(no daemon running\)/)
    t.notMatch(r.stdout + r.stderr, /eyJ/, 'the token itself is never printed')
  })

  await t.test('discovery order: BEARER_TOKEN, BEARER_TOKEN_FILE, $XDG_RUNTIME_DIR/bt_u$UID, then the rest', async (t) => {
    writeTokenFile(join(xdg, `bt_u${uid}`), makeToken({ sub: 'from-xdg' }))
    t.match((await status()).stdout, /subject\s+from-xdg/, 'XDG_RUNTIME_DIR before des-archive-access')
    const btf = join(dir, 'btf', 'tok')
    writeTokenFile(btf, makeToken({ sub: 'from-btf' }))
    t.match((await status({ ...base, BEARER_TOKEN_FILE: btf })).stdout, /subject\s+from-btf/, 'BEARER_TOKEN_FILE before XDG')
    const env = await status({ ...base, BEARER_TOKEN_FILE: btf, BEARER_TOKEN: `  ${makeToken({ sub: 'from-env' })}\n` })
    t.match(env.stdout, /source\s+env BEARER_TOKEN\nsubject\s+from-env/, 'BEARER_TOKEN first, whitespace stripped')
    const explicit = await status({ ...base, BEARER_TOKEN: makeToken({ sub: 'from-env' }) }, ['--token-file', join(daa, 'bearer_token')])
    t.match(explicit.stdout, /subject\s+from-daa/, '--token-file replaces discovery')
  })

  await t.test('a token file or directory others can read is refused with the chmod to run', async (t) => {
    const d = join(dir, 'loose')
    const f = join(d, 'tok')
    writeTokenFile(f, makeToken())
    chmodSync(f, 0o644)
    let r = await status({ ...base, BEARER_TOKEN_FILE: f })
    t.equal(r.code, 4)
    t.match(r.stdout, new RegExp(`token file ${f} is readable by group/others \\(mode 644\\): run chmod 600 ${f}`))
    chmodSync(f, 0o600)
    chmodSync(d, 0o755)
    r = await status({ ...base, BEARER_TOKEN_FILE: f })
    t.equal(r.code, 4)
    t.match(r.stdout, new RegExp(`token directory ${d} is accessible to group/others \\(mode 755\\): run chmod 700 ${d}`))
    // A shared sticky directory like /tmp (WLCG's /tmp/bt_u$UID) is fine: the file's 0600 protects it.
    const sticky = join(dir, 'sticky')
    mkdirSync(sticky)
    chmodSync(sticky, 0o1777)
    writeTokenFile(join(sticky, 'tok'), makeToken({ sub: 'sticky' }))
    chmodSync(sticky, 0o1777)
    r = await status({ ...base, BEARER_TOKEN_FILE: join(sticky, 'tok') })
    t.equal(r.code, 0, r.stdout)
    t.match(r.stdout, /subject\s+sticky/)
  })

  await t.test('an expired token says so and exits 4; --json never holds the token', async (t) => {
    const f = join(dir, 'exp', 'tok')
    const tok = makeToken({ sub: 'old' }, -120)
    writeTokenFile(f, tok)
    const r = await status({ ...base, BEARER_TOKEN_FILE: f })
    t.equal(r.code, 4)
    t.match(r.stdout, /expires\s+\S+ \(EXPIRED 2m\d\ds ago\)/)
    const j = await status({ ...base, BEARER_TOKEN_FILE: f }, ['--json'])
    const parsed = JSON.parse(j.stdout) as { token: { subject: string; expiresIn: number } }
    t.equal(parsed.token.subject, 'old')
    t.ok(parsed.token.expiresIn < 0)
    t.notOk(j.stdout.includes(tok.split('.')[1]!), 'no part of the token in the JSON')
  })
})

t.test('a file token expiring and rotated during a large read: the read completes', async (t) => {
  if (!needTool(t, PYTHON, 'python3')) return
  const a = makeArchive(t, { hostile: false, largeFileBytes: 16 << 20 })
  const big = a.manifest.largeFile!
  const { server, tokenFile } = await startServer(t, a.root)
  const dir = tmp(t)
  const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
  const loaded = () => d.log().split('bearer token loaded').length - 1
  const sleepUntil = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - Date.now())))

  // A token with seconds to live, and the only one the archive accepts.
  const t1 = makeToken({ sub: 'reader', jti: 'first' }, 4)
  const t1exp = (JSON.parse(Buffer.from(t1.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000
  server.tokens = new Set([t1])
  const before = loaded()
  writeTokenFile(tokenFile, t1)
  await until(() => loaded() > before, 10_000)
  server.clearLog()
  const started = Date.now()
  // 16 blocks, 0.5 s apart, fetched one by one: the read outlives the first token by seconds.
  const reading = readSlowly(join(d.mnt, big), 0.5)
  await until(() => server.log.some((r) => r.method === 'GET' && r.tokenId === 'first'), 10_000)

  // Expiry: htgettoken renews a second before exp, replacing the file by rename; the first token
  // then runs out while the read goes on.
  await sleepUntil(t1exp - 1000)
  const t2 = makeToken({ sub: 'reader', jti: 'second' }, 3600)
  server.tokens = new Set([t1, t2])
  writeTokenFile(tokenFile, t2)
  // Rotation: a new token replaces the file and the archive stops accepting the old one at once.
  await sleepUntil(t1exp + 1500)
  const t3 = makeToken({ sub: 'reader', jti: 'third' }, 3600)
  server.tokens = new Set([t3])
  writeTokenFile(tokenFile, t3)

  const r = await reading
  const secs = (Date.now() - started) / 1000
  t.equal(r.code, 0, `the read through the mount succeeds (${r.stderr})`)
  t.equal(r.stdout.slice(0, 32), createHash('md5').update(sourceBytes(a, big)).digest('hex'), 'the bytes are the source bytes')
  const used = new Set(server.log.filter((x) => x.method === 'GET' && x.port === 'door' && x.status !== 401).map((x) => x.tokenId))
  t.ok(
    used.has('first') && used.has('second') && used.has('third'),
    `reads went on with each token in turn (${[...used].join(', ')}; read took ${secs.toFixed(1)} s)`,
  )
  if (r.code !== 0) t.comment(d.log())
  t.match(d.log(), /bearer token loaded/)
  t.notMatch(d.log(), /eyJ/, 'no token in the log')

  await t.test('desfs token status goes through the running daemon', async (t) => {
    const s = await desfs(['token', 'status', '--state-dir', d.stateDir], { env: { ...process.env, DESFS_CONFIG: join(dir, 'none') } })
    t.equal(s.code, 0, s.stderr)
    t.match(s.stdout, new RegExp(`source\\s+${tokenFile}`))
    t.match(s.stdout, /via\s+daemon pid \d+/)
  })
})
