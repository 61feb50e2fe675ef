// ESLint (flat config; the tool looks for it here): @eslint/js and typescript-eslint recommended,
// without type information so that it stays fast. Only the TypeScript sources are linted (not the
// compiled dist/, node_modules/ or the native build in fs/build/). `npm test` runs it before tap.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'fs/build/', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // desfs matches control characters on purpose: it refuses them in archive paths, escapes them
      // in examples, TSV output (\x1e) and byte counts, and strips terminal escapes in tests.
      'no-control-regex': 'off',
      // Tests match the CLI's aligned columns literally (`tree        12 files`): the spaces are
      // the output as a user sees it, which a {8} would hide.
      'no-regex-spaces': 'off',
      // A leading underscore marks what is unused on purpose (a route handler's `_req`, a drained
      // `for await (const _ of req)`); rest siblings drop a property from a copy.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
    },
  },
)
