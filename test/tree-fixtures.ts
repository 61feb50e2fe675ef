// Fixtures for the tree tests: a synthetic metadata DB whose sizes are pre-seeded in a state dir (so a
// mount of it never needs the archive), and reading back what a mount shows.
import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import { run, tmp } from './helpers.js'
import { generateSynthetic, type SyntheticOptions, type SyntheticResult } from './archive/synthetic.js'

export interface SeededTree {
  dir: string
  db: string
  stateDir: string
  gen: SyntheticResult
  /** Every valid file with its size, as the mount must show them. */
  sizes: Map<string, number>
}

/** A synthetic DB with `rows` files (plus hostile rows) and a state dir that already knows their sizes. */
export function seededTree(t: Test, rows: number, opts: Partial<SyntheticOptions> = {}): SeededTree {
  const dir = tmp(t, 'desfs-tree-')
  const db = join(dir, 'metadata.db')
  const stateDir = join(dir, 'state')
  mkdirSync(stateDir, { mode: 0o700 })
  const gen = generateSynthetic({ db, rows, hostile: true, bigDir: 1000, facts: join(stateDir, 'facts.sqlite'), ...opts })
  return { dir, db, stateDir, gen, sizes: factSizes(join(stateDir, 'facts.sqlite')) }
}

/** Path -> size from a facts DB. */
export function factSizes(file: string): Map<string, number> {
  const db = new Database(file, { readonly: true })
  try {
    return new Map((db.prepare('SELECT path, size FROM file_facts').raw(true).all() as [string, number][]).map(([p, s]) => [p, s]))
  } finally {
    db.close()
  }
}

export interface MountedTree {
  files: Map<string, number>
  dirs: Set<string>
}

/** What `find MNT` shows, from a child process: files with sizes (a getattr each) and directories. */
export async function findAll(mnt: string, timeoutMs = 120_000): Promise<MountedTree & { code: number | null; stderr: string }> {
  const r = await run('find', [mnt, '-mindepth', '1', '-printf', '%y %s %P\\0'], { timeoutMs })
  const files = new Map<string, number>()
  const dirs = new Set<string>()
  for (const rec of r.stdout.split('\0')) {
    if (!rec) continue
    const m = /^(\w) (\d+) ([\s\S]*)$/.exec(rec)
    if (!m) continue
    if (m[1] === 'd') dirs.add(m[3]!)
    else files.set(m[3]!, Number(m[2]))
  }
  return { files, dirs, code: r.code, stderr: r.stderr }
}

/** Directories (every prefix) of a set of file paths. */
export function dirsOf(paths: Iterable<string>): Set<string> {
  const out = new Set<string>()
  for (const p of paths) {
    const segs = p.split('/')
    for (let i = 1; i < segs.length; i++) out.add(segs.slice(0, i).join('/'))
  }
  return out
}

/** Sorted differences between two key sets, for readable failures (at most a few of each). */
export function diffKeys(got: Iterable<string>, want: Iterable<string>): { missing: string[]; extra: string[] } {
  const g = new Set(got)
  const w = new Set(want)
  return { missing: [...w].filter((k) => !g.has(k)).slice(0, 5), extra: [...g].filter((k) => !w.has(k)).slice(0, 5) }
}
