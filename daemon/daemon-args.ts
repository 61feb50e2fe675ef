// How `desfs mount` hands its settings to the detached daemon: as JSON on the daemon's stdin, so that
// nothing given on the CLI's command line is repeated in the daemon's (anyone can read
// /proc/PID/cmdline). Kept apart from main.ts so the CLI need not load the daemon to use it.

/** The daemon's only argument when its flags come on stdin. */
export const FLAGS_ON_STDIN = '--flags-on-stdin'

/** Reads the flags object the CLI wrote to the stream (all of it, then EOF). */
export async function readFlags(input: NodeJS.ReadableStream): Promise<Record<string, string | undefined>> {
  let text = ''
  for await (const chunk of input) text += chunk.toString()
  const flags = JSON.parse(text || '{}') as unknown
  if (typeof flags !== 'object' || flags === null || Array.isArray(flags)) throw new Error('the daemon expects a JSON object of settings on stdin')
  return flags as Record<string, string | undefined>
}
