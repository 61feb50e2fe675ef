// Where `desfs token` keeps what it writes, and how: the access token goes to the bearer-token file
// the daemon reads (by write-temp-then-rename, as htgettoken does, so a reader never sees half a
// token); the refresh token and what is needed to use it go to desfs-oidc.json beside
// des-archive-access's own files. Files are 0600 in a 0700 directory.
import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { UserError } from '../errors.js'
import { writeFileAtomic } from '../safe-write.js'
import { desArchiveAccessDir } from '../paths.js'
import { tokenDirProblem } from './token.js'

export const OIDC_STATE_NAME = 'desfs-oidc.json'

/** What `desfs token login` leaves behind for refreshing. */
export interface OidcState {
  issuer: string
  clientId: string
  scope: string
  audience?: string | undefined
  refreshToken: string
  /** The bearer-token file this login keeps fresh. */
  accessTokenFile: string
  /** When the current access token was issued and expires, ms since the epoch. */
  accessIssuedAt: number
  accessExpiresAt: number
  updatedAt: string
}

export function oidcStatePath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DES_ARCHIVE_ACCESS_DIR || desArchiveAccessDir(), OIDC_STATE_NAME)
}

/**
 * The bearer-token file `desfs token login` writes: the configured --token-file, else
 * $BEARER_TOKEN_FILE, else des-archive-access's $DES_ARCHIVE_ACCESS_DIR/bearer_token.
 */
export function loginTokenFile(tokenFileSetting: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return tokenFileSetting || env.BEARER_TOKEN_FILE || join(env.DES_ARCHIVE_ACCESS_DIR || desArchiveAccessDir(), 'bearer_token')
}

/** Creates a directory for secrets (0700), or refuses an existing one others can get into. */
export async function ensureSecretDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new UserError(`cannot create token directory ${dir} (${(err as NodeJS.ErrnoException).code}): choose another location`)
  }
  const problem = await tokenDirProblem(dir)
  if (problem) throw new UserError(problem)
}

/** Writes a secret file atomically: a new 0600 temp file (random name), fsync, rename over the target. */
export async function writeSecretFile(path: string, content: string): Promise<void> {
  await ensureSecretDir(dirname(path))
  await writeFileAtomic(path, content, { mode: 0o600, fsync: true })
}

export async function readOidcState(path: string): Promise<OidcState | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new UserError(`cannot read ${path} (${(err as NodeJS.ErrnoException).code}): check its permissions`)
  }
  const st = await stat(path)
  if ((st.mode & 0o077) !== 0)
    throw new UserError(
      `${path} holds a refresh token and is readable by group/others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${path}`,
    )
  try {
    const s = JSON.parse(text) as OidcState
    if (!s.issuer || !s.clientId || !s.refreshToken || !s.accessTokenFile) throw new Error('fields missing')
    return s
  } catch {
    throw new UserError(`${path} is damaged: run \`desfs token login\` again`)
  }
}

export async function writeOidcState(path: string, state: OidcState): Promise<void> {
  await writeSecretFile(path, JSON.stringify(state, null, 1) + '\n')
}
