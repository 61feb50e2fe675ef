// s3://BUCKET/PREFIX, parsed apart from the S3 source so the settings code need not load an HTTP client.

/** Splits s3://bucket/prefix; throws a message fit for a one-line error. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(\/.*)?$/.exec(url)
  if (!m) throw new Error(`'${url}' is not an S3 URL of the form s3://BUCKET/PREFIX`)
  return { bucket: m[1]!, prefix: (m[2] ?? '').replace(/^\/+|\/+$/g, '') }
}
