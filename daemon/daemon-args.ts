// How `desfs mount` hands its settings to the detached daemon: as JSON on the daemon's stdin, so that
// nothing given on the CLI's command line is repeated in the daemon's (anyone can read
// /proc/PID/cmdline). Kept apart from main.ts so the CLI need not load the daemon to use it.

/** The daemon's only argument when its flags come on stdin. */
export const FLAGS_ON_STDIN = '--flags-on-stdin'

/**
 * Reads the flags object the CLI wrote to the stream: one line of JSON. The stream stays open after
 * it (the CLI keeps the pipe until the mount is up, and the daemon watches it to see the CLI go).
 */
export function readFlags(input: NodeJS.ReadableStream): Promise<Record<string, string | undefined>> {
  return new Promise((resolve, reject) => {
    let text = ''
    const done = (line: string) => {
      input.off('data', onData)
      input.off('end', onEnd)
      input.pause()
      try {
        const flags = JSON.parse(line || '{}') as unknown
        if (typeof flags !== 'object' || flags === null || Array.isArray(flags)) throw new Error('not an object')
        resolve(flags as Record<string, string | undefined>)
      } catch {
        reject(new Error('the daemon expects a JSON object of settings on one line of stdin'))
      }
    }
    const onData = (chunk: Buffer | string) => {
      text += chunk.toString()
      const nl = text.indexOf('\n')
      if (nl >= 0) done(text.slice(0, nl))
    }
    const onEnd = () => done(text)
    input.on('data', onData)
    input.on('end', onEnd)
  })
}
