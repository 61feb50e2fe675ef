// Signs S3 requests with the AWS SDK's SigV4 signer, with credentials from the SDK's standard chain:
// the environment, the shared config and credentials files (profiles, SSO, credential_process), web
// identity, the container's endpoint and the instance metadata service, as every AWS tool finds them.
// The chain is memoized and refreshes credentials before they expire. When it finds none the first
// time, requests go unsigned for the life of the process (public buckets), without asking it again:
// on a machine outside AWS each try may wait on the instance metadata service (switch that off with
// AWS_EC2_METADATA_DISABLED=true).
import { fromNodeProviderChain } from '@aws-sdk/credential-providers'
import { SignatureV4 } from '@smithy/signature-v4'
import { Hash } from '@smithy/hash-node'
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types'
import { SourceError } from './source.js'
import { log } from '../../daemon/log.js'

/** The payload hash of a request without a body (S3 wants it in x-amz-content-sha256). */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

export type { AwsCredentialIdentity, AwsCredentialIdentityProvider }

/** RFC 3986 percent-encoding as SigV4 wants a query (encodeURIComponent leaves !'()* alone). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

export class S3Signer {
  private signer: SignatureV4
  private credentials: AwsCredentialIdentityProvider
  /** Undecided until the first request; then whether credentials were found. */
  private signing: Promise<boolean> | undefined

  /** `credentials`: the SDK's standard chain unless given (tests give fixed ones, or a provider of their own). */
  constructor(region: string, credentials: AwsCredentialIdentityProvider = fromNodeProviderChain()) {
    this.credentials = credentials
    this.signer = new SignatureV4({ credentials, region, service: 's3', sha256: Hash.bind(null, 'sha256'), uriEscapePath: false })
  }

  /** Asks the chain once whether there are credentials at all. */
  private decide(): Promise<boolean> {
    this.signing ??= this.credentials().then(
      (c) => {
        log.info('S3 requests signed with credentials from the AWS SDK chain', {
          accessKeyId: `${c.accessKeyId.slice(0, 4)}...`,
          expires: c.expiration?.toISOString() ?? 'never',
        })
        return true
      },
      (err: Error) => {
        log.info(
          'no AWS credentials found (environment, profiles, SSO, web identity, container, instance metadata); S3 requests are sent unsigned, as public buckets take them',
          { why: err.message },
        )
        return false
      },
    )
    return this.signing
  }

  /**
   * The headers to send with a request without a body: the given ones plus host, x-amz-date,
   * x-amz-content-sha256, x-amz-security-token (temporary credentials) and authorization; the given
   * ones unchanged when requests go unsigned. `now` fixes the signing time (tests).
   */
  async sign(method: string, url: URL, headers: Record<string, string>, now?: Date): Promise<Record<string, string>> {
    if (!(await this.decide())) return headers
    const request = {
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      // Already percent-encoded, one segment at a time: S3 does not encode the path twice.
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { ...headers, host: url.host, 'x-amz-content-sha256': EMPTY_SHA256 },
    }
    try {
      const signed = await this.signer.sign(request, now ? { signingDate: now } : {})
      return signed.headers
    } catch (err) {
      throw new SourceError(
        'auth',
        `S3 credentials could not be refreshed: ${(err as Error).message} (check AWS_PROFILE / the SSO session / the role the machine runs as)`,
      )
    }
  }
}
