// The control socket: HTTP/1.1 + JSON over a Unix socket in the private state dir (socket 0600).
// Handlers are registered by path; errors come back as {"error": "..."} with a status code.
// A stale socket left by a crash is removed; a live one means another daemon owns this state dir.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { chmod, unlink } from 'node:fs/promises'
import { UserError } from '../errors.js'
import { log } from '../log.js'
import { native } from '../../fs/native.js'

export type Handler = (req: IncomingMessage, res: ServerResponse, body: unknown, url: URL) => Promise<unknown> | unknown

export class HttpError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

/** True when something answers on the socket. */
export function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/**
 * The socket's mode keeps other users out; the peer's credentials (SO_PEERCRED) make sure of it even
 * if the mode or the state dir's was loosened: only our own uid and root may talk to the daemon.
 */
function peerAllowed(socket: Socket): boolean {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  if (fd === undefined || fd < 0) return true
  let uid: number
  try {
    uid = native().peerCredentials(fd).uid
  } catch (err) {
    log.warn("cannot check the control client's credentials; relying on the socket's mode", { error: (err as Error).message })
    return true
  }
  if (uid === process.getuid?.() || uid === 0) return true
  log.warn('refused a control connection from another user', { uid })
  return false
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length
    if (size > 16 << 20) throw new HttpError(413, 'request body too large')
    chunks.push(c)
  }
  if (size === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new HttpError(400, 'request body is not JSON')
  }
}

export class ControlServer {
  readonly path: string
  private routes = new Map<string, Handler>()
  private server: Server | undefined

  constructor(path: string) {
    this.path = path
  }

  /** Registers a handler for "METHOD /path". A handler that returns a value gets it sent as JSON. */
  route(method: string, path: string, handler: Handler): void {
    this.routes.set(`${method} ${path}`, handler)
  }

  async listen(): Promise<void> {
    if (await socketAlive(this.path))
      throw new UserError(
        `another desfs daemon is running with this state dir (socket ${this.path}): stop it with desfs umount, or use another --state-dir`,
      )
    await unlink(this.path).catch(() => undefined)
    const server = createServer((req, res) => void this.dispatch(req, res))
    server.on('connection', (socket) => {
      if (!peerAllowed(socket)) socket.destroy()
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.path, () => resolve())
    })
    await chmod(this.path, 0o600)
    this.server = server
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://desfs')
    const handler = this.routes.get(`${req.method} ${url.pathname}`)
    try {
      if (!handler) throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`)
      const body = await readBody(req)
      const out = await handler(req, res, body, url)
      if (!res.headersSent && !res.writableEnded) sendJson(res, 200, out ?? { ok: true })
    } catch (err) {
      const status = err instanceof HttpError ? err.status : err instanceof UserError ? 400 : 500
      if (status === 500) log.error('control request failed', { path: url.pathname, error: (err as Error).stack })
      if (!res.headersSent) sendJson(res, status, { error: (err as Error).message })
      else res.destroy()
    }
  }

  async close(): Promise<void> {
    const s = this.server
    this.server = undefined
    if (!s) return
    s.closeAllConnections()
    await new Promise<void>((resolve) => s.close(() => resolve()))
    await unlink(this.path).catch(() => undefined)
  }
}
