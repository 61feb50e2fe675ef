// What `desfs sql` agrees to run: one read-only statement that returns rows. The connection is
// already read-only (`readonly: true` + `query_only`), so this is about saying no clearly and early,
// and about what read-only does not cover: ATTACH (sqlite3_stmt_readonly is true for it, and it would
// open any file the daemon can read), PRAGMAs that change the connection, load_extension.
import type { Statement } from 'better-sqlite3'
import { blankLiterals, firstKeyword } from './sql-text.js'

const WRITES = new Set(['INSERT', 'UPDATE', 'DELETE', 'REPLACE', 'UPSERT', 'CREATE', 'DROP', 'ALTER', 'REINDEX', 'VACUUM', 'ANALYZE'])
const TRANSACTIONS = new Set(['BEGIN', 'COMMIT', 'END', 'ROLLBACK', 'SAVEPOINT', 'RELEASE'])

/** PRAGMAs whose argument only names what to describe. */
const DESCRIBING_PRAGMAS = new Set([
  'table_info',
  'table_xinfo',
  'table_list',
  'index_list',
  'index_info',
  'index_xinfo',
  'foreign_key_list',
  'foreign_key_check',
  'integrity_check',
  'quick_check',
])
/** PRAGMAs that are read-only when given no argument (with one, most of them change something). */
const READING_PRAGMAS = new Set([
  'compile_options',
  'database_list',
  'collation_list',
  'function_list',
  'module_list',
  'pragma_list',
  'page_count',
  'page_size',
  'max_page_count',
  'freelist_count',
  'encoding',
  'user_version',
  'application_id',
  'schema_version',
  'data_version',
  'journal_mode',
  'query_only',
  'cache_size',
  'mmap_size',
  'temp_store',
  'foreign_keys',
  'case_sensitive_like',
  'auto_vacuum',
  'busy_timeout',
  'synchronous',
  'locking_mode',
])

export const READ_ONLY_HINT =
  'desfs sql runs read-only statements that return rows: SELECT, WITH ... SELECT, VALUES, EXPLAIN, describing PRAGMAs'

function pragmaRefusal(sql: string): string | undefined {
  const m = /^\s*PRAGMA\s+(?:(\w+)\s*\.\s*)?(\w+)\s*(=|\()?/i.exec(blankLiterals(sql))
  if (!m) return `refused: cannot read this PRAGMA; ${READ_ONLY_HINT}`
  const name = m[2]!.toLowerCase()
  const hasArgument = !!m[3]
  if (DESCRIBING_PRAGMAS.has(name)) return undefined
  if (READING_PRAGMAS.has(name) && !hasArgument) return undefined
  if (READING_PRAGMAS.has(name)) return `refused: PRAGMA ${name} with a value changes the connection; ask for its value with PRAGMA ${name}`
  return `refused: PRAGMA ${name} is not one of the read-only PRAGMAs desfs sql allows (${[...DESCRIBING_PRAGMAS].join(', ')}, and the plain value of ${[...READING_PRAGMAS].slice(0, 8).join(', ')}, ...)`
}

/** Refusals decided from the text alone, before SQLite sees it. */
export function textRefusal(sql: string): string | undefined {
  const words = blankLiterals(sql)
  if (/\bload_extension\b/i.test(words)) return 'refused: load_extension is not allowed in desfs sql'
  const kw = firstKeyword(sql)
  if (kw === 'ATTACH' || kw === 'DETACH') return `refused: ${kw} is not allowed; desfs sql reads only the metadata DB`
  if (kw === 'PRAGMA') return pragmaRefusal(sql)
  return undefined
}

/** Refusals decided from the prepared statement (what SQLite says it does), with the reason in words. */
export function statementRefusal(sql: string, stmt: Statement): string | undefined {
  const kw = firstKeyword(sql)
  if (!stmt.readonly || WRITES.has(kw))
    return `refused: ${kw || 'this statement'} would change the database, which desfs only reads; ${READ_ONLY_HINT}`
  if (TRANSACTIONS.has(kw)) return `refused: ${kw} is not needed; every query runs on its own read-only snapshot`
  if (!stmt.reader) return `refused: ${kw || 'this statement'} returns no rows; ${READ_ONLY_HINT}`
  return undefined
}

/** The message for better-sqlite3's refusal of a string with more than one statement. */
export const MULTIPLE_STATEMENTS =
  'refused: more than one statement; send one statement at a time (desfs sql -l FILE runs a script statement by statement)'
