// Read side of the tree index: path lookup and directory listing as index seeks on (parent, name),
// with a bounded in-memory cache of directory ids so a stat storm walks each path once. Paths are
// archive-relative strings ('OPS/finalcut/...', '' for the root), never split into arrays: a lookup
// cuts the last name off and finds the parent's id in the cache, which almost always has it.
import Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { INDEX_FORMAT, ROOT_ID, type BuildResult } from './tree-build.js'

export interface Entry {
  name: string
  /** Directory id, or null for a file. */
  dir: number | null
}

/** Directories whose ids are kept in memory: enough for every directory a busy day visits. */
const DIR_CACHE = 50_000

export class TreeIndex {
  readonly file: string
  readonly identity: string
  readonly result: BuildResult
  private db: Database.Database
  private child: Database.Statement
  private children: Database.Statement
  private dirIds = new LRUCache<string, number>({ max: DIR_CACHE })

  constructor(file: string) {
    this.file = file
    this.db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      // Enough for the B-tree's interior pages of a 10M-row index; leaves come from the OS page cache.
      this.db.pragma('cache_size = -8000')
      const meta = new Map(
        (this.db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[]).map((r) => [r.key, r.value]),
      )
      if (meta.get('format') !== String(INDEX_FORMAT))
        throw new Error(`tree index ${file} has format ${meta.get('format')}, expected ${INDEX_FORMAT}`)
      this.identity = meta.get('identity') ?? ''
      this.result = JSON.parse(meta.get('result') ?? '{}') as BuildResult
      this.child = this.db.prepare('SELECT dir FROM node WHERE parent = ? AND name = ?').pluck()
      this.children = this.db.prepare('SELECT name, dir FROM node WHERE parent = ?').raw(true)
    } catch (err) {
      this.db.close()
      throw err
    }
  }

  /** Id of the directory at `rel`, or undefined if it is not a directory. */
  dirId(rel: string): number | undefined {
    if (rel === '') return ROOT_ID
    const cached = this.dirIds.get(rel)
    if (cached !== undefined) return cached
    const slash = rel.lastIndexOf('/')
    const parent = this.dirId(slash < 0 ? '' : rel.slice(0, slash))
    if (parent === undefined) return undefined
    const id = this.child.get(parent, rel.slice(slash + 1)) as number | null | undefined
    if (id == null) return undefined
    this.dirIds.set(rel, id)
    return id
  }

  /** The entry at `rel`: { dir: id } for a directory, { dir: null } for a file, undefined if absent. */
  lookup(rel: string): Entry | undefined {
    if (rel === '') return { name: '', dir: ROOT_ID }
    const cached = this.dirIds.get(rel)
    const slash = rel.lastIndexOf('/')
    const name = rel.slice(slash + 1)
    if (cached !== undefined) return { name, dir: cached }
    const parent = this.dirId(slash < 0 ? '' : rel.slice(0, slash))
    if (parent === undefined) return undefined
    const dir = this.child.get(parent, name) as number | null | undefined
    if (dir === undefined) return undefined
    if (dir !== null) this.dirIds.set(rel, dir)
    return { name, dir }
  }

  /** Children of a directory in name order. */
  list(dirId: number): Entry[] {
    return (this.children.all(dirId) as [string, number | null][]).map(([name, dir]) => ({ name, dir }))
  }

  close(): void {
    this.db.close()
  }
}
