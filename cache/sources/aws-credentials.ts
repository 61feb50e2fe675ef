// The standard AWS credential chain, the parts that make sense for a daemon reading public or
// project buckets: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then the profile
// AWS_PROFILE (default "default") of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
// ~/.aws/credentials). Nothing found means anonymous requests (public buckets).
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { AwsCredentials } from './sigv4.js'

/** Parses an INI file into sections of key = value. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>()
  let section: Map<string, string> | undefined
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s*[#;].*$/, '').trim()
    if (!line) continue
    const sec = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line)
    if (sec) {
      section = new Map()
      out.set(sec[1]!, section)
      continue
    }
    const kv = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line)
    if (kv && section) section.set(kv[1]!.toLowerCase(), kv[2]!.trim())
  }
  return out
}

export interface FoundCredentials {
  credentials: AwsCredentials | undefined
  /** Where they came from, for status: 'env', 'profile default (~/.aws/credentials)', 'anonymous'. */
  source: string
}

export function findAwsCredentials(env: NodeJS.ProcessEnv = process.env): FoundCredentials {
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    return { credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, sessionToken: env.AWS_SESSION_TOKEN || undefined }, source: 'env AWS_ACCESS_KEY_ID' }
  }
  const file = env.AWS_SHARED_CREDENTIALS_FILE || join(env.HOME || homedir(), '.aws', 'credentials')
  const profile = env.AWS_PROFILE || 'default'
  let text: string | undefined
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    text = undefined
  }
  const sec = text ? parseIni(text).get(profile) : undefined
  const id = sec?.get('aws_access_key_id')
  const secret = sec?.get('aws_secret_access_key')
  if (id && secret) return { credentials: { accessKeyId: id, secretAccessKey: secret, sessionToken: sec?.get('aws_session_token') }, source: `profile ${profile} (${file})` }
  return { credentials: undefined, source: 'anonymous' }
}
