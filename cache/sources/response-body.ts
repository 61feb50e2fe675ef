// A response body read without a stream. undici's request() wraps every body in a Readable, and its
// machinery (push, buffering, an async-iterator promise per chunk, async hooks) cost about as much
// CPU as the rest of a sync's JavaScript: 0.5 s of user time per GB against nginx on loopback,
// measured with undici's own dispatch() handler side by side. Here undici's handler hands each
// chunk straight to whoever reads the body: a range read's onData, a listing's text, or nothing.
import { errors as undiciErrors, type Dispatcher } from 'undici'

/** A body that arrives before anyone reads it is held up to this many bytes, then the socket pauses. */
const HOLD_BYTES = 256 * 1024

/** What a response brings and how it may be read (once). */
export class ResponseBody {
  /** Chunks that arrived before a reader came. */
  private held: Buffer[] = []
  private heldBytes = 0
  /**
   * hold: no reader yet; read: chunks go to `sink`; stopped: the reader wanted no more (later chunks
   * are dropped); drain: discarded, later chunks are counted against `drainLeft`; over: ended, failed
   * or destroyed.
   */
  private mode: 'hold' | 'read' | 'stopped' | 'drain' | 'over' = 'hold'
  private sink: (chunk: Buffer) => boolean = () => false
  private settle: (err?: Error) => void = () => undefined
  private drainLeft = 0
  private ended = false
  private failed: Error | undefined
  /** Whether `each` was called: a body is read once. */
  private read = false
  private paused = false
  /** undici's: resumes a paused socket; aborts the request (the connection if the body is not over). */
  resume: () => void = () => undefined
  abort: (err: Error) => void = () => undefined

  // ---- undici's side ----

  /** A chunk arrived; false pauses the socket (only while no one reads the body). */
  push(chunk: Buffer): boolean {
    switch (this.mode) {
      case 'read':
        if (!this.sink(chunk)) this.stop()
        return true
      case 'hold':
        this.held.push(chunk)
        this.heldBytes += chunk.length
        this.paused = this.heldBytes >= HOLD_BYTES
        return !this.paused
      case 'drain':
        this.drainLeft -= chunk.length
        if (this.drainLeft < 0) this.destroy()
        return true
      default:
        return true
    }
  }

  end(): void {
    this.ended = true
    if (this.mode === 'read') this.settle()
    this.mode = 'over'
  }

  fail(err: Error): void {
    if (this.ended) return
    this.failed = err
    if (this.mode === 'read') this.settle(err)
    this.mode = 'over'
  }

  // ---- the reader's side ----

  /**
   * Hands every chunk to `onChunk` as it arrives, until it returns false or the body ends. Resolves
   * then; rejects with the network's error. What the reader did not want is up to the caller
   * (`discard` or `destroy`).
   */
  each(onChunk: (chunk: Buffer) => boolean): Promise<void> {
    if (this.read || this.mode === 'stopped' || this.mode === 'drain') return Promise.reject(new Error('a response body is read once'))
    this.read = true
    const held = this.held
    this.held = []
    this.heldBytes = 0
    for (const c of held) {
      let more: boolean
      try {
        more = onChunk(c)
      } catch (err) {
        this.destroy()
        return Promise.reject(err as Error)
      }
      if (!more) {
        if (this.mode === 'hold') this.mode = 'stopped'
        return Promise.resolve()
      }
    }
    if (this.failed) return Promise.reject(this.failed)
    if (this.ended) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      this.sink = onChunk
      this.settle = (err) => (err ? reject(err) : resolve())
      this.mode = 'read'
      this.unpause()
    })
  }

  /** The whole body as UTF-8 text. */
  async text(): Promise<string> {
    const parts: Buffer[] = []
    await this.each((c) => parts.push(c) > 0)
    return Buffer.concat(parts).toString('utf8')
  }

  /**
   * Lets go of a body we do not want: a small rest is read to the end so the connection can be
   * reused; a larger one closes it. Never throws.
   */
  discard(limit = 64 * 1024): void {
    if (this.mode === 'over') return
    if (this.mode === 'read') this.stop()
    this.drainLeft = limit - this.heldBytes
    this.held = []
    this.heldBytes = 0
    this.mode = 'drain'
    if (this.drainLeft < 0) this.destroy()
    else this.unpause()
  }

  /** Stops the body where it is (closing the connection unless it already ended). Never throws. */
  destroy(): void {
    if (this.mode === 'over') return
    if (this.mode === 'read') this.stop()
    this.mode = 'over'
    this.held = []
    this.failed = new undiciErrors.RequestAbortedError()
    this.abort(this.failed)
  }

  /** Someone takes the chunks now: a socket paused while they were held goes on. */
  private unpause(): void {
    if (!this.paused) return
    this.paused = false
    this.resume()
  }

  /** The reader wanted no more: its promise resolves; later chunks are dropped until discard or destroy. */
  private stop(): void {
    this.mode = 'stopped'
    this.settle()
  }
}

/** The response's headers by lower-case name; a repeated header is an array. */
export function parseHeaders(raw: Buffer[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]!.toString('latin1').toLowerCase()
    const v = raw[i + 1]!.toString('latin1')
    const had = out[k]
    if (had === undefined) out[k] = v
    else if (Array.isArray(had)) had.push(v)
    else out[k] = [had, v]
  }
  return out
}

export interface RawResponse {
  status: number
  headers: Record<string, string | string[]>
  body: ResponseBody
}

/**
 * Sends one request through `dispatcher` and resolves with its status, headers and a body that is
 * read as it arrives. `signal` aborts it at any point (before the answer, or during the body).
 */
export function dispatch(dispatcher: Dispatcher, opts: Dispatcher.DispatchOptions, signal?: AbortSignal): Promise<RawResponse> {
  return new Promise<RawResponse>((resolve, reject) => {
    const body = new ResponseBody()
    let answered = false
    let abort: ((err: Error) => void) | undefined
    let reason: Error | undefined
    const onAbort = () => {
      reason = (signal?.reason as Error | undefined) ?? new undiciErrors.RequestAbortedError()
      abort?.(reason)
    }
    const done = () => signal?.removeEventListener('abort', onAbort)
    if (signal?.aborted) onAbort()
    else signal?.addEventListener('abort', onAbort, { once: true })
    dispatcher.dispatch(opts, {
      onConnect(a) {
        abort = a
        body.abort = a
        if (reason) a(reason)
      },
      onHeaders(status, raw, resume) {
        if (status < 200) return true // 1xx: the answer is still to come
        answered = true
        body.resume = resume
        resolve({ status, headers: parseHeaders(raw), body })
        return true
      },
      onData: (chunk) => body.push(chunk),
      onComplete() {
        done()
        body.end()
      },
      onError(err) {
        done()
        if (answered) body.fail(err)
        else reject(err)
      },
    })
  })
}
