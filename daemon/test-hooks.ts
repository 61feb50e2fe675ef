// Hooks only the test suite turns on (DESFS_TEST_HOOKS=1 in the daemon's environment): a way to
// stall the event loop on purpose, to show that cached reads never wait for it, and a short native
// backstop, so deadline races can be provoked in seconds. Off, they add nothing.
import type { ControlServer } from './control/control.js'

const enabled = () => process.env.DESFS_TEST_HOOKS === '1'

/** Plane options the tests may shorten. */
export function planeOptions(): { backstopMs?: number } {
  const ms = Number(process.env.DESFS_TEST_BACKSTOP_MS)
  return enabled() && ms > 0 ? { backstopMs: ms } : {}
}

export function register(control: ControlServer): void {
  if (!enabled()) return
  // POST /test/block-loop {"ms": N}: answers, then keeps the event loop busy for N ms.
  control.route('POST', '/test/block-loop', (_req, _res, body) => {
    const ms = Math.min(Number((body as { ms?: number } | undefined)?.ms) || 1000, 30_000)
    setImmediate(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms))
    return { blocking: ms }
  })
}
