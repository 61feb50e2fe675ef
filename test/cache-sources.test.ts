// Sources: an S3 copy of the archive (SigV4-signed requests checked by the test S3 server) and a
// local mirror serve the same bytes as the archive; with the archive dead, reads fail over to the
// next source; a partial mirror serves what it has and the archive the rest.
import t, { type Test } from 'tap'
import { cpSync, mkdirSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { S3Server } from './archive/s3-server.js'
import { bigArchive } from './cache-helpers.js'
import { run, sourceBytes, startDaemon, startServer, tmp, type ArchiveFixture, md5, parseMd5sum } from './helpers.js'

t.jobs = 1
const CREDS = { accessKeyId: 'AKIDDESFSTEST', secretAccessKey: 'desfs-test-secret/0123456789' }
// Credentials from the environment only: no profile of the user's, and never the instance metadata service.
const AWS_ENV = {
  AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
  AWS_CONFIG_FILE: '/nonexistent',
  AWS_PROFILE: '',
  AWS_EC2_METADATA_DISABLED: 'true',
}

async function allMd5Match(t: Test, mnt: string, a: ArchiveFixture): Promise<void> {
  const list = a.manifest.files.map((f) => f.rel)
  const r = await run('md5sum', list, { cwd: mnt, timeoutMs: 120_000 })
  t.equal(r.code, 0, `md5sum exits 0 ${r.stderr.slice(0, 500)}`)
  const got = parseMd5sum(r.stdout)
  t.same(
    list.filter((f) => got.get(f) !== md5(sourceBytes(a, f))),
    [],
    `all ${list.length} files have the archive's bytes`,
  )
}

t.test('S3 and a mirror serve the same bytes as the archive; failover from a dead source', async (t) => {
  const a = bigArchive(t)
  const s3 = await new S3Server({ root: a.root, bucket: 'des-archive', prefix: 'DESDM_ARCHIVE', credentials: CREDS }).start()
  t.teardown(() => s3.stop())
  const s3Flags = ['--s3-url', s3.url, '--s3-endpoint', s3.endpoint]

  await t.test('cloud only: S3 with signed requests, nothing asked of the archive', async (t) => {
    const { server, tokenFile } = await startServer(t, a.root)
    const d = await startDaemon(t, {
      db: a.db,
      archive: server.archiveUrl,
      tokenFile,
      flags: [...s3Flags, '--sources', 's3'],
      env: AWS_ENV,
    })
    await allMd5Match(t, d.mnt, a)
    t.equal(server.log.length, 0, 'no request reached the archive')
    t.ok(s3.count('GET') > a.manifest.files.length, `S3 served listings and ranges (${s3.count('GET')} GETs)`)
    t.notOk(
      s3.log.some((r) => r.status === 403),
      'every signature was accepted',
    )
  })

  await t.test('a wrong secret is refused by S3 and reported', async (t) => {
    const { server, tokenFile } = await startServer(t, a.root)
    const d = await startDaemon(t, {
      db: a.db,
      archive: server.archiveUrl,
      tokenFile,
      flags: [...s3Flags, '--sources', 's3', '--read-timeout', '5s'],
      env: { ...AWS_ENV, AWS_SECRET_ACCESS_KEY: 'wrong' },
    })
    const r = await run('cat', [join(d.mnt, a.manifest.largeFile!)], { binary: true })
    t.not(r.code, 0, 'reading fails')
    t.match(r.stderr, /Input\/output error/)
    t.match(d.log(), /HTTP 403 from S3 \(check AWS_PROFILE \/ AWS_ACCESS_KEY_ID, or that the bucket is public\)/)
  })

  await t.test('a partial mirror first: its files come from it, the rest from the archive', async (t) => {
    const { server, tokenFile } = await startServer(t, a.root)
    const mirror = tmp(t, 'desfs-mirror-')
    const inMirror = a.manifest.files.filter((f) => f.rel.includes('/multiepoch/'))
    for (const f of inMirror) {
      mkdirSync(join(mirror, dirname(f.rel)), { recursive: true })
      cpSync(join(a.root, f.rel), join(mirror, f.rel))
    }
    const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile, flags: ['--mirror-dir', mirror] })
    await allMd5Match(t, d.mnt, a)
    const gets = server.log.filter((r) => r.method === 'GET' && r.port === 'pool')
    t.notOk(
      gets.some((r) => r.path.includes('/multiepoch/')),
      'nothing the mirror has was fetched from the archive',
    )
    t.ok(
      gets.some((r) => r.path.includes('/finalcut/')),
      'what it lacks came from the archive',
    )
  })

  await t.test('archive dead: reads fail over to S3', async (t) => {
    const { server, tokenFile } = await startServer(t, a.root)
    const url = server.archiveUrl
    await server.stop()
    s3.log.length = 0
    const d = await startDaemon(t, {
      db: a.db,
      archive: url,
      tokenFile,
      flags: [...s3Flags, '--sources', 'archive,s3', '--connect-timeout', '2s'],
      env: AWS_ENV,
    })
    await allMd5Match(t, d.mnt, a)
    t.match(d.log(), /source marked down after repeated connection failures source=archive/, 'the dead archive was marked down')
    t.ok(s3.count('GET') > 0, 'S3 served the reads')
  })
})
