// PROPFIND Depth:1 as dCache answers it: a DAV: multistatus with one response per entry (the
// directory itself first), each with getcontentlength, getlastmodified, resourcetype and, when asked,
// dCache's own Checksums property ("adler32=0a1b2c3d,md5=..."). Namespace prefixes vary between
// servers, so they are stripped before reading.
import { XMLParser } from 'fast-xml-parser'
import type { FileFacts } from './source.js'
import { parseByteCount, shown } from './byte-count.js'

export const PROPFIND_BODY = `<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:R="http://www.dcache.org/2013/webdav">
  <D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/><R:Checksums/></D:prop>
</D:propfind>`

export interface PropfindEntry {
  /** Decoded path of the href (no trailing slash). */
  path: string
  isDir: boolean
  facts: FileFacts
}

const parser = new XMLParser({
  removeNSPrefix: true,
  ignoreAttributes: true,
  parseTagValue: false,
  isArray: (name) => name === 'response' || name === 'propstat',
})

/** Parses "adler32=0a1b2c3d,md5=..." (dCache Checksums) or "adler32=0a1b2c3d" (RFC 3230 Digest). */
export function adler32From(text: string | undefined): string | null {
  if (!text) return null
  for (const part of text.split(/[,\s]+/)) {
    const m = /^adler32[=:]([0-9a-fA-F]{1,8})$/i.exec(part.trim())
    if (m) return m[1]!.toLowerCase().padStart(8, '0')
  }
  return null
}

function text(v: unknown): string | undefined {
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v === 'object') return undefined
  return String(v)
}

export function parseMultistatus(xml: string): PropfindEntry[] {
  const doc = parser.parse(xml) as { multistatus?: { response?: unknown[] } }
  const responses = doc.multistatus?.response
  if (!Array.isArray(responses)) throw new Error('PROPFIND answer is not a DAV multistatus')
  const out: PropfindEntry[] = []
  for (const r of responses as Record<string, unknown>[]) {
    const href = text(r.href)
    if (!href) continue
    // Only the propstat with a 200 status carries values; dCache lists unknown properties under 404.
    const propstats = (r.propstat as Record<string, unknown>[] | undefined) ?? []
    const prop: Record<string, unknown> = {}
    for (const ps of propstats) {
      const status = text(ps.status) ?? 'HTTP/1.1 200 OK'
      if (!/\s2\d\d\s/.test(status + ' ')) continue
      Object.assign(prop, ps.prop as Record<string, unknown>)
    }
    const rt = prop.resourcetype
    const isDir = typeof rt === 'object' && rt !== null && 'collection' in rt
    let path: string
    try {
      path = decodeURIComponent(new URL(href, 'http://x').pathname)
    } catch {
      continue
    }
    // No size at all is an unknown size (-1, as before); a size that is there must be a byte count.
    const sizeText = text(prop.getcontentlength)
    const size = sizeText === undefined || isDir ? -1 : parseByteCount(sizeText)
    if (size === undefined) throw new Error(`getcontentlength ${shown(sizeText)} of ${shown(path)} is not a byte count`)
    const lm = text(prop.getlastmodified)
    const mtime = lm ? Date.parse(lm) : NaN
    out.push({
      path: path.replace(/\/+$/, ''),
      isDir,
      facts: {
        size,
        adler32: adler32From(text(prop.Checksums)),
        mtime: Number.isFinite(mtime) ? mtime : null,
      },
    })
  }
  return out
}
