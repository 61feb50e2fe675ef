// Bearer tokens for the demo archive (`desfs demo`; the tests use them too): JWT-shaped (header.claims.signature) with sub, scope and exp,
// like the WLCG tokens htgettoken writes. The demo server checks membership and exp, not signatures.
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

export function makeToken(claims: Record<string, unknown> = {}, ttlSeconds = 3600): string {
  const now = Math.floor(Date.now() / 1000)
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'desfs-test' })).toString('base64url')
  const body = Buffer.from(
    JSON.stringify({
      iss: 'https://desfs.test/des',
      sub: 'desfs-demo-user',
      scope: 'storage.read:/des',
      wlcg_ver: '1.0',
      iat: now,
      exp: now + ttlSeconds,
      jti: randomBytes(8).toString('hex'),
      ...claims,
    }),
  ).toString('base64url')
  return `${header}.${body}.${randomBytes(32).toString('base64url')}`
}

/** Writes a token file the way htgettoken does: 0600, in a 0700 directory, by write-then-rename. */
export function writeTokenFile(path: string, token: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  chmodSync(dirname(path), 0o700)
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, token + '\n', { mode: 0o600 })
  renameSync(tmp, path)
}
