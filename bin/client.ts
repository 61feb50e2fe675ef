// The CLI's side of the control socket: small JSON requests, and NDJSON streams for long results.
import { request } from 'node:http'
import { join } from 'node:path'
import { SOCKET_NAME } from '../daemon/paths.js'
import { EXIT, UserError } from '../daemon/errors.js'

export function socketPath(stateDir: string): string {
  return join(stateDir, SOCKET_NAME)
}

export interface CallOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

/** Calls the daemon; resolves with the parsed JSON answer, throws UserError with the daemon's message. */
export function call<T = unknown>(sock: string, method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = request(
      { socketPath: sock, method, path, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}, timeout: opts.timeoutMs ?? 30_000, signal: opts.signal },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let json: unknown
          try {
            json = text ? JSON.parse(text) : undefined
          } catch {
            return reject(new UserError(`the daemon sent an answer that is not JSON: ${text.slice(0, 200)}`, EXIT.FAILURE))
          }
          if ((res.statusCode ?? 500) >= 400) return reject(new UserError((json as { error?: string })?.error ?? `HTTP ${res.statusCode}`, EXIT.FAILURE))
          resolve(json as T)
        })
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new UserError(`the daemon did not answer ${method} ${path} in time`, EXIT.UNAVAILABLE)))
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof UserError) return reject(err)
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return reject(new UserError(`no desfs daemon is running (no socket at ${sock}): start one with desfs mount`, EXIT.UNAVAILABLE))
      if (err.code === 'EACCES') return reject(new UserError(`permission denied on ${sock}: the daemon belongs to another user`, EXIT.UNAVAILABLE))
      reject(err)
    })
    req.end(payload)
  })
}
