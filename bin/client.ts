// The CLI's side of the control socket: small JSON requests, and NDJSON streams for long results.
import { request, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
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

/** Why a request to the socket failed, as one line (the socket missing, refused, or another user's). */
function connectError(sock: string, method: string, path: string, err: NodeJS.ErrnoException): Error {
  if (err instanceof UserError) return err
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
    return new UserError(`no desfs daemon is running (no socket at ${sock}): start one with desfs mount`, EXIT.UNAVAILABLE)
  if (err.code === 'EACCES') return new UserError(`permission denied on ${sock}: the daemon belongs to another user`, EXIT.UNAVAILABLE)
  if (err.name === 'AbortError') return err
  // The connection was cut mid-answer: the daemon died or was stopped (kill -9, a crash, umount).
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE')
    return new UserError(`the daemon closed the connection during ${method} ${path} (did it stop? see desfs status)`, EXIT.UNAVAILABLE)
  return new UserError(`${method} ${path} on ${sock} failed: ${err.message}`, EXIT.UNAVAILABLE)
}

/**
 * True when a daemon answers on the socket, false when none runs there (no socket, or a stale one);
 * a socket we may not use (another user's daemon) is an error, not "no daemon".
 */
export function daemonRunning(sock: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = connect(sock)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(false)
      else reject(connectError(sock, 'connect', '', err))
    })
  })
}

/** An error answer ({"error": "...", "kind"?: "..."}) as a UserError; `kinds` maps kinds to exit codes. */
function answerError(status: number | undefined, text: string, kinds: Record<string, number> = {}): UserError {
  let json: { error?: string; kind?: string } | undefined
  try {
    json = JSON.parse(text) as typeof json
  } catch {
    return new UserError(`the daemon sent an answer that is not JSON: ${text.slice(0, 200)}`, EXIT.FAILURE)
  }
  return new UserError(json?.error ?? `HTTP ${status}`, (json?.kind && kinds[json.kind]) || EXIT.FAILURE)
}

function bodyHeaders(payload: string | undefined): Record<string, string | number> {
  return payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}
}

/** Calls the daemon; resolves with the parsed JSON answer, throws UserError with the daemon's message. */
export function call<T = unknown>(sock: string, method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = request(
      { socketPath: sock, method, path, headers: bodyHeaders(payload), timeout: opts.timeoutMs ?? 30_000, signal: opts.signal },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          if ((res.statusCode ?? 500) >= 400) return reject(answerError(res.statusCode, text))
          if (!/json/.test(res.headers['content-type'] ?? '')) return resolve(text as T)
          try {
            resolve((text ? JSON.parse(text) : undefined) as T)
          } catch {
            reject(new UserError(`the daemon sent an answer that is not JSON: ${text.slice(0, 200)}`, EXIT.FAILURE))
          }
        })
        res.on('error', (err: NodeJS.ErrnoException) => reject(connectError(sock, method, path, err)))
      },
    )
    req.on('timeout', () => req.destroy(new UserError(`the daemon did not answer ${method} ${path} in time`, EXIT.UNAVAILABLE)))
    req.on('error', (err: NodeJS.ErrnoException) => reject(connectError(sock, method, path, err)))
    req.end(payload)
  })
}

/**
 * Calls the daemon for a streamed answer (NDJSON): resolves with the response once the daemon said
 * yes; an error answer rejects with its message, its `kind` mapped to an exit code by `kinds`.
 * Aborting the signal closes the connection, which the daemon takes as "cancel".
 */
export function callStream(
  sock: string,
  method: string,
  path: string,
  body: unknown,
  opts: { signal?: AbortSignal; kinds?: Record<string, number> } = {},
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body)
    const req = request({ socketPath: sock, method, path, headers: bodyHeaders(payload), signal: opts.signal }, (res) => {
      if ((res.statusCode ?? 500) < 400) return resolve(res)
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => reject(answerError(res.statusCode, Buffer.concat(chunks).toString('utf8'), opts.kinds)))
      res.on('error', (err: NodeJS.ErrnoException) => reject(connectError(sock, method, path, err)))
    })
    req.on('error', (err: NodeJS.ErrnoException) => reject(connectError(sock, method, path, err)))
    req.end(payload)
  })
}
