// The lint config (eslint.config.js) that `npm test` runs: it lints the TypeScript sources with the
// recommended rules, keeps the project's deliberate exceptions, and leaves compiled output alone.
import t from 'tap'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ESLint } from 'eslint'

// Run from dist/test: the sources and eslint.config.js are two levels up.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

t.test('eslint.config.js: what it flags and what it leaves alone', async (t) => {
  const eslint = new ESLint({ cwd: ROOT })
  const rules = async (code: string, file = 'daemon/lint-probe.ts') =>
    (await eslint.lintText(code, { filePath: join(ROOT, file) }))[0]!.messages.map((m) => m.ruleId)
  t.same(await rules('const unused = 1\n'), ['@typescript-eslint/no-unused-vars'], 'typescript-eslint recommended: an unused variable')
  t.same(await rules('export const x: any = 1\n'), ['@typescript-eslint/no-explicit-any'], 'an explicit any')
  t.same(await rules('export function f(a: number) { if (a) { } }\n'), ['no-empty'], '@eslint/js recommended: an empty block')
  t.same(
    await rules('export function f(_req: unknown) {\n  for (const _ of [1]) void 0\n}\n'),
    [],
    'a leading underscore marks unused on purpose',
  )
  t.same(
    await rules('export const ok = (s: string) => /[\\x00-\\x1f]/.test(s) && /^tree        x/.test(s)\n', 'test/lint-probe.test.ts'),
    [],
    'control characters and aligned columns in regexes are deliberate',
  )
  t.ok(await eslint.isPathIgnored(join(ROOT, 'dist/daemon/daemon.js')), 'compiled output is not linted')
  t.ok(await eslint.isPathIgnored(join(ROOT, 'node_modules/prom-client/index.js')), 'nor node_modules')
  t.notOk(await eslint.isPathIgnored(join(ROOT, 'cache/fetcher.ts')), 'the sources are')
})
