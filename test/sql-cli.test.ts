// desfs sql, end to end: the real CLI in child processes, talking to a real daemon over its control
// socket (or to the DB directly when no daemon runs), compared with better-sqlite3 on the same DB,
// with files read back by independent readers (Python's csv module, Debian's fitsio, fitsverify).
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import {
  makeArchive,
  startServer,
  startDaemon,
  desfs,
  run,
  tmp,
  until,
  needTool,
  needPythonModule,
  PYTHON,
  DESFS,
  type RunResult,
  md5,
  parseMd5sum,
} from './helpers.js'
import { SOCKET_NAME } from '../daemon/paths.js'

t.jobs = 1

const a = makeArchive(t)
const direct = new Database(a.db, { readonly: true })
t.teardown(() => direct.close())
const { server, tokenFile } = await startServer(t, a.root)
const d = await startDaemon(t, { db: a.db, archive: server.archiveUrl, tokenFile })
const sock = join(d.stateDir, SOCKET_NAME)
const work = tmp(t, 'desfs-sql-out-')
const env = { ...process.env, DESFS_CONFIG: join(work, 'no-config'), DES_ARCHIVE_ACCESS_DIR: join(work, 'daa'), HOME: work }

/** Runs `desfs sql` against the test daemon, in the output directory. */
function sql(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [DESFS, 'sql', '--state-dir', d.stateDir, ...args], {
    env,
    cwd: work,
    timeoutMs: opts.timeoutMs ?? 60_000,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  })
}

/** POST /sql straight on the socket (the test process may talk to the socket, never to the mount). */
function post(body: unknown, signal?: AbortSignal): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body)
    const req = request(
      {
        socketPath: sock,
        method: 'POST',
        path: '/sql',
        signal,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = ''
        res.on('data', (c: Buffer) => (text += c.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
      },
    )
    req.on('error', (err) => (signal?.aborted ? resolve({ status: 0, text: 'aborted' }) : reject(err)))
    req.end(payload)
  })
}

async function status(): Promise<{ sql: { running: number; served: number }; pid: number }> {
  const r = await desfs(['status', '--json', '--state-dir', d.stateDir], { env })
  return JSON.parse(r.stdout) as { sql: { running: number; served: number }; pid: number }
}

/** Query processes the daemon has now (the spare included). */
function queryProcesses(): number {
  let n = 0
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8')
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1])
      if (cmd.includes('sql-child.js') && ppid === d.child.pid) n++
    } catch {
      // gone meanwhile
    }
  }
  return n
}

function oneLine(t: Test, stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line: ${stderr.trim()}`)
  t.match(lines[0], pattern)
}

// A query that never ends on its own and runs as one long native step (no rows until the end).
const ENDLESS = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c'

const QUERIES = [
  'SELECT * FROM Y6A2_FILE_ARCHIVE_INFO ORDER BY DESFILE_ID',
  'SELECT * FROM Y6A2_MISCFILE',
  "SELECT i.FILENAME, i.BAND, f.PATH, f.COMPRESSION FROM Y6A2_IMAGE i JOIN Y6A2_FILE_ARCHIVE_INFO f ON f.FILENAME = i.FILENAME WHERE i.BAND IN ('g', 'r') ORDER BY 1, 3",
  'SELECT BAND, count(*) AS N, avg(CCDNUM) AS MEAN_CCD, min(EXPNUM) FROM Y6A2_IMAGE GROUP BY BAND ORDER BY BAND',
  "SELECT t.TAG, count(*) FROM Y6A2_PROCTAG t WHERE t.TAG LIKE 'Y6A%' GROUP BY 1 ORDER BY 1",
  'SELECT * FROM Y6A2_COADD WHERE 0',
]

t.test('queries through the socket give what better-sqlite3 gives on the same DB', async (t) => {
  const before = (await status()).sql.served
  for (const [i, q] of QUERIES.entries()) {
    const r = await sql(['-c', `${q}; > r${i}.json`])
    t.equal(r.code, 0, `${q}: ${r.stderr}`)
    const want = direct.prepare(q).all()
    t.match(
      r.stdout,
      new RegExp(`^found ${want.length} rows in \\d+\\.\\d{6} seconds \\(\\d+\\.\\d{6} rows/s\\)\\n$`),
      'the des-archive-access found line',
    )
    t.same(JSON.parse(readFileSync(join(work, `r${i}.json`), 'utf8')), want, `same rows: ${q}`)
  }
  t.equal((await status()).sql.served, before + QUERIES.length, 'every query went through the daemon')
  t.same(
    readdirSync(work).filter((f) => /partial|spool/.test(f)),
    [],
    'no partial or spool files left',
  )
})

t.test('TSV on a pipe, CSV and gzipped files read back with independent readers', async (t) => {
  if (!needTool(t, PYTHON, 'python3')) return
  const q = 'SELECT FILENAME, PATH, COMPRESSION, DESFILE_ID FROM Y6A2_FILE_ARCHIVE_INFO ORDER BY DESFILE_ID'
  const want = (direct.prepare(q).raw(true).all() as unknown[][]).map((r) => r.map((v) => (v === null ? '' : String(v))))
  const tsv = await sql(['-c', q])
  t.equal(tsv.code, 0)
  t.match(tsv.stderr, /^found \d+ rows/, 'on a pipe the found line goes to stderr')
  const unescape = (f: string) => f.replace(/\\(.)/g, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', '\\': '\\' })[c] ?? c)
  const lines = tsv.stdout.split('\n').slice(0, -1)
  t.same(lines[0]!.split('\t'), ['FILENAME', 'PATH', 'COMPRESSION', 'DESFILE_ID'], 'TSV header')
  t.same(
    lines.slice(1).map((l) => l.split('\t').map(unescape)),
    want,
    'TSV rows (NULL as empty)',
  )

  // Values that look like control lines or need escapes come through as data.
  const tricky =
    'SELECT \'{"done":true,"rows":0}\' AS A, char(30) || \'{"error":"x","kind":"sql"}\' AS B, \'a\' || char(9) || \'b\' || char(10) || \'c\\d\' || char(13) AS C, NULL AS D'
  for (const args of [
    ['-c', tricky],
    ['-c', `${tricky}; > tricky.tsv`],
  ]) {
    const r = await sql(args)
    t.equal(r.code, 0, r.stderr)
    const text = args[1]!.endsWith('.tsv') ? readFileSync(join(work, 'tricky.tsv'), 'utf8') : r.stdout
    t.equal(
      text,
      'A\tB\tC\tD\n{"done":true,"rows":0}\t\\x1e{"error":"x","kind":"sql"}\ta\\tb\\nc\\\\d\\r\t\n',
      `TSV escapes, and data that looks like a control line is data (${args[1]})`,
    )
  }

  for (const file of ['out.csv', 'out.csv.gz']) {
    const r = await sql(['-c', `${q}; > ${file}`])
    t.equal(r.code, 0, r.stderr)
    const path = join(work, file)
    if (file.endsWith('.gz')) writeFileSync(path + '.plain', gunzipSync(readFileSync(path)))
    const py = await run(PYTHON, [
      '-c',
      'import csv, json, sys; print(json.dumps(list(csv.reader(open(sys.argv[1], newline="")))))',
      file.endsWith('.gz') ? path + '.plain' : path,
    ])
    t.equal(py.code, 0, py.stderr)
    const rows = JSON.parse(py.stdout) as string[][]
    t.same(rows[0], ['FILENAME', 'PATH', 'COMPRESSION', 'DESFILE_ID'])
    t.same(rows.slice(1), want, `${file}: Python's csv reads the same values`)
  }
})

t.test('FITS output: valid, typed from the declared types and the data, NULLs by convention', async (t) => {
  if (!needTool(t, 'fitsverify', 'fitsverify') || !needPythonModule(t, 'fitsio', 'python3-fitsio')) return
  // The first row has NULL or text where later rows differ, so the first row cannot decide types.
  const q = `SELECT FILENAME, PFW_ATTEMPT_ID, TILENAME, EXPNUM, CCDNUM,
      CASE WHEN CCDNUM % 2 = 0 THEN NULL ELSE CAST(CCDNUM AS INTEGER) END AS ODD_CCD,
      CASE WHEN rowid = 1 THEN 'one' ELSE CAST(CCDNUM AS INTEGER) END AS MIXED,
      NULL AS NO_VALUE,
      CCDNUM * 0.5 AS HALF,
      CASE WHEN rowid = 1 THEN NULL ELSE FILETYPE END AS LATE_TEXT
    FROM Y6A2_MISCFILE ORDER BY rowid`
  const r = await sql(['-c', `${q}; > misc.fits`])
  t.equal(r.code, 0, r.stderr)
  const path = join(work, 'misc.fits')
  const v = await run('fitsverify', ['-q', '-e', path])
  t.match(v.stdout, /verification OK/, `fitsverify: ${v.stdout}`)
  const script = `
import sys, json, fitsio, numpy as np
data, h = fitsio.read(sys.argv[1], ext=1, header=True)
def kind(dt):  # fitsio gives str columns as numpy unicode (4 bytes a character): report characters
    return 'S' + str(dt.itemsize // 4) if dt.kind == 'U' else dt.kind + str(dt.itemsize)
out = {'names': list(data.dtype.names), 'kinds': [kind(data.dtype[n]) for n in data.dtype.names],
       'tnull': {k: h[k] for k in h.keys() if k.startswith('TNULL')}, 'rows': []}
for row in data:
    vals = []
    for n in data.dtype.names:
        x = row[n]
        if isinstance(x, (bytes, np.bytes_)): vals.append(x.decode())
        elif isinstance(x, str): vals.append(x)
        elif np.issubdtype(type(x), np.floating): vals.append(None if np.isnan(x) else float(x))
        else: vals.append(int(x))
    out['rows'].append(vals)
print(json.dumps(out))
`
  const py = await run(PYTHON, ['-c', script, path])
  t.equal(py.code, 0, py.stderr)
  const got = JSON.parse(py.stdout) as { names: string[]; kinds: string[]; tnull: Record<string, number>; rows: unknown[][] }
  t.same(got.names, ['FILENAME', 'PFW_ATTEMPT_ID', 'TILENAME', 'EXPNUM', 'CCDNUM', 'ODD_CCD', 'MIXED', 'NO_VALUE', 'HALF', 'LATE_TEXT'])
  const rows = direct.prepare(q).raw(true).all() as (string | number | null)[][]
  const maxLen = (i: number) => Math.max(...rows.map((r) => (r[i] === null ? 0 : String(r[i]).length)))
  t.same(
    got.kinds,
    [`S${maxLen(0)}`, 'i8', `S${maxLen(2)}`, 'f8', 'f8', 'i8', `S${maxLen(6)}`, 'f8', 'f8', `S${maxLen(9)}`],
    'text -> string, integers -> int64, declared REAL -> float64, NULL-only -> float64',
  )
  t.same(Object.values(got.tnull), [-9223372036854775808, -9223372036854775808].map(Number), 'TNULL on the integer columns')
  const INT_NULL = -9223372036854775808
  const expect = rows.map((r) =>
    r.map((x, i) => {
      const kind = got.kinds[i]!
      if (kind.startsWith('S')) return x === null ? '' : String(x)
      if (kind === 'i8') return x === null ? INT_NULL : x
      return x
    }),
  )
  t.same(got.rows, expect, 'fitsio reads back the same values (NULL: TNULL, NaN, empty string)')

  const empty = await sql(['-c', 'SELECT FILENAME, DESFILE_ID FROM Y6A2_FILE_ARCHIVE_INFO WHERE 0; > empty.fits'])
  t.equal(empty.code, 0, empty.stderr)
  t.match(
    (await run('fitsverify', ['-q', '-e', join(work, 'empty.fits')])).stdout,
    /verification OK/,
    'an empty result is a valid empty table',
  )
})

t.test('refused: writes, ATTACH/DETACH, state-changing PRAGMAs, load_extension, several statements', async (t) => {
  const dbBefore = md5(readFileSync(a.db))
  const refused = [
    "INSERT INTO Y6A2_PROCTAG VALUES ('X', 'now', 'me', 1)",
    "UPDATE Y6A2_IMAGE SET BAND = 'x'",
    'DELETE FROM Y6A2_IMAGE',
    "REPLACE INTO Y6A2_PROCTAG VALUES ('X', 'now', 'me', 1)",
    'CREATE TABLE T (X)',
    'CREATE TEMP TABLE T (X)',
    'DROP TABLE Y6A2_IMAGE',
    "INSERT INTO Y6A2_PROCTAG VALUES ('X', 'now', 'me', 1) RETURNING *",
    "WITH x AS (SELECT 1) INSERT INTO Y6A2_PROCTAG SELECT 'a', 'b', 'c', 1 FROM x",
    `ATTACH '${join(work, 'other.db')}' AS other`,
    'DETACH main',
    'BEGIN',
    'PRAGMA query_only = OFF',
    'PRAGMA journal_mode = WAL',
    'PRAGMA writable_schema = ON',
    'PRAGMA cache_size = 10',
    'PRAGMA main.optimize',
    "SELECT load_extension('/tmp/nothing.so')",
    `VACUUM INTO '${join(work, 'copy.db')}'`,
    'SELECT 1; SELECT 2',
  ]
  for (const q of refused) {
    const viaSocket = await post({ sql: q })
    t.equal(viaSocket.status, 400, `POST /sql refuses: ${q}`)
    t.match(JSON.parse(viaSocket.text).error, /^refused: /, `a clear refusal: ${viaSocket.text}`)
  }
  // The CLI: each refusal one line (all in one shell on a pipe, which goes on after each), and exit 1.
  const sh = await sql([], {
    input: refused
      .slice(0, -1)
      .map((q) => q + ';\n')
      .join(''),
  })
  t.equal(sh.code, 1)
  t.equal(
    sh.stderr
      .trim()
      .split('\n')
      .filter((l) => /^desfs: refused: /.test(l)).length,
    refused.length - 1,
    `every statement refused in one line:\n${sh.stderr}`,
  )
  t.equal(sh.stdout, '', 'and nothing ran')
  for (const q of [refused[0]!, refused[9]!]) {
    const r = await sql(['-c', q])
    t.equal(r.code, 1, `exit 1: ${q}`)
    oneLine(t, r.stderr, /^desfs: refused: /)
  }
  const multi = await sql(['-c', 'SELECT 1; SELECT 2'])
  t.equal(multi.code, 2, 'several statements in -c: a usage error')
  oneLine(t, multi.stderr, /-c takes one statement.*-l FILE/)
  t.notOk(existsSync(join(work, 'other.db')), 'ATTACH created nothing')
  t.notOk(existsSync(join(work, 'copy.db')), 'VACUUM INTO wrote nothing')
  t.equal(md5(readFileSync(a.db)), dbBefore, 'the DB file is unchanged')

  const literal = await sql(['-c', "SELECT count(*) AS N FROM Y6A2_IMAGE WHERE FILENAME LIKE '%load_extension%' OR FILENAME = 'ATTACH'"])
  t.equal(literal.code, 0, 'words inside string literals are not refused')
  for (const q of [
    'PRAGMA table_info(Y6A2_IMAGE)',
    "SELECT * FROM pragma_table_info('Y6A2_IMAGE')",
    'PRAGMA page_size',
    'EXPLAIN QUERY PLAN SELECT * FROM Y6A2_IMAGE',
    'VALUES (1, 2)',
    'SELECT 1;',
  ]) {
    const r = await sql(['-c', q])
    t.equal(r.code, 0, `allowed: ${q} ${r.stderr}`)
  }
  const bad = await sql(['-c', 'SELEC 1'])
  t.equal(bad.code, 1)
  oneLine(t, bad.stderr, /^desfs: SQL error: near "SELEC": syntax error/)
  const ext = await sql(['-c', 'SELECT 1; > out.xlsx'])
  t.equal(ext.code, 2)
  oneLine(t, ext.stderr, /cannot tell the output format of 'out\.xlsx'.*\.fits, \.csv/)
})

t.test('a long query times out, and its process is gone at once', async (t) => {
  const t0 = Date.now()
  const r = await sql(['--timeout', '1s', '-c', ENDLESS], { timeoutMs: 30_000 })
  const took = Date.now() - t0
  t.equal(r.code, 1)
  oneLine(t, r.stderr, /^desfs: query timed out after 1\.0s and was stopped \(allow more with --timeout/)
  t.ok(took < 15_000, `not a hang (${took} ms)`)
  t.ok(
    await until(async () => (await status()).sql.running === 0 && queryProcesses() <= 1, 5000),
    'no query running; only the spare process is left',
  )

  const viaSocket = await post({ sql: ENDLESS, timeoutMs: 500 })
  t.equal(viaSocket.status, 408, 'POST /sql: 408 when the timeout struck before any row')
  t.match(JSON.parse(viaSocket.text), { kind: 'timeout' })

  // At most 4 queries at once: a fifth is told so, and nothing is left behind when they go.
  const acs = [0, 1, 2, 3].map(() => new AbortController())
  const endless = acs.map((ac) => post({ sql: ENDLESS, timeoutMs: 0 }, ac.signal))
  t.ok(await until(async () => (await status()).sql.running === 4, 15_000), 'four queries run')
  const fifth = await post({ sql: 'SELECT 1' })
  t.equal(fifth.status, 503)
  t.match(JSON.parse(fifth.text), {
    error: /^4 SQL queries are already running \(the limit\); wait for one to finish or cancel it$/,
    kind: 'busy',
  })
  for (const ac of acs) ac.abort()
  await Promise.all(endless)
  t.ok(
    await until(async () => (await status()).sql.running === 0 && queryProcesses() <= 2, 5000),
    'closing the connections stopped all four',
  )
})

t.test('cancelling the client cancels the query', async (t) => {
  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    const child = spawn(process.execPath, [DESFS, 'sql', '--state-dir', d.stateDir, '--timeout', '0', '-c', ENDLESS], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    t.ok(await until(async () => (await status()).sql.running === 1, 10_000), 'the query runs')
    child.kill(signal)
    const code = await exited
    if (signal === 'SIGINT') {
      t.equal(code, 130, 'Ctrl-C: exit 130')
      t.equal(stderr.trim(), 'desfs: query cancelled')
    }
    t.ok(
      await until(async () => (await status()).sql.running === 0 && queryProcesses() <= 1, 5000),
      `${signal}: the daemon stopped the query`,
    )
  }
  const m = await desfs(['metrics', '--state-dir', d.stateDir], { env })
  t.match(m.stdout, /desfs_sql_queries_total\{outcome="cancelled"\} [1-9]/, 'counted as cancelled')
})

t.test('reads of the mount go on while a long query runs', async (t) => {
  const child = spawn(process.execPath, [DESFS, 'sql', '--state-dir', d.stateDir, '--timeout', '0', '-c', ENDLESS], {
    env,
    stdio: 'ignore',
  })
  t.teardown(() => child.kill('SIGKILL'))
  t.ok(await until(async () => (await status()).sql.running === 1, 10_000), 'the query runs')
  const files = a.manifest.files.slice(0, 12).map((f) => f.rel)
  for (let round = 0; round < 3; round++) {
    const r = await run('md5sum', files, { cwd: d.mnt, timeoutMs: 60_000 })
    t.equal(r.code, 0, `round ${round}: md5sum through the mount succeeds during the query`)
    const got = parseMd5sum(r.stdout)
    t.ok(
      files.every((f) => got.get(f) === md5(readFileSync(join(a.root, f)))),
      'with the right bytes',
    )
  }
  t.equal((await status()).sql.running, 1, 'the query was running all along')
  child.kill('SIGINT')
  t.ok(await until(async () => (await status()).sql.running === 0, 5000))
})

t.test('scripts (-l) and the shell on a pipe', async (t) => {
  const script = join(work, 'script.sql')
  writeFileSync(
    script,
    [
      '-- two statements, one over two lines, each to its own file',
      "SELECT FILENAME, BAND FROM Y6A2_IMAGE WHERE BAND = 'g'; > g.csv",
      'SELECT count(*) AS N',
      '  FROM Y6A2_IMAGE; > n.json',
      '',
    ].join('\n'),
  )
  const r = await sql(['-l', script])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout.match(/^found \d+ rows/gm)?.length, 2, 'a found line per statement')
  t.equal(
    readFileSync(join(work, 'g.csv'), 'utf8').trim().split('\n').length - 1,
    direct.prepare("SELECT count(*) FROM Y6A2_IMAGE WHERE BAND = 'g'").pluck().get() as number,
  )
  t.same(JSON.parse(readFileSync(join(work, 'n.json'), 'utf8')), direct.prepare('SELECT count(*) AS N FROM Y6A2_IMAGE').all())

  const input =
    [
      'describe_table y6a2_coadd',
      'find_tables IMAGE',
      'SELECT TAG',
      '  FROM Y6A2_PROCTAG',
      '  ORDER BY TAG LIMIT 2;',
      'SELECT * FROM NO_SUCH_TABLE;',
      'describe_table NO_SUCH_TABLE',
      ':q',
      'SELECT 1;',
    ].join('\n') + '\n'
  const sh = await sql([], { input })
  t.equal(sh.code, 1, 'exit 1 after a failed statement in piped input')
  t.match(
    sh.stdout,
    /COLUMN_NAME\tTYPE\tNOT_NULL\tPRIMARY_KEY\nFILENAME\tTEXT\t0\t0\n[\s\S]*MAG_ZERO\tREAL\t0\t0\n/,
    'describe_table lists columns and types',
  )
  t.match(sh.stdout, /TABLE_NAME\tTYPE\nY6A2_IMAGE\ttable\nY6A2_IMAGE_TO_TILE\ttable\n/, 'find_tables lists matching tables')
  t.match(sh.stdout, /TAG\nY6A1_COADD_INPUT\nY6A1_COADD_INPUT\n/, 'a statement over three lines')
  t.notMatch(sh.stdout, /^1$/m, 'nothing runs after :q')
  t.match(sh.stderr, /desfs: SQL error: no such table: NO_SUCH_TABLE/)
  t.match(sh.stderr, /desfs: no table or view named NO_SUCH_TABLE \(list them with find_tables\)/)

  // Ctrl-C in the shell cancels the running statement, and the shell goes on with the next one.
  const child = spawn(process.execPath, [DESFS, 'sql', '--state-dir', d.stateDir, '--timeout', '0'], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr.on('data', (c: Buffer) => (err += c.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.stdin.write(`${ENDLESS};\nSELECT 42 AS ANSWER;\n`)
  t.ok(await until(async () => (await status()).sql.running === 1, 10_000), 'the endless query runs')
  child.kill('SIGINT')
  t.ok(await until(() => /ANSWER\n42\n/.test(out), 10_000), `the next statement ran (${out} ${err})`)
  child.stdin.end()
  t.equal(await exited, 1, 'the shell ends at the end of its input')
  t.match(err, /desfs: query cancelled/)
})

/** Runs a command on a pseudo-terminal (Python's pty), sending input and waiting for output by steps. */
const PTY_DRIVER = `
import os, pty, sys, time, select, json
steps = json.loads(sys.argv[1]); argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = b''
mark = 0  # waits look at the output since the last send
def read_for(secs):
    global out
    end = time.time() + secs
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try: out += os.read(fd, 65536)
            except OSError: return
for kind, arg in steps:
    if kind == 'send': mark = len(out); os.write(fd, arg.encode())
    elif kind == 'sleep': read_for(arg)
    else:
        end = time.time() + 30
        while time.time() < end and arg.encode() not in out[mark:]: read_for(0.1)
        if arg.encode() not in out[mark:]: sys.stdout.write(out.decode(errors='replace')); sys.exit('timed out waiting for ' + arg)
end = time.time() + 20
while time.time() < end and os.waitpid(pid, os.WNOHANG) == (0, 0): read_for(0.1)
sys.stdout.write(out.decode(errors='replace'))
if time.time() >= end: os.kill(pid, 9); sys.exit('the command did not exit')
`

t.test('the interactive shell on a terminal: tables, Ctrl-C, history shared with des-archive-access', async (t) => {
  if (!needTool(t, PYTHON, 'python3')) return
  const daa = join(work, 'daa')
  mkdirSync(daa, { recursive: true })
  const steps = [
    ['wait', '> '],
    ['send', 'SELECT FILENAME, EXPNUM, TILENAME FROM Y6A2_IMAGE\r'],
    ['wait', '... '],
    ['send', '  ORDER BY FILENAME LIMIT 3;\r'],
    ['wait', 'found 3 rows'],
    ['send', `${ENDLESS};\r`],
    ['sleep', 1.5],
    ['send', '\x03'],
    ['wait', 'query cancelled'],
    ['send', 'SELECT 42 AS X;\r'],
    ['wait', 'found 1 rows'],
    ['send', 'half typed\r'],
    ['wait', '... '],
    ['send', '\x03'],
    ['sleep', 0.3],
    ['send', ':q\r'],
  ]
  const r = await run(
    PYTHON,
    ['-c', PTY_DRIVER, JSON.stringify(steps), process.execPath, DESFS, 'sql', '--state-dir', d.stateDir, '--timeout', '0'],
    { env, timeoutMs: 90_000 },
  )
  t.equal(r.code, 0, 'the shell left on :q')
  if (r.code !== 0) t.comment(r.stderr + r.stdout)
  const out = r.stdout.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '')
  const want = direct.prepare('SELECT FILENAME, EXPNUM, TILENAME FROM Y6A2_IMAGE ORDER BY FILENAME LIMIT 3').raw(true).all() as [
    string,
    number,
    string | null,
  ][]
  const w = Math.max(...want.map((x) => x[0].length))
  const table = [
    `${'FILENAME'.padEnd(w)}  EXPNUM  TILENAME`,
    `${'-'.repeat(w)}  ------  --------`,
    ...want.map((x) => `${x[0].padEnd(w)}  ${String(x[1]).padStart(6)}  ${x[2] ?? 'NULL'}`.trimEnd()),
  ].join('\n')
  t.ok(out.includes(table + '\nfound 3 rows in '), 'an aligned table, NULL shown as NULL, then the found line')
  if (!out.includes(table)) t.comment(`wanted:\n${table}\ngot:\n${out}`)
  t.match(out, /desfs: query cancelled\n/, 'Ctrl-C cancelled the running query')
  t.match(out, / X\n--\n42\nfound 1 rows/, 'and the shell went on')
  t.match(out, /half typed\n\.\.\. \^C\n> :q/, 'Ctrl-C clears a half-typed statement')
  t.ok(await until(async () => (await status()).sql.running === 0, 5000), 'nothing left running')
  const hist = readFileSync(join(daa, 'history'), 'utf8')
  t.match(
    hist,
    /\n# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\n\+SELECT FILENAME, EXPNUM, TILENAME FROM Y6A2_IMAGE\n\+  ORDER BY FILENAME LIMIT 3;\n/,
    "history in des-archive-access's file and format",
  )
  t.match(hist, /\n\+SELECT 42 AS X;\n/)
})

t.test('with no daemon, desfs sql opens the DB itself and answers the same', async (t) => {
  const noDaemon = join(work, 'no-daemon-state')
  for (const [i, q] of QUERIES.entries()) {
    const r = await run(process.execPath, [DESFS, 'sql', '--state-dir', noDaemon, '--db', a.db, '-c', `${q}; > d${i}.json`], {
      env,
      cwd: work,
    })
    t.equal(r.code, 0, r.stderr)
    t.same(
      JSON.parse(readFileSync(join(work, `d${i}.json`), 'utf8')),
      JSON.parse(readFileSync(join(work, `r${i}.json`), 'utf8')),
      `same as through the daemon: ${q}`,
    )
  }
  const env2 = { ...env, DES_ARCHIVE_ACCESS_DB: a.db }
  const viaEnv = await run(process.execPath, [DESFS, 'sql', '--state-dir', noDaemon, '-c', 'SELECT count(*) FROM Y6A2_IMAGE'], {
    env: env2,
  })
  t.equal(viaEnv.code, 0, 'no socket in the state dir: direct mode, DB from DES_ARCHIVE_ACCESS_DB')
  t.equal(viaEnv.stdout.split('\n')[1], String(direct.prepare('SELECT count(*) FROM Y6A2_IMAGE').pluck().get()))
  const timedOut = await run(process.execPath, [DESFS, 'sql', '--db', a.db, '--timeout', '1s', '-c', ENDLESS], { env, timeoutMs: 30_000 })
  t.equal(timedOut.code, 1)
  oneLine(t, timedOut.stderr, /query timed out after 1\.0s/)
  const refused = await run(process.execPath, [DESFS, 'sql', '--db', a.db, '-c', 'PRAGMA writable_schema = 1'], { env })
  oneLine(t, refused.stderr, /^desfs: refused: PRAGMA writable_schema/)
  const missing = await run(process.execPath, [DESFS, 'sql', '--db', join(work, 'nope.db'), '-c', 'SELECT 1'], { env })
  t.equal(missing.code, 3, 'a missing DB: exit 3')
  oneLine(t, missing.stderr, /metadata DB not found at .*nope\.db: download it/)
})
