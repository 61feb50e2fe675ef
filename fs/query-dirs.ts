// Query-defined directories under the mount's hidden control directory `.desfs` (issue 12):
//   .desfs/by-name/<FILENAME>               a link to the file with that name (with or without its
//                                            compression suffix); looked up, never listed
//   .desfs/recipes/<recipe>/<v1>/.../<vn>/   one link per file the recipe selects with those values
// Every link is relative and points into the mount's own tree, so tools follow it and `readlink -f`
// gives the real path. Queries run in the SQL engine's processes (never on this thread) under a
// timeout; their results are kept (the DB is read-only) until clear(), which the daemon calls when
// a new DB is swapped in. Values from the path are bound as SQL parameters, never spliced into SQL.
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { FsError, ERRNO } from './tree.js'
import { MAX_NAME_BYTES } from './tree-rules.js'
import { rowsToPaths } from '../daemon/jobs/sync.js'
import { loadRecipesLenient, type Recipe } from '../daemon/catalog/recipes.js'
import { log } from '../daemon/log.js'

export const CONTROL_DIR = '.desfs'
const CONTROL_PATH = '/' + CONTROL_DIR

export type QueryNode = { kind: 'dir' } | { kind: 'link'; target: string }

/** A directory entry under .desfs: a directory, or a link with its target. */
export interface QueryEntry {
  name: string
  link?: string
}

export interface QueryDirsDeps {
  /** Runs a read-only query in the SQL engine with named parameters and a timeout. */
  select: (sql: string, params: Record<string, string>, timeoutMs: number) => Promise<unknown[][]>
  /** The SELECT of the DB's file rows (path, filename, compression) the tree is built from. */
  fileRows: () => string
  /** True when the mount's tree has a file at this archive path. */
  inTree: (rel: string) => boolean
  /**
   * False for a file the archive does not have (the tree hides those too); learned with one listing
   * per directory. Absent: every file of the tree counts as present.
   */
  present?: (rel: string) => Promise<boolean>
  /** Longest a query may run, ms: below the FUSE operation's own deadline, so the log names the query. */
  timeoutMs: number
  /** The recipes (tests give their own); by default the built-in and the user's, re-read at most once a second. */
  recipes?: () => { recipes: Map<string, Recipe>; broken: Map<string, string> }
}

interface Leaf {
  /** Link name -> target, in name order. */
  links: Map<string, string>
}

const EACCES = () => new FsError(ERRNO.EACCES, 'not listable')
const ENOENT = () => new FsError(ERRNO.ENOENT, 'no such entry')
const EIO = () => new FsError(ERRNO.EIO, 'query failed')

/**
 * Queries of .desfs running at once in the SQL engine; more wait their turn. The engine refuses
 * queries beyond its own limit, and `desfs sql` users need room too.
 */
const QUERY_SLOTS = 2

/** Files checked against the archive at once (each directory is listed once, shared). */
const PRESENT_CONCURRENCY = 8

/** How long a read of the recipe directories is reused (a file added is seen within this). */
const RECIPES_TTL_MS = 1000

/** True for the control directory and every path under it. */
export function isControlPath(fusePath: string): boolean {
  return fusePath === CONTROL_PATH || fusePath.startsWith(CONTROL_PATH + '/')
}

/** A value that can be a directory name (a values query may return anything). */
function nameable(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined
  const s = String(v)
  if (!s || s === '.' || s === '..' || s.includes('/') || s.includes('\0') || Buffer.byteLength(s) > MAX_NAME_BYTES) return undefined
  return s
}

/** Only the parameters an SQL text uses (better-sqlite3 refuses named values the SQL lacks). */
function usedParams(sql: string, values: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(values)) if (new RegExp(`[:@$]${k}\\b`).test(sql)) out[k] = v
  return out
}

/**
 * Link names for a leaf: each file's own name; files sharing a name get the name with a short hash
 * of their path before the first dot (`x~1a2b3c4d.fits.fz`), the same whatever else is selected.
 */
export function linkNames(rels: string[]): Map<string, string> {
  const byName = new Map<string, string[]>()
  for (const rel of rels) {
    const name = rel.slice(rel.lastIndexOf('/') + 1)
    const list = byName.get(name)
    if (list) list.push(rel)
    else byName.set(name, [rel])
  }
  const out = new Map<string, string>()
  for (const [name, list] of byName) {
    if (list.length === 1) {
      out.set(name, list[0]!)
      continue
    }
    const dot = name.indexOf('.', 1)
    for (const rel of list) {
      const tag = createHash('sha256').update(rel).digest('hex').slice(0, 8)
      out.set(dot < 0 ? `${name}~${tag}` : `${name.slice(0, dot)}~${tag}${name.slice(dot)}`, rel)
    }
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

export class QueryDirs {
  private deps: QueryDirsDeps
  private leaves = new LRUCache<string, Promise<Leaf>>({ max: 512 })
  private valueLists = new LRUCache<string, Promise<string[]>>({ max: 512 })
  private names = new LRUCache<string, Promise<string | null>>({ max: 20_000 })
  private fileSql: string | undefined
  private logged = new Set<string>()
  private recipeCache: { at: number; value: ReturnType<typeof loadRecipesLenient> } | undefined
  readonly stats = { queries: 0, failures: 0 }
  private running = 0
  private waiting: (() => void)[] = []

  constructor(deps: QueryDirsDeps) {
    this.deps = deps
  }

  /** Drops every kept result (a new DB is in service). */
  clear(): void {
    this.leaves = new LRUCache({ max: 512 })
    this.valueLists = new LRUCache({ max: 512 })
    this.names = new LRUCache({ max: 20_000 })
    this.fileSql = undefined
    this.logged.clear()
  }

  async resolve(fusePath: string): Promise<QueryNode> {
    const segs = this.segments(fusePath)
    if (segs.length === 0) return { kind: 'dir' }
    const [top, ...rest] = segs as [string, ...string[]]
    if (top === 'by-name') {
      if (rest.length === 0) return { kind: 'dir' }
      if (rest.length > 1) throw ENOENT()
      const rel = await this.byName(rest[0]!)
      if (!rel) throw ENOENT()
      return { kind: 'link', target: '../../' + rel }
    }
    if (top !== 'recipes') throw ENOENT()
    if (rest.length === 0) return { kind: 'dir' }
    const recipe = this.recipe(rest[0]!)
    const vals = rest.slice(1)
    const n = recipe.params.length
    if (vals.length < n) {
      if (vals.length > 0) await this.checkValue(recipe, vals)
      return { kind: 'dir' }
    }
    const leaf = await this.leaf(recipe, vals.slice(0, n))
    if (vals.length === n) {
      if (leaf.links.size === 0) throw ENOENT()
      return { kind: 'dir' }
    }
    if (vals.length > n + 1) throw ENOENT()
    const target = leaf.links.get(vals[n]!)
    if (target === undefined) throw ENOENT()
    return { kind: 'link', target }
  }

  async list(fusePath: string): Promise<QueryEntry[]> {
    const segs = this.segments(fusePath)
    if (segs.length === 0) return [{ name: 'by-name' }, { name: 'recipes' }]
    const [top, ...rest] = segs as [string, ...string[]]
    // There are millions of file names: by-name is looked up, never listed.
    if (top === 'by-name') throw rest.length === 0 ? EACCES() : new FsError(ERRNO.ENOTDIR, 'not a directory')
    if (top !== 'recipes') throw ENOENT()
    if (rest.length === 0) return [...this.recipes().recipes.keys()].sort().map((name) => ({ name }))
    const recipe = this.recipe(rest[0]!)
    const vals = rest.slice(1)
    const n = recipe.params.length
    if (vals.length < n) {
      const param = recipe.params[vals.length]!
      if (!recipe.values?.[param]) throw EACCES()
      if (vals.length > 0) await this.checkValue(recipe, vals)
      return (await this.values(recipe, vals)).map((name) => ({ name }))
    }
    if (vals.length > n) throw new FsError(ERRNO.ENOTDIR, 'not a directory')
    const leaf = await this.leaf(recipe, vals)
    if (leaf.links.size === 0) throw ENOENT()
    return [...leaf.links].map(([name, link]) => ({ name, link }))
  }

  async readlink(fusePath: string): Promise<string> {
    const n = await this.resolve(fusePath)
    if (n.kind !== 'link') throw new FsError(ERRNO.EINVAL, 'not a link')
    return n.target
  }

  private segments(fusePath: string): string[] {
    if (!isControlPath(fusePath)) throw ENOENT()
    const segs = fusePath
      .slice(CONTROL_PATH.length + 1)
      .split('/')
      .filter((s) => s !== '')
    // The kernel lets FUSE names reach 1024 bytes; no file or value name here is longer than 255.
    if (segs.some((s) => Buffer.byteLength(s) > MAX_NAME_BYTES)) throw new FsError(ERRNO.ENAMETOOLONG, 'name too long')
    return segs
  }

  /** The tree's files among `rels` that the archive has, in the same order. */
  private async existing(rels: string[]): Promise<string[]> {
    const inTree = rels.filter((rel) => this.deps.inTree(rel))
    const present = this.deps.present
    if (!present) return inTree
    const keep = new Array<boolean>(inTree.length).fill(false)
    // First one file of each directory, so directories are learned in parallel (one listing each),
    // then the rest, which their directory's listing has answered by then.
    const seen = new Set<string>()
    const firsts: number[] = []
    const rest: number[] = []
    inTree.forEach((rel, i) => {
      const dir = rel.slice(0, rel.lastIndexOf('/') + 1)
      if (seen.has(dir)) rest.push(i)
      else {
        seen.add(dir)
        firsts.push(i)
      }
    })
    for (const order of [firsts, rest]) {
      let next = 0
      const worker = async () => {
        for (let k = next++; k < order.length; k = next++) keep[order[k]!] = await present(inTree[order[k]!]!)
      }
      await Promise.all(Array.from({ length: Math.min(PRESENT_CONCURRENCY, order.length) }, worker))
    }
    return inTree.filter((_, i) => keep[i])
  }

  private recipes(): ReturnType<typeof loadRecipesLenient> {
    if (this.deps.recipes) return this.deps.recipes()
    const now = Date.now()
    if (!this.recipeCache || now - this.recipeCache.at > RECIPES_TTL_MS) this.recipeCache = { at: now, value: loadRecipesLenient() }
    return this.recipeCache.value
  }

  /** The recipe named by a directory; a file that does not parse is one log line and EIO. */
  private recipe(name: string): Recipe {
    const { recipes, broken } = this.recipes()
    const r = recipes.get(name)
    if (r) return r
    const why = broken.get(name)
    if (why === undefined) throw ENOENT()
    this.logOnce(`broken:${why}`, () => log.error(`recipe '${name}' cannot be used as a directory: EIO`, { reason: why }))
    throw EIO()
  }

  private logOnce(key: string, write: () => void): void {
    if (this.logged.has(key)) return
    this.logged.add(key)
    write()
  }

  /** A query in the SQL engine, queued behind QUERY_SLOTS others. */
  private async select(sql: string, params: Record<string, string>): Promise<unknown[][]> {
    while (this.running >= QUERY_SLOTS) await new Promise<void>((r) => this.waiting.push(r))
    this.running++
    this.stats.queries++
    try {
      return await this.deps.select(sql, params, this.deps.timeoutMs)
    } finally {
      this.running--
      this.waiting.shift()?.()
    }
  }

  /** Runs a query for a recipe; a failure or timeout is logged naming the recipe, and is EIO. */
  private async run(recipe: Recipe, what: string, sql: string, params: Record<string, string>): Promise<unknown[][]> {
    try {
      return await this.select(sql, usedParams(sql, params))
    } catch (err) {
      this.stats.failures++
      log.error(`recipe '${recipe.name}' ${what} failed: EIO`, { recipe: recipe.file, params, error: (err as Error).message })
      throw EIO()
    }
  }

  private bindings(recipe: Recipe, vals: string[]): Record<string, string> {
    const out: Record<string, string> = {}
    vals.forEach((v, i) => (out[recipe.params[i]!] = v))
    return out
  }

  /** Values of the parameter after `vals`, from the recipe's values query (kept, single-flight). */
  private values(recipe: Recipe, vals: string[]): Promise<string[]> {
    const param = recipe.params[vals.length]!
    const sql = recipe.values![param]!
    const key = JSON.stringify([sql, vals])
    let p = this.valueLists.get(key)
    if (!p) {
      const cache = this.valueLists
      p = this.run(recipe, `values query of '${param}'`, sql, this.bindings(recipe, vals)).then((rows) => {
        const seen = new Set<string>()
        for (const row of rows) {
          const v = nameable(row[0])
          if (v !== undefined) seen.add(v)
        }
        return [...seen].sort()
      })
      p.catch(() => cache.delete(key))
      cache.set(key, p)
    }
    return p
  }

  /** A value at a level with a values query must be one of them; without one, any value is a directory. */
  private async checkValue(recipe: Recipe, vals: string[]): Promise<void> {
    const param = recipe.params[vals.length - 1]!
    if (!recipe.values?.[param]) return
    if (!(await this.values(recipe, vals.slice(0, -1))).includes(vals[vals.length - 1]!)) throw ENOENT()
  }

  /** The files a recipe selects with these values, as links from the leaf directory (kept, single-flight). */
  private leaf(recipe: Recipe, vals: string[]): Promise<Leaf> {
    const key = JSON.stringify([recipe.sql, vals])
    let p = this.leaves.get(key)
    if (!p) {
      const cache = this.leaves
      const up = '../'.repeat(3 + vals.length) // .desfs/recipes/<recipe>/<values...>
      p = this.run(recipe, 'query', recipe.sql, this.bindings(recipe, vals)).then(async (rows) => {
        const { paths, refused } = rowsToPaths(rows)
        if (refused.length)
          this.logOnce(`refused:${key}`, () =>
            log.warn(`recipe '${recipe.name}' selected rows that are not valid archive paths; left out`, {
              count: refused.length,
              first: refused[0],
            }),
          )
        const links = new Map<string, string>()
        for (const [name, rel] of linkNames(await this.existing(paths))) links.set(name, up + rel)
        return { links }
      })
      p.catch(() => cache.delete(key))
      cache.set(key, p)
    }
    return p
  }

  /** The archive path of the file with this name (with or without its compression suffix), or null. */
  private byName(name: string): Promise<string | null> {
    let p = this.names.get(name)
    if (!p) {
      const cache = this.names
      p = this.lookupName(name)
      p.catch(() => cache.delete(name))
      cache.set(name, p)
    }
    return p
  }

  private async lookupName(name: string): Promise<string | null> {
    this.fileSql ??= this.deps.fileRows()
    // The file table's FILENAME has no suffix; a name given with one (x.fits.fz) is also tried without.
    const dot = name.lastIndexOf('.')
    const bare = dot > 0 ? name.slice(0, dot) : name
    // A single-use CTE is flattened by SQLite, so the FILENAME index serves the IN (...).
    const sql = `WITH f(p, n, c) AS (${this.fileSql}) SELECT p, n, c FROM f WHERE n IN (:name, :bare) ORDER BY p LIMIT 100`
    let rows: unknown[][]
    try {
      rows = await this.select(sql, { name, bare })
    } catch (err) {
      this.stats.failures++
      log.error('by-name lookup failed: EIO', { name, error: (err as Error).message })
      throw EIO()
    }
    const matching = rows.filter(([, n, c]) => String(n) === name || String(n) + (c == null ? '' : String(c)) === name)
    const { paths } = rowsToPaths(matching)
    const found = (await this.existing(paths)).sort()
    if (found.length > 1)
      log.warn('by-name: several files have this name; linking the first by path', {
        name,
        chosen: found[0],
        others: found.slice(1, 6),
        count: found.length,
      })
    return found[0] ?? null
  }
}
