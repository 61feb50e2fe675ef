// Checks a URL setting (the archive, an S3 endpoint) where it enters, so that a URL that cannot work
// is refused with one line instead of misbehaving later: archive paths are appended to these URLs, so
// a query string or fragment would swallow every path (each file then looks like the directory, 0
// bytes), and a user:password@ part would be copied into logs, `desfs status` and process lists.

/** The URL with any user name and password blanked, for messages (a URL with a password is never echoed). */
export function withoutCredentials(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@')
}

/**
 * Returns the URL (http or https) without trailing slashes, or throws an Error whose message is one
 * line naming the problem and the fix. `what` names the setting's purpose in the message.
 */
export function checkHttpUrl(text: string, what = 'URL'): string {
  const shown = withoutCredentials(text)
  let u: URL
  try {
    u = new URL(text)
  } catch {
    throw new Error(`'${shown}' is not a URL; give an http(s) ${what} such as https://host/path`)
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new Error(`'${shown}' is not an http(s) ${what} (${u.protocol.replace(/:$/, '')}://)`)
  if (u.username || u.password || /^[a-z]+:\/\/[^/?#]*@/i.test(text)) {
    throw new Error(
      `'${shown}' holds a user name or password: desfs never takes credentials in a URL (they would show in logs, status and process lists); remove them and put the bearer token in a token file (--token-file FILE, mode 0600)`,
    )
  }
  if (u.search || text.includes('?'))
    throw new Error(`'${shown}' has a query string: file paths are appended to this URL, so it must end in a path; remove the '?...' part`)
  if (u.hash || text.includes('#'))
    throw new Error(`'${shown}' has a fragment: file paths are appended to this URL, so it must end in a path; remove the '#...' part`)
  return text.replace(/\/+$/, '')
}
