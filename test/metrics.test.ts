// The daemon's metrics registry (prom-client), in process: what `desfs metrics` renders, the default
// process metrics with event-loop lag, totals copied from hot-path objects without double counting,
// the metrics route built from explicit dependencies, and the event-loop line of `desfs status`.
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventLoopLag, metrics } from '../daemon/metrics.js'
import { registerMetricsRoutes } from '../daemon/control/routes-metrics.js'
import type { ControlServer, Handler } from '../daemon/control/control.js'
import type { OpsStats } from '../fs/ops.js'
import { humanStatus } from '../bin/cmd-status.js'

/** A sample line or a comment, as the Prometheus text format (0.0.4) defines them. */
const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const LINE = new RegExp(
  `^(# (HELP|TYPE) ${NAME} .*|${NAME}(\\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\\})? (-?[0-9.e+-]+|[+-]Inf|NaN))$`,
)

t.test('render: the text format, with desfs metrics and the default process metrics', async (t) => {
  const c = metrics.counter('desfs_test_things_total', 'things counted by this test', ['kind'])
  c.inc({ kind: 'a' }, 5)
  c.inc({ kind: 'a' })
  metrics.counter('desfs_test_plain_total', 'a counter with no labels').inc(7)
  const text = await metrics.render()
  const lines = text.trim().split('\n')
  t.same(
    lines.filter((l) => !LINE.test(l)),
    [],
    'every line is a comment or a sample',
  )
  t.match(text, /\ndesfs_test_things_total\{kind="a"\} 6\n/, 'a labelled counter, added to by 5 then 1')
  t.match(text, /\ndesfs_test_plain_total 7\n/, 'inc(n) adds n')
  for (const name of [
    'nodejs_eventloop_lag_p99_seconds',
    'nodejs_eventloop_lag_max_seconds',
    'process_cpu_user_seconds_total',
    'process_resident_memory_bytes',
    'nodejs_heap_size_used_bytes',
  ]) {
    t.match(text, new RegExp(`\\n# TYPE ${name} `), `${name} is there`)
  }
  t.equal(
    metrics.counter('desfs_test_plain_total', 'again'),
    metrics.counter('desfs_test_plain_total', 'a counter with no labels'),
    'creating a metric twice gives the first',
  )
})

t.test('a gauge computed when read', async (t) => {
  let n = 3
  const g = metrics.gauge('desfs_test_computed', 'a gauge computed when read', { value: () => n })
  t.equal(await metrics.value(g), 3)
  n = 11
  t.match(await metrics.render(), /\ndesfs_test_computed 11\n/, 'the scrape reads it afresh')
})

t.test('event-loop lag: a stalled loop shows in max, and a read starts a new window', async (t) => {
  await eventLoopLag() // start a window of our own
  await sleep(30) // the sampler's first tick after a reset only marks time: stall after it
  const until = performance.now() + 300
  while (performance.now() < until) {
    // Busy: the loop is stalled for 300 ms, as a synchronous hog in the daemon would stall it.
  }
  await sleep(50) // let the sampler's timer fire (late) and record the stall
  const lag = await eventLoopLag()
  t.ok(lag.max >= 0.25, `the 300 ms stall is in max (${lag.max} s)`)
  t.ok(lag.p99 >= 0 && lag.p99 <= lag.max, `p99 ${lag.p99} s is at most max`)
  t.match(await metrics.render(), /\nnodejs_eventloop_lag_max_seconds [0-9.e+-]+\n/, 'the scrape shows the same gauge')
})

t.test('the metrics route: FUSE totals copied from the ops object, never counted twice', async (t) => {
  let handler: Handler | undefined
  const control = {
    route: (_m: string, path: string, h: Handler) => (path === '/metrics' ? (handler = h) : undefined),
  } as unknown as ControlServer
  const ops = { ops: { read: 4, lookup: 2 }, errors: { read: 1 }, bytesServed: 4096 } as unknown as OpsStats
  let up: OpsStats | undefined = undefined
  registerMetricsRoutes(control, { startedAt: 1_700_000_000_500, opsStats: () => up, tokenExpiry: () => 1_800_000_000 })
  t.ok(handler, 'GET /metrics is registered')
  const scrape = async () => {
    let body = ''
    const res = { writeHead: () => res, end: (b: string) => (body = b) } as unknown as ServerResponse
    await handler!({} as IncomingMessage, res, undefined, new URL('http://desfs/metrics'))
    return body
  }
  const before = await scrape()
  t.notMatch(before, /\ndesfs_fuse_ops_total\{/, 'no ops before the mount is up')
  up = ops
  const first = await scrape()
  t.match(first, /\ndesfs_fuse_ops_total\{op="read"\} 4\n/)
  t.match(first, /\ndesfs_fuse_ops_total\{op="lookup"\} 2\n/)
  t.match(first, /\ndesfs_fuse_errors_total\{op="read"\} 1\n/)
  t.match(first, /\ndesfs_fuse_bytes_served_total 4096\n/)
  t.match(first, /\ndesfs_start_time_seconds 1700000000\n/)
  t.match(first, /\ndesfs_token_expiry_seconds 1800000000\n/)
  ;(ops.ops as Record<string, number>).read = 6
  const second = await scrape()
  t.match(second, /\ndesfs_fuse_ops_total\{op="read"\} 6\n/, 'a second scrape shows the total, not the total added again')
  t.match(second, /\ndesfs_fuse_bytes_served_total 4096\n/)
})

t.test('desfs status shows the event-loop lag', async (t) => {
  const out = humanStatus(
    {
      pid: 1,
      mountpoint: '/mnt/des',
      startedAt: new Date(0).toISOString(),
      ready: true,
      db: '/x/metadata.db',
      archive: 'https://example.invalid/',
      tree: null,
      token: null,
      cache: null,
      fetch: null,
      settings: {},
      eventLoop: { p99: 0.0012, max: 0.25 },
    },
    1000,
  )
  t.match(out, /\nevent loop  lag p99 1\.2 ms, max 250 ms since the last status or metrics read\n/)
})
