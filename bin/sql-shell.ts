// The interactive `desfs sql` shell (node:readline): statements may span lines and run when a line
// ends with `;` (optionally `; > FILE`); Ctrl-C cancels the running query, or clears a half-typed
// statement, and never leaves the shell; `:q`, `exit` or Ctrl-D leave. History is shared with
// des-archive-access: `$DES_ARCHIVE_ACCESS_DIR/history`, in the prompt_toolkit FileHistory format it
// uses, or the state dir when that directory does not exist. Also reads a script from a pipe.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { desArchiveAccessDir } from '../daemon/paths.js'
import { ensurePrivateDir } from '../daemon/state-dir.js'
import { appendNoFollow } from '../daemon/safe-write.js'
import { EXIT, oneLine } from '../daemon/errors.js'
import { isBlank, parseScript } from '../daemon/sql/sql-text.js'
import { runOne, type SqlSession } from './sql-run.js'

const QUIT = new Set([':q', ':quit', ':exit', 'exit', 'quit', '\\q'])
const HELP = new Set([':h', ':help', ':?', 'help'])

const HELP_TEXT = `Statements end with ';' and may span lines. Add '> FILE' after the ';' to write FILE
(.fits, .csv, .tsv, .json; add .gz to compress), e.g.  SELECT * FROM Y6A2_COADD LIMIT 10; > coadd.fits
  describe_table NAME     columns and types of a table
  find_tables PATTERN     tables whose name contains PATTERN (or matches it, with % and _)
  Ctrl-C                  cancel the running query, or clear the statement being typed
  :q, exit, Ctrl-D        leave
`

/** Where the shell keeps its history: des-archive-access's file when its directory exists. */
function historyFile(stateDir: string): string {
  const daa = desArchiveAccessDir()
  if (existsSync(daa)) return join(daa, 'history')
  ensurePrivateDir(stateDir, 'state dir')
  return join(stateDir, 'history')
}

/** prompt_toolkit FileHistory: entries separated by "# timestamp" lines, each line prefixed '+'. */
async function loadHistory(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch(() => '')
  const entries: string[] = []
  let cur: string[] | undefined
  for (const l of text.split('\n')) {
    if (l.startsWith('+')) (cur ??= []).push(l.slice(1))
    else if (cur) {
      entries.push(cur.join(' '))
      cur = undefined
    }
  }
  if (cur) entries.push(cur.join(' '))
  return entries.reverse().slice(0, 1000) // readline wants the newest first
}

function historyEntry(entry: string): string {
  const ts = new Date().toISOString().replace('T', ' ').replace('Z', '000')
  return `\n# ${ts}\n${entry
    .split('\n')
    .map((l) => '+' + l)
    .join('\n')}\n`
}

export async function runShell(session: SqlSession, stateDir: string): Promise<number> {
  const interactive = !!process.stdin.isTTY
  const histPath = interactive ? historyFile(stateDir) : undefined
  const rl = createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    history: histPath ? await loadHistory(histPath) : [],
    historySize: 1000,
    removeHistoryDuplicates: true,
  })
  const prompt = (cont: boolean) => {
    if (!interactive) return
    rl.setPrompt(cont ? '... ' : '> ')
    rl.prompt()
  }
  if (interactive)
    process.stdout.write(`desfs sql on ${session.target.description}; end statements with ';'. Type help for help, :q to leave.\n`)

  let buffer = ''
  let running: AbortController | undefined
  let failures = 0
  let chain = Promise.resolve()

  const runText = async (text: string) => {
    const parsed = parseScript(text)
    const statements = isBlank(parsed.rest) ? parsed.statements : [...parsed.statements, { sql: parsed.rest }]
    for (const st of statements) {
      running = new AbortController()
      try {
        await runOne(session, st, running.signal)
      } catch (err) {
        failures++
        process.stderr.write(`desfs: ${oneLine(err)}\n`)
      } finally {
        running = undefined
      }
    }
  }

  let quit = false
  const handle = async (line: string) => {
    if (quit) return // lines that were already read when :q came
    const word = line.trim()
    if (!buffer) {
      if (QUIT.has(word)) {
        quit = true
        return rl.close()
      }
      if (!word) return prompt(false)
      if (HELP.has(word)) {
        process.stdout.write(HELP_TEXT)
        return prompt(false)
      }
      // The conveniences need no ';'.
      if (/^(describe_table|find_tables)\b/i.test(word) && !word.includes(';')) {
        if (histPath) await appendNoFollow(histPath, historyEntry(word)).catch(() => undefined)
        await runText(word + ';')
        return prompt(false)
      }
    }
    buffer += line + '\n'
    const parsed = parseScript(buffer)
    if (parsed.statements.length > 0 && isBlank(parsed.rest)) {
      const text = buffer
      buffer = ''
      if (histPath) await appendNoFollow(histPath, historyEntry(text.trim())).catch(() => undefined)
      await runText(text)
    }
    prompt(!!buffer.trim())
  }

  const onInterrupt = () => {
    if (running) return running.abort()
    // In line order: a line typed just before Ctrl-C is in the buffer by then, and gets cleared.
    chain = chain.then(() => {
      if (interactive) process.stdout.write(buffer ? '^C\n' : '^C (to leave: :q, exit or Ctrl-D)\n')
      buffer = ''
      prompt(false)
    })
  }
  rl.on('SIGINT', onInterrupt) // a terminal in raw mode: readline sees Ctrl-C
  process.on('SIGINT', onInterrupt) // a pipe: the signal itself
  rl.on('line', (line) => {
    chain = chain.then(() => handle(line))
  })
  prompt(false)
  await new Promise<void>((resolve) => rl.once('close', () => resolve()))
  await chain
  // A statement left without its ';' at the end of piped input still runs.
  if (!quit && !isBlank(buffer)) await runText(buffer)
  process.off('SIGINT', onInterrupt)
  if (interactive) process.stdout.write('\n')
  return failures && !interactive ? EXIT.FAILURE : EXIT.OK
}
