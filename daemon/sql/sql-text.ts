// SQL text, lexically: where statements end, what a statement starts with, and its words outside
// string literals and comments. Enough to split a script at its semicolons, find the
// des-archive-access/easyaccess redirection `...; > out.fits`, and let the policy look at keywords
// without being fooled by a literal such as '%load_extension%'. Not a parser: SQLite decides the rest.

/** Index just past the token that starts at i when it is a literal, quoted name or comment; else i. */
function skipQuotedOrComment(text: string, i: number): number {
  const c = text[i]
  if (c === "'" || c === '"' || c === '`') {
    // A doubled quote inside is an escaped quote; the scan simply continues past it.
    let j = i + 1
    for (;;) {
      const k = text.indexOf(c, j)
      if (k < 0) return text.length
      if (text[k + 1] === c) j = k + 2
      else return k + 1
    }
  }
  if (c === '[') {
    const k = text.indexOf(']', i + 1)
    return k < 0 ? text.length : k + 1
  }
  if (c === '-' && text[i + 1] === '-') {
    const k = text.indexOf('\n', i + 2)
    return k < 0 ? text.length : k
  }
  if (c === '/' && text[i + 1] === '*') {
    const k = text.indexOf('*/', i + 2)
    return k < 0 ? text.length : k + 2
  }
  return i
}

/** The text with literals, quoted names and comments replaced by spaces (same length). */
export function blankLiterals(sql: string): string {
  let out = ''
  let i = 0
  while (i < sql.length) {
    const j = skipQuotedOrComment(sql, i)
    if (j > i) {
      out += ' '.repeat(j - i)
      i = j
    } else {
      out += sql[i]
      i++
    }
  }
  return out
}

/** The first word of a statement, upper case ('SELECT', 'PRAGMA', ...), or '' when there is none. */
export function firstKeyword(sql: string): string {
  return /^\s*([A-Za-z_]+)/.exec(blankLiterals(sql))?.[1]?.toUpperCase() ?? ''
}

/** True when the text holds nothing but whitespace and comments. */
export function isBlank(sql: string): boolean {
  let i = 0
  while (i < sql.length) {
    if (/\s/.test(sql[i]!)) {
      i++
      continue
    }
    const isComment = (sql[i] === '-' && sql[i + 1] === '-') || (sql[i] === '/' && sql[i + 1] === '*')
    if (!isComment) return false
    i = skipQuotedOrComment(sql, i)
  }
  return true
}

export interface ScriptStatement {
  /** The statement without its terminating semicolon. */
  sql: string
  /** File named by `; > FILE` after the statement, if any ('' when the `>` has no file name). */
  output?: string
}

export interface ParsedScript {
  statements: ScriptStatement[]
  /** Text after the last semicolon that is not yet a complete statement ('' or blank when none). */
  rest: string
}

// The file name may be missing (`; >`): the statement then carries an empty output, which runOne
// refuses with a line saying so (rather than taking the lone '>' for a second statement).
const REDIRECT = /^[ \t]*>[ \t]*(\S*)[ \t]*(?=\r?\n|$)/

/**
 * Splits a script at top-level semicolons. After a semicolon, `> FILE` on the same line names the
 * file the statement's result goes to (des-archive-access and easyaccess habit).
 */
export function parseScript(text: string): ParsedScript {
  const statements: ScriptStatement[] = []
  let start = 0
  let i = 0
  while (i < text.length) {
    const j = skipQuotedOrComment(text, i)
    if (j > i) {
      i = j
      continue
    }
    if (text[i] === ';') {
      const sql = text.slice(start, i)
      i++
      const m = REDIRECT.exec(text.slice(i))
      const st: ScriptStatement = { sql }
      if (m) {
        st.output = m[1]! // possibly '': see REDIRECT
        i += m[0].length
      }
      if (!isBlank(sql)) statements.push(st)
      start = i
      continue
    }
    i++
  }
  return { statements, rest: text.slice(start) }
}
