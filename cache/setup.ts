// Builds the daemon's read path from its configuration: the sources in their configured order, the
// bounded block store, and the fetcher over both. The read policies are composed here, each a Source
// wrapper with one job: per source, counting inside the stall guard inside the tries; failover over
// the sources so wrapped.
import { statfs } from 'node:fs/promises'
import type { StoreOptions } from './store-options.js'
import { BlockStore } from './block-store.js'
import { Fetcher } from './fetcher.js'
import { ArchiveSource } from './sources/archive.js'
import { HttpClient } from './sources/http-client.js'
import { MirrorSource } from './sources/mirror.js'
import { S3Source } from './sources/s3.js'
import { S3Signer } from './sources/s3-signer.js'
import { SiteSource, SiteToken } from './sources/site.js'
import { SourceSet } from './sources/source-set.js'
import { FailoverSource } from './sources/failover.js'
import { withRetry } from './sources/with-retry.js'
import { stallGuard } from './sources/stall-guard.js'
import { counted } from './sources/counted.js'
import type { Source } from './sources/source.js'
import type { RetryPolicy } from './retry.js'
import { fetchCounters } from './metrics.js'
import { systemClock, type Clock } from './clock.js'
import { log } from '../daemon/log.js'
import { parseSize } from '../daemon/units.js'

/**
 * The settings the read path is built from, as plain values (the daemon's configuration has them
 * under these names, so it is passed as it is): which sources in which order, where they are, the
 * network deadlines, and the cache's place and bounds.
 */
export interface ReadPathSettings {
  sources: readonly ('archive' | 's3' | 'mirror' | 'site')[]
  archive: string
  siteCache: string | undefined
  siteTokenFile: string | undefined
  mirrorDir: string | undefined
  s3Url: string | undefined
  s3Endpoint: string | undefined
  s3Region: string
  caFile: string | undefined
  connectTimeoutMs: number
  /** Longest wait for headers, and the window of the minimum body rate. */
  stallTimeoutMs: number
  minRate: number
  /** The mount's read deadline (the fetcher fails a reader just before it). */
  readTimeoutMs: number
  cacheDir: string
  /** Undefined: sized from the cache disk. */
  cacheSize: number | undefined
  pinSize: number | undefined
  cacheMinFree: number | undefined
}

/** The bearer token as the archive source uses it (the daemon's TokenProvider is one). */
export interface ArchiveToken {
  /** The Authorization header value now, if there is a token. */
  authorization(): string | undefined
  /** Reads the token again (after a 401: it may have been replaced). */
  reload(): Promise<unknown>
  /** What a user should do to get a token, for the message of a 401. */
  readonly hint: string
}

/** Cache size when none is configured: a quarter of the cache disk, at most 100 GiB. */
async function autoCacheSize(dir: string): Promise<number> {
  const s = await statfs(dir)
  return Math.min(100 * 1024 ** 3, Math.floor((s.blocks * s.bsize) / 4))
}

/** Free-space floor when none is configured: 5% of the cache disk, at most 5 GiB. */
async function autoMinFree(dir: string): Promise<number> {
  const s = await statfs(dir)
  return Math.min(5 * 1024 ** 3, Math.floor((s.blocks * s.bsize) / 20))
}

export function buildSources(c: ReadPathSettings, token: ArchiveToken): SourceSet {
  const timeouts = {
    connectTimeoutMs: c.connectTimeoutMs,
    headersTimeoutMs: c.stallTimeoutMs,
    stallTimeoutMs: c.stallTimeoutMs,
    caFile: c.caFile,
  }
  const sources: Source[] = c.sources.map((name): Source => {
    switch (name) {
      case 'archive':
        return new ArchiveSource({
          base: c.archive,
          http: new HttpClient({
            ...timeouts,
            trustedOrigin: new URL(c.archive).origin,
            authorization: () => token.authorization(),
            reloadToken: async () => {
              await token.reload()
            },
          }),
          tokenHint: token.hint,
        })
      case 's3':
        log.info('S3 source', { url: c.s3Url, endpoint: c.s3Endpoint ?? 'AWS', region: c.s3Region, credentials: 'AWS SDK chain' })
        return new S3Source({
          url: c.s3Url!,
          endpoint: c.s3Endpoint,
          region: c.s3Region,
          signer: new S3Signer(c.s3Region),
          http: new HttpClient(timeouts),
        })
      case 'mirror':
        return new MirrorSource(c.mirrorDir!)
      case 'site': {
        // Its own HTTP client: the archive's token goes only to the archive's origin, the site's
        // token (if any) only to the site's.
        const siteToken = new SiteToken(c.siteTokenFile)
        log.info('site cache source', { url: c.siteCache, token: c.siteTokenFile ?? 'none' })
        return new SiteSource({
          base: c.siteCache!,
          http: new HttpClient({
            ...timeouts,
            trustedOrigin: c.siteTokenFile ? new URL(c.siteCache!).origin : undefined,
            authorization: () => siteToken.authorization(),
            reloadToken: c.siteTokenFile ? () => siteToken.reload() : undefined,
          }),
        })
      }
    }
  })
  return new SourceSet(sources)
}

/** How bytes are read from the sources: tries, backoff and the stall guard. */
export interface ReadPolicy {
  /** Tries per source before moving on to the next one. */
  attemptsPerSource: number
  /** First retry delay; doubles with each retry, with jitter. */
  backoffMs: number
  /** Longest wait between tries, whatever the server's Retry-After says. */
  maxBackoffMs: number
  /** A request body slower than this (bytes/s) over one rate window fails. */
  minRate: number
  /** Window over which the minimum rate is checked, ms. */
  rateWindowMs: number
  clock: Clock
  /** Jitter, in [0, 1). */
  random: () => number
}

/** The tries, backoff and stall guard the daemon starts from. */
export const DEFAULT_READ_POLICY: ReadPolicy = {
  attemptsPerSource: 4,
  backoffMs: 200,
  maxBackoffMs: 10_000,
  minRate: 64 << 10,
  rateWindowMs: 10_000,
  clock: systemClock,
  random: Math.random,
}

/** Waits a source may ask for (429, SlowDown) per read, on top of the tries for errors. */
const MAX_THROTTLED_WAITS = 8

/**
 * The set's sources as the one Source the fetcher reads through: each source's requests counted,
 * under the stall guard, retried (a source marked down meanwhile is tried no more; each failed try
 * counts towards its health), and failover across them.
 */
export function readSource(set: SourceSet, opts: Partial<ReadPolicy> = {}): FailoverSource {
  const o = { ...DEFAULT_READ_POLICY, ...opts }
  const count = fetchCounters()
  const through = (s: Source) => {
    // A site cache is not worth waiting for: the archive behind it is the retry.
    const policy: RetryPolicy = s.bytesOnly
      ? { tries: 1, baseMs: 0, maxMs: 0 }
      : { tries: o.attemptsPerSource, baseMs: o.backoffMs, maxMs: o.maxBackoffMs, maxThrottledWaits: MAX_THROTTLED_WAITS }
    return withRetry(counted(stallGuard(s, o.minRate, o.rateWindowMs), count), policy, o.clock, o.random, {
      stop: () => set.isDown(s),
      failed: (e) => set.noteFailure(s, e),
      retrying: () => count.add('retries'),
    })
  }
  return new FailoverSource(set, through, count, o.clock)
}

export interface ReadPath {
  store: BlockStore
  fetcher: Fetcher
}

/** The store and fetcher; `writers`, the addon's (fs/native.ts cacheWriters), write the cache from pool threads. */
export async function openReadPath(
  c: ReadPathSettings,
  sources: SourceSet,
  writers: Pick<StoreOptions, 'writeDirect' | 'writePieces'> = {},
): Promise<ReadPath> {
  const limit = c.cacheSize ?? (await autoCacheSize(c.cacheDir))
  const store = new BlockStore(c.cacheDir, {
    limit,
    pinLimit: c.pinSize ?? Math.floor(limit / 2),
    minFree: c.cacheMinFree ?? (await autoMinFree(c.cacheDir)),
    // Internal, for the block-size benchmark: a new cache dir's block size.
    blockSize: process.env.DESFS_BLOCK_SIZE ? parseSize(process.env.DESFS_BLOCK_SIZE) : undefined,
    ...writers,
  })
  // Bytes come through one Source: the set's sources with their tries, stall guard and failover.
  const source = readSource(sources, { minRate: c.minRate, rateWindowMs: c.stallTimeoutMs })
  const fetcher = new Fetcher(source, store, { readerDeadlineMs: c.readTimeoutMs })
  return { store, fetcher }
}
