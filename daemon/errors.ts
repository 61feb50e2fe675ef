// Errors a person can act on. A UserError carries one line that names the problem and the fix;
// the CLI and the daemon print exactly that line (no stack trace) and exit with its code.

export const EXIT = {
  OK: 0,
  FAILURE: 1, // the command ran but something it did failed (a file in a sync, a query)
  USAGE: 2, // bad flags or arguments
  CONFIG: 3, // bad configuration, missing DB, bad mountpoint, refused permissions
  UNAVAILABLE: 4, // no daemon, archive unreachable, token rejected
  INTERRUPTED: 130,
} as const

export class UserError extends Error {
  readonly exitCode: number
  constructor(message: string, exitCode: number = EXIT.CONFIG) {
    super(message)
    this.name = 'UserError'
    this.exitCode = exitCode
  }
}

/** One line for any error: a UserError's own message, otherwise the error's message without stack. */
export function oneLine(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err)
  return String(err).split('\n')[0] ?? ''
}
