// Streaming zstd decompression. Node.js has it built in from 22.15 (zlib.createZstdDecompress); on
// Node 20 we run Debian's `zstd -d` as a filter. Both decode ~1 GB/s natively, off the JS thread; a
// pure-JS decoder measured 80-100 MB/s here and would hold the event loop for minutes on the 8 GB DB.
import { spawn } from 'node:child_process'
import type { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import zlib from 'node:zlib'
import { UserError } from '../daemon/errors.js'
import { onPath } from '../daemon/paths.js'

export interface ZstdDecoder {
  /** 'node:zlib' or 'zstd CLI'. */
  kind: string
  input: Writable
  output: Readable
  /** Resolves once the whole input decoded cleanly; rejects with the decoder's complaint. */
  done: Promise<void>
  destroy(): void
}

export function zstdDecoder(): ZstdDecoder {
  const make = (zlib as unknown as { createZstdDecompress?: () => zlib.Gunzip }).createZstdDecompress
  if (typeof make === 'function') {
    const s = make()
    // Its complaints ("Restored data doesn't match checksum") read like the CLI's: "zstd: ...".
    s.once('error', (err) => {
      err.message = `zstd: ${err.message}`
    })
    return { kind: 'node:zlib', input: s, output: s, done: finished(s), destroy: () => s.destroy() }
  }
  if (!onPath('zstd'))
    throw new UserError('decompressing a .zst download needs the zstd program (apt-get install zstd) or Node.js 22.15 or later')
  const child = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 2000) stderr += d.toString()
  })
  // A dead decoder makes writes to its stdin fail with EPIPE: the exit code tells the real story.
  child.stdin.on('error', () => undefined)
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`cannot run zstd: ${err.message}`)))
    child.on('close', (code, signal) => {
      if (code === 0) resolve()
      else reject(new Error(`zstd: ${stderr.trim().split('\n').pop() || `exit ${code ?? signal}`}`))
    })
  })
  return { kind: 'zstd CLI', input: child.stdin, output: child.stdout, done, destroy: () => child.kill('SIGKILL') }
}
