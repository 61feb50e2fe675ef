// `desfs db download`: fetches the metadata DB the way des-archive-access-download-metadata does (same
// URL, zstd-compressed), but resumable and safe:
//   - the payload as served (compressed) is appended to <db>.download, fsynced every 64 MiB, with the
//     synced length, URL and validator (ETag/Last-Modified) in <db>.download.json; a dropped
//     connection is resumed with a Range request (If-Range guards against a changed file), inside
//     the same run and across runs;
//   - it is decompressed while it arrives into a new temporary file beside the DB (a random name:
//     daemon/safe-write.ts; leftovers of a crash are removed by the next run); zstd decoder state cannot be saved,
//     so a resumed run first replays the local compressed bytes through a new decoder (local disk,
//     fast) and then continues from the network: no byte is fetched twice;
//   - the result must open as SQLite, be as long as its header says and have the file table; only
//     then is it renamed over the DB (a running daemon sees a new inode). Anything wrong leaves the
//     existing DB untouched.
// Disk: the compressed partial (about a fifth of the DB) plus the growing DB; never the DB twice.
// The partial keeps its fixed name (that is how a later run finds it), so it is opened without
// following a link and used only when it is a regular file of our own (openOwnFile).
import { once } from 'node:events'
import { existsSync, statSync } from 'node:fs'
import { mkdir, open, readFile, rename, rm, utimes, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Readable, Writable } from 'node:stream'
import { Agent, request, type Dispatcher } from 'undici'
import { checkMetadataDb, type DbInfo } from './db-info.js'
import { EXIT, UserError, oneLine } from '../daemon/errors.js'
import { withLock } from '../daemon/lock-file.js'
import { zstdDecoder, type ZstdDecoder } from './zstd.js'
import { createTemp, openOwnFile, removeStaleTemps, writeFileAtomic } from '../daemon/safe-write.js'
import { withoutCredentials } from '../daemon/url-setting.js'
import { Retrier } from '../cache/retry.js'

export interface DownloadOptions {
  url: string
  dest: string
  force?: boolean
  onProgress?: (done: number, total: number | undefined) => void
  say?: (line: string) => void
  /** Connections tried within one run before giving up (the next run resumes). */
  attempts?: number
  /** A body that sends nothing for this long counts as a dropped connection. */
  stallMs?: number
}

export interface DownloadResult {
  outcome: 'downloaded' | 'up-to-date'
  info?: DbInfo
  /** Payload bytes already on disk from an earlier run. */
  resumedFrom: number
  /** Payload bytes in total (compressed size for .zst). */
  payloadBytes: number
  decoder?: string
}

interface PartialMeta {
  url: string
  validator?: string
  total?: number
  /** Bytes of <db>.download known to be on disk (fsynced). */
  synced: number
}

const SYNC_EVERY = 64 << 20
/** Waits between resumes of a lost download: 0.5 s, doubling (with jitter), at most 8 s. */
const RESUME_BACKOFF = { baseMs: 500, maxMs: 8000 }
const IO_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EACCES', 'EPERM'])

class DecodeError extends Error {}
class NetworkError extends Error {}

function headerOf(h: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = h[name]
  return Array.isArray(v) ? v[0] : v
}

/** Writes to a stream with backpressure, failing at once if the pipeline behind it failed. */
async function feed(to: Writable, chunk: Buffer, failed: Promise<never>): Promise<void> {
  // A decoder that fails during the wait makes `once` reject with its raw error (node:zlib's
  // ZSTD_error_..., which would pass for a lost connection); `failed` says whose fault it was.
  if (!to.write(chunk)) await Promise.race([once(to, 'drain').catch(() => failed), failed])
}

async function readMeta(path: string): Promise<PartialMeta | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as PartialMeta
  } catch {
    return undefined
  }
}

export async function downloadMetadataDb(o: DownloadOptions): Promise<DownloadResult> {
  await mkdir(dirname(o.dest), { recursive: true, mode: 0o700 })
  // Two downloads appending to one partial would ruin it: one at a time per DB.
  return withLock(`${o.dest}.download`, () => download(o), 1000)
}

async function download(o: DownloadOptions): Promise<DownloadResult> {
  const say = o.say ?? (() => undefined)
  let url: URL
  try {
    url = new URL(o.url)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error()
  } catch {
    throw new UserError(`'${withoutCredentials(o.url)}' is not an http(s) URL`, EXIT.USAGE)
  }
  // The URL is printed and logged; a password in it would be too (a query string, such as a signed
  // URL's, is the file's own address here, so it stays allowed).
  if (url.username || url.password)
    throw new UserError(
      `'${withoutCredentials(o.url)}' holds a user name or password: desfs never takes credentials in a URL; give a URL without them`,
      EXIT.USAGE,
    )
  const compressed = /\.zst$/i.test(url.pathname)
  const partial = `${o.dest}.download`
  const metaPath = `${o.dest}.download.json`
  // Decoded DBs an interrupted run left (random names, so nobody else's file is among them).
  removeStaleTemps(o.dest)
  let out = partial
  let fh: FileHandle | undefined
  const agent = new Agent({ connect: { timeout: 15_000 }, headersTimeout: 30_000, bodyTimeout: o.stallMs ?? 60_000 })
  const get = (headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET') =>
    request(o.url, { method, headers, dispatcher: agent, maxRedirections: 5 }).catch((err: unknown) => {
      throw new NetworkError(`${method} ${o.url}: ${(err as NodeJS.ErrnoException).code ?? oneLine(err)}`)
    })

  try {
    if (!o.force && existsSync(o.dest)) {
      const head = await get({}, 'HEAD')
      await head.body.dump()
      const lm = Date.parse(headerOf(head.headers, 'last-modified') ?? '')
      const mine = statSync(o.dest).mtimeMs
      if (Number.isFinite(lm) && lm <= mine + 1000) return { outcome: 'up-to-date', resumedFrom: 0, payloadBytes: 0 }
      if (!Number.isFinite(lm))
        throw new UserError(`${o.dest} exists and ${o.url} gives no date to compare it with: use --force to download it again`, EXIT.USAGE)
      say(`${o.url} (${new Date(lm).toISOString()}) is newer than ${o.dest} (${new Date(mine).toISOString()}): downloading`)
    }

    fh = await openOwnFile(partial, 'partial download')
    let meta = await readMeta(metaPath)
    let offset = 0
    if (meta && meta.url === o.url && (await fh.stat()).size >= meta.synced) {
      offset = meta.synced
      await fh.truncate(offset) // bytes after the last fsync are not trusted
    } else {
      meta = { url: o.url, synced: 0 }
    }
    const saveMeta = () => writeFileAtomic(metaPath, JSON.stringify(meta), { mode: 0o600 })

    // First response decides whether the partial is still good (206 at our offset) or void (200).
    let res = await get(offset > 0 ? { range: `bytes=${offset}-`, ...(meta.validator ? { 'if-range': meta.validator } : {}) } : {})
    if (res.statusCode === 416 && offset > 0 && meta.total === offset) {
      await res.body.dump()
    } else if (res.statusCode === 200 || res.statusCode === 206) {
      if (res.statusCode === 200 && offset > 0) {
        say(`${o.url} changed or does not resume; starting over`)
        offset = 0
        await fh.truncate(0)
      }
    } else {
      await res.body.dump()
      if (offset === 0) await rm(partial, { force: true }) // made empty just now: nothing to resume
      throw new UserError(
        `GET ${o.url}: HTTP ${res.statusCode}${res.statusCode === 404 ? ' (not found: check --url / db_url)' : ''}`,
        EXIT.UNAVAILABLE,
      )
    }
    const resumedFrom = offset
    if (offset > 0) say(`resuming at ${offset} bytes`)

    const decoder: ZstdDecoder | undefined = compressed ? zstdDecoder() : undefined
    let outStream: Writable | undefined
    if (decoder) {
      const t = await createTemp(o.dest)
      out = t.path
      outStream = t.fh.createWriteStream()
    }
    // Decoder failures are the payload's fault (corrupt); file errors (disk full) are the disk's.
    const asDecodeError = (e: unknown) => (IO_ERRORS.has((e as NodeJS.ErrnoException).code ?? '') ? e : new DecodeError(oneLine(e)))
    const decodeEnd = decoder
      ? decoder.done.catch((e: unknown) => {
          throw asDecodeError(e)
        })
      : Promise.resolve()
    const writeEnd =
      decoder && outStream
        ? pipeline(decoder.output as Readable, outStream).catch((e: unknown) => {
            throw asDecodeError(e)
          })
        : Promise.resolve()
    let inputEnded = false
    const never = new Promise<never>(() => undefined)
    const failed: Promise<never> = decoder
      ? Promise.race([
          decodeEnd.then(() => (inputEnded ? never : Promise.reject(new DecodeError('the zstd stream ended before the download did')))),
          writeEnd.then(() => never),
        ])
      : never
    failed.catch(() => undefined)
    decodeEnd.catch(() => undefined)
    writeEnd.catch(() => undefined)
    if (offset === 0) await fh.truncate(0)
    let current: Dispatcher.ResponseData | undefined = res
    try {
      if (decoder && offset > 0) {
        for await (const chunk of fh.createReadStream({ start: 0, end: offset - 1, autoClose: false }))
          await feed(decoder.input, chunk as Buffer, failed)
      }
      // Lost connections are resumed from the bytes on disk, with the read path's backoff between tries.
      const tries = new Retrier({ tries: o.attempts ?? 4, ...RESUME_BACKOFF })
      for (;;) {
        try {
          current ??= await get({ range: `bytes=${offset}-`, ...(meta.validator ? { 'if-range': meta.validator } : {}) })
          res = current
          if (res.statusCode === 206) {
            const cr = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(headerOf(res.headers, 'content-range') ?? '')
            if (!cr || Number(cr[1]) !== offset)
              throw new UserError(
                `GET ${o.url}: answered Content-Range ${headerOf(res.headers, 'content-range')} to a request for bytes ${offset}-`,
                EXIT.UNAVAILABLE,
              )
            if (cr[2] !== '*') meta.total = Number(cr[2])
          } else if (res.statusCode === 200) {
            if (offset > 0)
              throw new UserError(`${o.url} stopped honouring ranges mid-download: run desfs db download again`, EXIT.UNAVAILABLE)
            const len = Number(headerOf(res.headers, 'content-length'))
            meta.total = Number.isFinite(len) && len > 0 ? len : undefined
          } else if (res.statusCode !== 416) {
            throw new NetworkError(`GET ${o.url}: HTTP ${res.statusCode}`)
          }
          meta.validator = headerOf(res.headers, 'etag') ?? headerOf(res.headers, 'last-modified') ?? meta.validator
          await saveMeta()
          if (res.statusCode !== 416) {
            for await (const raw of res.body as AsyncIterable<Buffer>) {
              await fh.write(raw, 0, raw.length, offset)
              offset += raw.length
              if (decoder) await feed(decoder.input, raw, failed)
              if (offset - meta.synced >= SYNC_EVERY) {
                await fh.sync()
                meta.synced = offset
                await saveMeta()
              }
              o.onProgress?.(offset, meta.total)
            }
          }
          if (meta.total !== undefined && offset !== meta.total)
            throw new NetworkError(`connection closed at ${offset} of ${meta.total} bytes`)
          break
        } catch (err) {
          if (current) {
            current.body.on('error', () => undefined)
            current.body.destroy()
          }
          current = undefined
          if (err instanceof UserError || err instanceof DecodeError || IO_ERRORS.has((err as NodeJS.ErrnoException).code ?? '')) throw err
          await fh.sync()
          meta.synced = offset
          await saveMeta()
          const why = err instanceof NetworkError ? err.message : ((err as NodeJS.ErrnoException).code ?? oneLine(err))
          if (!tries.failed())
            throw new UserError(
              `download interrupted at ${offset}${meta.total ? ` of ${meta.total}` : ''} bytes (${why}): run desfs db download again to resume`,
              EXIT.UNAVAILABLE,
            )
          say(`connection lost at ${offset} bytes (${why}); resuming`)
          await tries.wait()
        }
      }
      await fh.sync()
      meta.synced = offset
      await saveMeta()
      if (decoder) {
        inputEnded = true
        decoder.input.end()
        await Promise.all([decodeEnd, writeEnd])
        const oh = await open(out, 'r')
        await oh.sync()
        await oh.close()
      }
    } catch (err) {
      decoder?.destroy()
      outStream?.destroy()
      if (compressed) await rm(out, { force: true })
      if (err instanceof DecodeError) {
        await rm(partial, { force: true })
        await rm(metaPath, { force: true })
        throw new UserError(
          `the download from ${o.url} is corrupt (${err.message}); it was removed and ${o.dest} was not touched: run desfs db download again`,
          EXIT.FAILURE,
        )
      }
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOSPC' || code === 'EDQUOT')
        throw new UserError(
          `disk full while writing next to ${o.dest}: free some space (the DB needs about 8 GB) or set DES_ARCHIVE_ACCESS_DB elsewhere; the partial download is kept for resuming`,
        )
      throw err
    }

    let info: DbInfo
    try {
      info = checkMetadataDb(out, 'the downloaded file')
    } catch (err) {
      await rm(out, { force: true })
      await rm(partial, { force: true })
      await rm(metaPath, { force: true })
      throw new UserError(`${(err as Error).message}; it was removed and ${o.dest} was not touched`, EXIT.FAILURE)
    }
    const lm = Date.parse(headerOf(res.headers, 'last-modified') ?? '')
    if (Number.isFinite(lm)) await utimes(out, new Date(), new Date(lm))
    await rename(out, o.dest)
    const dh = await open(dirname(o.dest), 'r')
    await dh.sync().catch(() => undefined)
    await dh.close()
    await rm(partial, { force: true })
    await rm(metaPath, { force: true })
    return {
      outcome: 'downloaded',
      info: { ...info, path: o.dest },
      resumedFrom,
      payloadBytes: offset,
      ...(decoder ? { decoder: decoder.kind } : {}),
    }
  } catch (err) {
    if (err instanceof NetworkError) throw new UserError(`${err.message}: check the network and --url`, EXIT.UNAVAILABLE)
    throw err
  } finally {
    await fh?.close().catch(() => undefined)
    await agent.close().catch(() => undefined)
  }
}
