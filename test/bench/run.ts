// `npm run bench -- NAME [options]`: runs test/bench/NAME.ts (tree, fetch, sql, sync, ...). Each
// benchmark module exports `run(args: string[]): Promise<void>` and prints its figures, as ratios
// against a baseline measured in the same run where the issue asks for one. Timings live here, never
// in the pass/fail tests.
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && !['run.js', 'util.js'].includes(f))
  .map((f) => f.slice(0, -3))
const [name, ...args] = process.argv.slice(2)
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- NAME [options]\navailable: ${available.join(', ') || '(none)'}`)
  process.exit(2)
}
const mod = (await import(`./${name}.js`)) as { run: (args: string[]) => Promise<void> }
await mod.run(args)
process.exit(process.exitCode ?? 0)
