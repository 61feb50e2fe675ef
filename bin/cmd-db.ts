// desfs db download | info: get the metadata DB (resumable, verified before it replaces anything)
// and say what is in it.
import { resolve } from 'node:path'
import { settingOptions, settingFlags, type Command } from './command.js'
import { ProgressBar } from './progress.js'
import { resolveSettings } from '../daemon/config.js'
import { countRows, checkMetadataDb } from './db-info.js'
import { downloadMetadataDb } from './db-download.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { formatSize } from '../daemon/units.js'

export const dbCommand: Command = {
  name: 'db',
  summary: 'Download the metadata DB (db download) or show what is in it (db info).',
  usage: 'desfs db download [--url URL] [--force] [--db PATH] | desfs db info [--db PATH] [--json]',
  options: {
    force: { type: 'boolean', help: 'download: even when the local DB is as new as the remote one' },
    json: { type: 'boolean', help: 'info: print JSON' },
    ...settingOptions(['db', 'db_url']),
  },
  details: [
    'download  fetches the DB as des-archive-access-download-metadata does (zstd-compressed), resuming',
    '          an interrupted download where it stopped; the new DB replaces the old one only once it',
    '          opens as SQLite and has the file table. Without --force it is skipped when up to date.',
    'info      tables, row counts, file date and size.',
  ].join('\n'),
  async run({ flags, positionals }) {
    const sub = positionals[0]
    if (positionals.length !== 1) throw new UserError('usage: desfs db download | desfs db info', EXIT.USAGE)
    const settings = resolveSettings(settingFlags(flags))
    const dest = resolve(settings.get('db')!.value!)
    if (sub === 'download') {
      const url = settings.get('db_url')!.value!
      const bar = new ProgressBar('downloading DB')
      const say = (l: string) => {
        bar.done()
        process.stderr.write(`desfs: ${l}\n`)
      }
      const MiB = 1024 * 1024
      const r = await downloadMetadataDb({
        url,
        dest,
        force: !!flags.force,
        say,
        onProgress: (done, total) => bar.update(Math.floor(done / MiB), total ? Math.ceil(total / MiB) : 0, ' MiB'),
      }).finally(() => bar.done())
      if (r.outcome === 'up-to-date') process.stdout.write(`desfs: ${dest} is up to date with ${url} (use --force to download it again)\n`)
      else
        process.stdout.write(
          `desfs: downloaded ${url} to ${dest} (${formatSize(r.info!.bytes)}, ${r.info!.tables.length} tables${r.resumedFrom ? `, resumed at ${formatSize(r.resumedFrom)}` : ''})\n`,
        )
      return EXIT.OK
    }
    if (sub === 'info') {
      const info = countRows(checkMetadataDb(dest))
      if (flags.json) {
        process.stdout.write(JSON.stringify(info, null, 2) + '\n')
        return EXIT.OK
      }
      const width = Math.max(...info.tables.map((t) => t.name.length)) + 2
      const lines = [
        `file      ${info.path}`,
        `size      ${formatSize(info.bytes)} (${info.bytes} bytes)`,
        `modified  ${info.modified}`,
        `tree      ${info.fileTable}`,
        'tables:',
      ]
      for (const t of info.tables) lines.push(`  ${t.name.padEnd(width)}${String(t.rows).padStart(12)} rows`)
      process.stdout.write(lines.join('\n') + '\n')
      return EXIT.OK
    }
    throw new UserError(`desfs db: unknown subcommand '${sub}' (download, info)`, EXIT.USAGE)
  },
}
