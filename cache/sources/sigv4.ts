// AWS Signature Version 4 for S3 requests (header-based, unsigned payload for GETs with no body):
// the canonical request, the string to sign, the derived key and the Authorization header. Small
// enough to write here rather than pull in an SDK; checked against AWS's published example in
// test/cache-s3.test.ts.
import { createHash, createHmac } from 'node:crypto'

export interface AwsCredentials {
  accessKeyId: string
  secretAccessKey: string
  sessionToken?: string | undefined
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

/** RFC 3986 percent-encoding as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
export function uriEncode(s: string, keepSlash = false): string {
  const enc = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  return keepSlash ? enc.replace(/%2F/g, '/') : enc
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex')
const hmac = (key: Buffer | string, s: string) => createHmac('sha256', key).update(s, 'utf8').digest()

/** 20130524T000000Z */
function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')
}

export interface SignInput {
  method: string
  url: URL
  /** Headers to sign besides host, x-amz-date, x-amz-content-sha256 (lower-case names). */
  headers: Record<string, string>
  region: string
  service?: string
  payloadHash?: string
  now?: Date
}

/** The canonical request (exported for the test server, which checks signatures the same way). */
export function canonicalRequest(method: string, url: URL, headers: Record<string, string>, payloadHash: string): { text: string; signedHeaders: string } {
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&')
  const names = Object.keys(headers).map((h) => h.toLowerCase()).sort()
  const lower: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v.trim().replace(/\s+/g, ' ')
  const signedHeaders = names.join(';')
  // The path arrives already percent-encoded (one segment at a time); S3 does not encode it twice.
  const text = [method, url.pathname || '/', query, names.map((n) => `${n}:${lower[n]}\n`).join(''), signedHeaders, payloadHash].join('\n')
  return { text, signedHeaders }
}

/** Returns the headers to send: the given ones plus host, x-amz-date, x-amz-content-sha256, authorization. */
export function signRequest(creds: AwsCredentials, input: SignInput): Record<string, string> {
  const now = input.now ?? new Date()
  const date = amzDate(now)
  const day = date.slice(0, 8)
  const service = input.service ?? 's3'
  const payloadHash = input.payloadHash ?? EMPTY_SHA256
  const headers: Record<string, string> = { ...input.headers, host: input.url.host, 'x-amz-date': date, 'x-amz-content-sha256': payloadHash }
  if (creds.sessionToken) headers['x-amz-security-token'] = creds.sessionToken
  const { text, signedHeaders } = canonicalRequest(input.method, input.url, headers, payloadHash)
  const scope = `${day}/${input.region}/${service}/aws4_request`
  const toSign = ['AWS4-HMAC-SHA256', date, scope, sha256(text)].join('\n')
  const key = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, day), input.region), service), 'aws4_request')
  const signature = createHmac('sha256', key).update(toSign, 'utf8').digest('hex')
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope},SignedHeaders=${signedHeaders},Signature=${signature}`
  return headers
}
