// A reader that takes its time: reads a file through the mount 1 MiB at a time, last block first
// (so desfs's sequential read-ahead does not fetch it all at once), pausing between blocks. Token
// tests use it to keep one read going across several token lifetimes, however fast the machine.
import { PYTHON, run, type RunResult } from './helpers.js'

const SCRIPT = `
import hashlib, os, sys, time
bs = 1 << 20
with open(sys.argv[1], 'rb') as f:
    n = (os.fstat(f.fileno()).st_size + bs - 1) // bs
    parts = [b''] * n
    for i in reversed(range(n)):
        f.seek(i * bs)
        parts[i] = f.read(bs)
        time.sleep(float(sys.argv[2]))
print(hashlib.md5(b''.join(parts)).hexdigest())
`

/** Resolves with the md5 of the file's bytes in stdout. */
export function readSlowly(path: string, pauseSeconds: number): Promise<RunResult> {
  return run(PYTHON, ['-c', SCRIPT, path, String(pauseSeconds)], { timeoutMs: 180_000 })
}
