// Sync recipes: named SQL over the metadata DB that selects files (path, filename, compression) from
// parameters such as :tilename and :band. Recipes are data: the built-in ones live in
// daemon/recipes/*.sql, and a site or user adds its own as .sql files in ~/.config/desfs/recipes
// (or $DESFS_RECIPES). A recipe file starts with comment lines `-- name:`, `-- description:` and
// `-- params:` (space-separated), followed by one SELECT statement. A recipe may also say how to list
// a parameter's values, for the mount's .desfs/recipes directories (fs/query-dirs.ts):
// `-- values tilename: SELECT DISTINCT TILENAME FROM Y6A2_COADD` (one column; it may use the
// parameters before it, e.g. :tilename in the values query of band).
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EXIT, UserError } from '../errors.js'
import { xdgConfigHome } from '../paths.js'

export interface Recipe {
  name: string
  description: string
  params: string[]
  sql: string
  /** Per parameter, a query listing its values (one column), when the recipe declares one. */
  values?: Record<string, string>
  /** The file it came from. */
  file: string
}

export const BUILTIN_RECIPES_DIR = fileURLToPath(new URL('../../../daemon/recipes/', import.meta.url))

export function userRecipesDir(): string {
  return process.env.DESFS_RECIPES || join(xdgConfigHome(), 'desfs', 'recipes')
}

/** Parses one recipe file's text. */
export function parseRecipe(text: string, file: string): Recipe {
  const header = new Map<string, string>()
  for (const line of text.split('\n')) {
    const m = /^--\s*(name|description|params)\s*:\s*(.*)$/.exec(line.trim())
    if (m) header.set(m[1]!, m[2]!.trim())
  }
  const name = header.get('name') ?? file.replace(/^.*\//, '').replace(/\.sql$/, '')
  if (!/^[a-z0-9][a-z0-9_-]*$/i.test(name)) throw new UserError(`recipe ${file}: name '${name}' must be letters, digits, - and _`)
  const params = (header.get('params') ?? '').split(/[\s,]+/).filter(Boolean)
  const sql = text
    .replace(/^\s*--.*$/gm, '')
    .trim()
    .replace(/;\s*$/, '')
  if (!/^(WITH|SELECT)\b/i.test(sql)) throw new UserError(`recipe ${file}: must be one SELECT (or WITH ... SELECT) statement`)
  for (const p of params)
    if (!new RegExp(`[:@$]${p}\\b`).test(sql)) throw new UserError(`recipe ${file}: declares parameter ${p} but the SQL does not use :${p}`)
  const values: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^--\s*values\s+(\S+)\s*:\s*(.*)$/.exec(line.trim())
    if (!m) continue
    const [, param, q] = m as unknown as [string, string, string]
    if (!params.includes(param))
      throw new UserError(
        `recipe ${file}: a values query for '${param}', which is not one of its parameters (${params.join(' ') || 'none'})`,
      )
    if (!/^(WITH|SELECT)\b/i.test(q.trim()))
      throw new UserError(`recipe ${file}: the values query of '${param}' must be one SELECT on one line`)
    const later = params.slice(params.indexOf(param))
    for (const p of later)
      if (new RegExp(`[:@$]${p}\\b`).test(q))
        throw new UserError(`recipe ${file}: the values query of '${param}' may use only the parameters before it, not :${p}`)
    values[param] = q.trim().replace(/;\s*$/, '')
  }
  return { name, description: header.get('description') ?? '', params, sql, file, ...(Object.keys(values).length ? { values } : {}) }
}

/**
 * All recipes that parse (a user recipe with a built-in's name replaces it), and the files that do
 * not (by file name, with the reason), so one broken file leaves the others usable.
 */
export function loadRecipesLenient(): { recipes: Map<string, Recipe>; broken: Map<string, string> } {
  const recipes = new Map<string, Recipe>()
  const broken = new Map<string, string>()
  for (const dir of [BUILTIN_RECIPES_DIR, userRecipesDir()]) {
    let names: string[]
    try {
      names = readdirSync(dir)
        .filter((f) => f.endsWith('.sql'))
        .sort()
    } catch {
      continue
    }
    for (const f of names) {
      const stem = f.replace(/\.sql$/, '')
      try {
        const r = parseRecipe(readFileSync(join(dir, f), 'utf8'), join(dir, f))
        recipes.set(r.name, r)
        broken.delete(r.name)
      } catch (err) {
        broken.set(stem, (err as Error).message)
      }
    }
  }
  return { recipes, broken }
}

/** Finds a recipe and checks that every parameter it needs was given. */
export function recipeWithParams(
  name: string,
  params: Record<string, string | undefined>,
): { recipe: Recipe; values: Record<string, string> } {
  // One broken file does not stop the others; asking for it by name says what is wrong with it.
  const { recipes, broken } = loadRecipesLenient()
  const recipe = recipes.get(name)
  if (!recipe && broken.has(name)) throw new UserError(broken.get(name)!, EXIT.USAGE)
  if (!recipe)
    throw new UserError(
      `no recipe named '${name}' (known: ${[...recipes.keys()].join(', ')}; add your own in ${userRecipesDir()})`,
      EXIT.USAGE,
    )
  const values: Record<string, string> = {}
  const missing: string[] = []
  for (const p of recipe.params) {
    const v = params[p]
    if (v === undefined || v === '') missing.push(p)
    else values[p] = v
  }
  if (missing.length) throw new UserError(`recipe '${name}' needs ${missing.map((p) => `--${p}`).join(' and ')}`, EXIT.USAGE)
  return { recipe, values }
}
