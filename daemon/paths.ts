// Where things live by default. des-archive-access's own locations are kept (its DB and token dir
// under ~/.des_archive_access); desfs's own state and cache follow the XDG base-directory spec.
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

export function home(): string {
  return process.env.HOME || homedir()
}

/** des-archive-access's directory: tokens, history. */
export function desArchiveAccessDir(): string {
  return process.env.DES_ARCHIVE_ACCESS_DIR || join(home(), '.des_archive_access')
}

/** des-archive-access always defaults the DB under ~ (not under DES_ARCHIVE_ACCESS_DIR); so do we. */
export function defaultMetadataDb(): string {
  return join(home(), '.des_archive_access', 'metadata.db')
}

export function xdgStateHome(): string {
  return process.env.XDG_STATE_HOME || join(home(), '.local', 'state')
}

export function xdgCacheHome(): string {
  return process.env.XDG_CACHE_HOME || join(home(), '.cache')
}

export function xdgConfigHome(): string {
  return process.env.XDG_CONFIG_HOME || join(home(), '.config')
}

export const SOCKET_NAME = 'desfs.sock'
export const LOG_NAME = 'desfs.log'

/** True when a program of that name is on PATH. */
export function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, name)))
}
