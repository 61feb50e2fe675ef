// desfs demo: a self-contained tour. Generates a small DES-like archive and metadata DB, serves it
// on 127.0.0.1 like a dCache door (bearer token, redirects to a pool port), mounts it, prints what to
// try, and removes everything again on Ctrl-C.
import { mkdtempSync, rmSync, mkdirSync, existsSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Command } from './command.js'
import { desfsCommand, shellWord } from './how-to-run.js'
import { daemonConfig, resolveSettings } from '../daemon/config.js'
import { EXIT, UserError } from '../daemon/errors.js'
import { log } from '../daemon/log.js'
import { parseSize } from '../daemon/units.js'

export const demoCommand: Command = {
  name: 'demo',
  summary:
    'Generate a small DES-like archive, serve it on 127.0.0.1 like the real dCache door, and mount it, to try desfs without an account.',
  usage: 'desfs demo [DIR] [--large SIZE] [--keep]',
  options: {
    large: { type: 'string', value: 'SIZE', help: 'also generate one large uncompressed file of this size (e.g. 256M)' },
    keep: { type: 'boolean', help: 'keep DIR after Ctrl-C (by default a generated DIR is removed)' },
    verbose: { type: 'boolean', short: 'v', help: 'show the daemon log' },
  },
  async run({ flags, positionals }) {
    const given = positionals[0]
    const dir = given ? resolve(given) : mkdtempSync(join(tmpdir(), 'desfs-demo-'))
    if (given) {
      if (existsSync(dir) && readdirSync(dir).length && !existsSync(join(dir, 'manifest.json')) && !existsSync(join(dir, 'archive'))) {
        throw new UserError(`${dir} is not empty and not a desfs demo directory: choose an empty or new directory`, EXIT.USAGE)
      }
      mkdirSync(dir, { recursive: true })
    }
    const large = typeof flags.large === 'string' ? parseSize(flags.large) : 0
    process.stdout.write(`desfs demo: generating a DES-like archive in ${dir} ...\n`)
    const gen = join(dir, 'generated')
    // Loaded here, not at the top: every other desfs command starts faster without them.
    const { runDaemon } = await import('../daemon/main.js')
    const { generateArchive } = await import('./demo/generate.js')
    const { ArchiveServer } = await import('./demo/server.js')
    const { makeToken, writeTokenFile } = await import('./demo/token.js')
    const manifest = generateArchive({ out: gen, largeFileBytes: large })
    const token = makeToken({}, 7 * 86400)
    const tokenFile = join(dir, 'des_archive_access', 'bearer_token')
    writeTokenFile(tokenFile, token)
    const server = await new ArchiveServer({ root: join(gen, 'archive'), tokens: [token], redirect: true }).start()
    const mnt = join(dir, 'DESDATA')
    mkdirSync(mnt, { recursive: true })
    // Until mounted, only errors: the demo DB's deliberately broken rows would otherwise open the
    // first screen with a long warning; they get one calm line below instead.
    if (!flags.verbose) log.setLevel('error')
    const config = daemonConfig(
      resolveSettings({
        mountpoint: mnt,
        db: join(gen, 'metadata.db'),
        archive: server.archiveUrl,
        'cache-dir': join(dir, 'cache'),
        'state-dir': join(dir, 'state'),
        'token-file': tokenFile,
        'cache-size': '1G',
        'log-level': flags.verbose ? 'info' : 'error',
      }),
    )
    let daemon
    try {
      daemon = await runDaemon(config, { notify: false })
    } catch (err) {
      await server.stop()
      if (!given && !flags.keep) rmSync(dir, { recursive: true, force: true })
      throw err
    }
    if (!flags.verbose) log.setLevel('warn')
    // runDaemon's own signal handlers unmount and exit; clean the demo files up on the way out.
    process.on('exit', () => {
      if (!given && !flags.keep) rmSync(dir, { recursive: true, force: true })
    })
    const immask = manifest.files.find((f) => f.kind === 'red_immask')!.rel
    const coadd = manifest.files.find((f) => f.kind === 'coadd')!.rel
    const cat = manifest.files.find((f) => f.kind === 'coadd_cat')!.rel
    const desfs = desfsCommand({ script: fileURLToPath(new URL('./desfs.js', import.meta.url)), env: process.env, cwd: process.cwd() })
    const refused = Object.values(daemon.catalog.index.result.skipped).reduce((n, r) => n + r.count, 0)
    process.stdout.write(
      [
        '',
        `Mounted ${manifest.files.length} files at ${mnt}`,
        `(archive served at ${server.archiveUrl} with a demo bearer token; metadata DB ${join(gen, 'metadata.db')})`,
        ...(refused
          ? [
              `The demo DB also has ${refused} deliberately malformed rows; desfs leaves them out, as it would in a real DB (the status command below lists them).`,
            ]
          : []),
        '',
        'Try, in another terminal:',
        `  ls -l ${join(mnt, dirname(immask))}`,
        `  fitsverify ${join(mnt, immask)}`,
        `  funpack -S ${join(mnt, coadd)} | head -c 2880 | fold -w 80 | head`,
        `  python3 -c "import fitsio; print(fitsio.read('${join(mnt, immask)}', ext='SCI').shape)"`,
        `  python3 -c "from astropy.io import fits; print(fits.open('${join(mnt, cat)}')[1].data[:3])"`,
        `  getfattr -d ${join(mnt, immask)}`,
        `  ${desfs} status --state-dir ${shellWord(join(dir, 'state'))}`,
        ...(manifest.largeFile
          ? [`  time cat ${join(mnt, manifest.largeFile)} > /dev/null   # twice: the second read comes from the cache`]
          : []),
        '',
        'Press Ctrl-C to stop (unmounts, stops the server' + (!given && !flags.keep ? ', removes the demo files).' : ').'),
        '',
      ].join('\n'),
    )
    void daemon
    await new Promise(() => undefined)
    return EXIT.OK
  },
}
