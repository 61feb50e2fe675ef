// Which way the read path's dependencies point, read from the sources' import lines: cache/ takes
// from daemon/ only its leaf utilities (never config, tokens or the daemon), from fs/ nothing, and its modules import each other without a cycle;
// shipped code (bin/, daemon/, fs/, cache/) imports nothing from test/.
import t from 'tap'
import { readdirSync, readFileSync, existsSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FIXTURES_DIR } from '../bin/demo/generate.js'

// Run from dist/test: the TypeScript sources are two levels up.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** Leaf utilities of daemon/ (they import nothing of the daemon's own but each other). */
const DAEMON_LEAVES = new Set([
  'daemon/log.ts',
  'daemon/units.ts',
  'daemon/errors.ts',
  'daemon/metrics.ts',
  'daemon/state-dir.ts',
  'daemon/safe-write.ts',
])

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  )
}

/** Project files a source file imports (relative specifiers only, static or `import('...')`), as paths from the root. */
function imports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const out: string[] = []
  const found = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm), ...text.matchAll(/\bimport\(\s*'(\.[^']+)'\s*\)/g)]
  for (const m of found) {
    out.push(relative(ROOT, resolve(ROOT, dirname(file), m[1]!.replace(/\.js$/, '.ts'))))
  }
  return out
}

t.test('the layering rules hold for cache/', async (t) => {
  t.ok(existsSync(join(ROOT, 'cache', 'fetcher.ts')), `sources found at ${ROOT}`)
  const files = tsFiles('cache')
  const bad: string[] = []
  for (const f of files) {
    for (const dep of imports(f)) {
      if (dep.startsWith('daemon/') && !DAEMON_LEAVES.has(dep)) bad.push(`${f} imports ${dep}`)
      if (dep.startsWith('fs/')) bad.push(`${f} imports ${dep}`)
      if (dep.startsWith('bin/') || dep.startsWith('test/')) bad.push(`${f} imports ${dep}`)
    }
  }
  t.same(bad, [], 'cache/ imports from daemon/ only leaf utilities, nothing from fs/, from bin/ or test/')

  // No cycle among cache/'s modules (a depth-first walk finds a back edge if there is one).
  const graph = new Map(files.map((f) => [f, imports(f).filter((d) => d.startsWith('cache/'))]))
  const state = new Map<string, 'open' | 'done'>()
  const cycles: string[] = []
  const visit = (f: string, path: string[]) => {
    state.set(f, 'open')
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') cycles.push([...path, f, d].slice(path.indexOf(d) >= 0 ? path.indexOf(d) : 0).join(' -> '))
      else if (!state.has(d)) visit(d, [...path, f])
    }
    state.set(f, 'done')
  }
  for (const f of files) if (!state.has(f)) visit(f, [])
  t.same(cycles, [], 'no import cycle inside cache/')
})

t.test('shipped code imports nothing from test/', async (t) => {
  t.ok(existsSync(join(ROOT, 'bin', 'cmd-demo.ts')), `sources found at ${ROOT}`)
  const bad: string[] = []
  for (const dir of ['bin', 'daemon', 'fs', 'cache']) {
    for (const f of tsFiles(dir)) for (const dep of imports(f)) if (dep.startsWith('test/')) bad.push(`${f} imports ${dep}`)
  }
  // What the demo runs (archive generator, dCache-like server, tokens) lives in bin/demo/; the tests import it from there.
  t.same(bad, [], 'bin/, daemon/, fs/ and cache/ import nothing from test/ (statically or by import())')
  // Nor read files from it: without fpack the generator copies committed .fz files, which must ship too.
  const fz = relative(ROOT, FIXTURES_DIR)
  t.ok(existsSync(FIXTURES_DIR) && readdirSync(FIXTURES_DIR).some((n) => n.endsWith('.fits.fz')), `the generator's .fz files are at ${fz}`)
  t.notOk(fz.startsWith('test'), `the generator's .fz files (${fz}) lie outside test/`)
})

t.test('one concept per module: no file in cache/ or fs/ is over 400 lines', async (t) => {
  const long = ['cache', 'fs']
    .flatMap((d) => tsFiles(d))
    .map((f) => [f, readFileSync(join(ROOT, f), 'utf8').split('\n').length - 1] as const)
    .filter(([, n]) => n > 400)
  t.same(long, [], 'files over 400 lines (split them by what they do)')
})
