// Read side of the tree index: path lookup and directory listing as index seeks on (parent, name),
// with a bounded in-memory cache of directory ids so a stat storm walks each path once.
import Database from 'better-sqlite3'
import { LRUCache } from 'lru-cache'
import { INDEX_FORMAT, ROOT_ID, type BuildResult } from './tree-build.js'

export interface Entry {
  name: string
  /** Directory id, or null for a file. */
  dir: number | null
}

export class TreeIndex {
  readonly file: string
  readonly identity: string
  readonly result: BuildResult
  private db: Database.Database
  private child: Database.Statement
  private children: Database.Statement
  private dirIds = new LRUCache<string, number>({ max: 200_000 })

  constructor(file: string) {
    this.file = file
    this.db = new Database(file, { readonly: true, fileMustExist: true })
    const meta = new Map((this.db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[]).map((r) => [r.key, r.value]))
    if (meta.get('format') !== String(INDEX_FORMAT)) throw new Error(`tree index ${file} has format ${meta.get('format')}, expected ${INDEX_FORMAT}`)
    this.identity = meta.get('identity') ?? ''
    this.result = JSON.parse(meta.get('result') ?? '{}') as BuildResult
    this.child = this.db.prepare('SELECT dir FROM node WHERE parent = ? AND name = ?').raw(true)
    this.children = this.db.prepare('SELECT name, dir FROM node WHERE parent = ?').raw(true)
  }

  /** Id of the directory at `segs` (archive-relative segments), or undefined if it is not a directory. */
  dirId(segs: string[]): number | undefined {
    if (segs.length === 0) return ROOT_ID
    const key = segs.join('/')
    const cached = this.dirIds.get(key)
    if (cached !== undefined) return cached
    const parent = this.dirId(segs.slice(0, -1))
    if (parent === undefined) return undefined
    const row = this.child.get(parent, segs[segs.length - 1]) as [number | null] | undefined
    if (!row || row[0] === null) return undefined
    this.dirIds.set(key, row[0])
    return row[0]
  }

  /** The entry at `segs`: { dir: id } for a directory, { dir: null } for a file, undefined if absent. */
  lookup(segs: string[]): Entry | undefined {
    if (segs.length === 0) return { name: '', dir: ROOT_ID }
    const parent = this.dirId(segs.slice(0, -1))
    if (parent === undefined) return undefined
    const name = segs[segs.length - 1]!
    const row = this.child.get(parent, name) as [number | null] | undefined
    return row ? { name, dir: row[0] } : undefined
  }

  /** Children of a directory in name order. */
  list(dirId: number): Entry[] {
    return (this.children.all(dirId) as [string, number | null][]).map(([name, dir]) => ({ name, dir }))
  }

  close(): void {
    this.db.close()
  }
}
