// S3 request signing with the AWS SDK (cache/sources/s3-signer.ts): the SigV4 signature of AWS's
// published example; credentials found by the SDK's standard chain from the environment and from a
// profile in a shared credentials file; temporary credentials from a credential_process refreshed
// before they expire; and no credentials at all: requests go unsigned, the chain asked once. The
// instance metadata service is switched off (AWS_EC2_METADATA_DISABLED) so that nothing here waits
// on, or leaves the machine for, 169.254.169.254.
import t, { type Test } from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { S3Signer } from '../cache/sources/s3-signer.js'
import { tmp } from './helpers.js'

const AWS_VARS = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_CONFIG_FILE',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
  'AWS_ROLE_ARN',
  'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
  'AWS_CONTAINER_CREDENTIALS_FULL_URI',
  'AWS_EC2_METADATA_DISABLED',
]

/** Sets the AWS environment for one test (the SDK's chain reads process.env), restored after it. */
function awsEnv(t: Test, vars: Record<string, string>): void {
  const saved = Object.fromEntries(AWS_VARS.map((k) => [k, process.env[k]]))
  const dir = tmp(t)
  for (const k of AWS_VARS) delete process.env[k]
  // No file of the user's is read, and the instance metadata service is never asked.
  Object.assign(
    process.env,
    {
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'no-credentials'),
      AWS_CONFIG_FILE: join(dir, 'no-config'),
      AWS_EC2_METADATA_DISABLED: 'true',
    },
    vars,
  )
  t.teardown(() => {
    for (const k of AWS_VARS) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  })
}

const url = new URL('https://bucket.s3.us-east-1.amazonaws.com/DESDM/OPS/a.fits')
const keyOf = (h: Record<string, string>) => /Credential=([^/]+)\//.exec(h.authorization ?? '')?.[1]

t.test('SigV4 matches the example in the AWS S3 documentation', async (t) => {
  const signer = new S3Signer('us-east-1', () =>
    Promise.resolve({ accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }),
  )
  const h = await signer.sign(
    'GET',
    new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
    { range: 'bytes=0-9' },
    new Date('2013-05-24T00:00:00Z'),
  )
  t.equal(
    h.authorization?.replace(/, /g, ','),
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  )
  t.equal(h['x-amz-date'], '20130524T000000Z')
})

t.test('the SDK chain: credentials from the environment', async (t) => {
  awsEnv(t, { AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 'secret', AWS_SESSION_TOKEN: 'session-env' })
  const h = await new S3Signer('us-east-1').sign('GET', url, { range: 'bytes=0-9' })
  t.equal(keyOf(h), 'AKIDENV')
  t.equal(h['x-amz-security-token'], 'session-env', 'a session token is sent with temporary credentials')
})

t.test('the SDK chain: a profile of the shared credentials file (AWS_PROFILE)', async (t) => {
  const file = join(tmp(t), 'credentials')
  writeFileSync(
    file,
    '[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[desfs]\naws_access_key_id=AKIDDESFS\naws_secret_access_key=s2\n',
    { mode: 0o600 },
  )
  awsEnv(t, { AWS_SHARED_CREDENTIALS_FILE: file })
  t.equal(keyOf(await new S3Signer('us-east-1').sign('GET', url, {})), 'AKIDDEFAULT', 'the default profile')
  process.env.AWS_PROFILE = 'desfs'
  t.equal(keyOf(await new S3Signer('us-east-1').sign('GET', url, {})), 'AKIDDESFS', 'the profile AWS_PROFILE names')
})

t.test('the SDK chain: temporary credentials are refreshed before they expire', async (t) => {
  const dir = tmp(t)
  const counter = join(dir, 'count')
  writeFileSync(counter, '0')
  // A credential_process handing out numbered keys that expire in two minutes: inside the SDK's five
  // minutes of margin, so each use starts a refresh in the background.
  const script = join(dir, 'creds.sh')
  writeFileSync(
    script,
    `#!/bin/sh\nn=$(( $(cat ${counter}) + 1 ))\necho $n > ${counter}\nexp=$(date -u -d '+2 minutes' +%Y-%m-%dT%H:%M:%SZ)\necho "{\\"Version\\": 1, \\"AccessKeyId\\": \\"AKIDTEMP$n\\", \\"SecretAccessKey\\": \\"s$n\\", \\"SessionToken\\": \\"tok$n\\", \\"Expiration\\": \\"$exp\\"}"\n`,
  )
  chmodSync(script, 0o700)
  const config = join(dir, 'config')
  writeFileSync(config, `[default]\ncredential_process = ${script}\n`)
  awsEnv(t, { AWS_CONFIG_FILE: config })
  const signer = new S3Signer('us-east-1')
  const first = keyOf(await signer.sign('GET', url, {}))
  t.match(first, /^AKIDTEMP\d+$/, `temporary credentials from the credential_process (${first})`)
  let later = first
  for (let i = 0; i < 100 && later === first; i++) {
    await new Promise((r) => setTimeout(r, 50))
    later = keyOf(await signer.sign('GET', url, {}))
  }
  t.not(later, first, `new credentials were used once the old ones were near expiry (${first} -> ${later})`)
})

t.test('no credentials anywhere: requests go unsigned, and the chain is asked once', async (t) => {
  awsEnv(t, {})
  const signer = new S3Signer('us-east-1')
  t.same(await signer.sign('GET', url, { range: 'bytes=0-9' }), { range: 'bytes=0-9' }, 'the headers go as they are')
  // Credentials appearing later are not looked for on every request (each look may wait on the metadata service).
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIDLATE', AWS_SECRET_ACCESS_KEY: 'x' })
  t.same(await signer.sign('GET', url, {}), {}, 'still unsigned: the answer was kept')
})
