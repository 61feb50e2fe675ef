// Sizes and offsets a server sends (PROPFIND getcontentlength, Content-Length, Content-Range, S3's
// Size) are read strictly: decimal digits only and at most 2^53-1, the largest integer a JS number
// holds exactly. Number() would take '0x10', '1e20', ' 5 ' or '-5', and round 20-digit values, and a
// wrong size is served as the file's size.

/** The byte count in `text`, or undefined when it is not decimal digits within 2^53-1. */
export function parseByteCount(text: string | undefined): number | undefined {
  if (text === undefined || !/^[0-9]{1,16}$/.test(text)) return undefined
  const n = Number(text)
  return n <= Number.MAX_SAFE_INTEGER ? n : undefined
}

/** A short, printable form of a value a server sent, for a message. */
export function shown(text: string | undefined): string {
  if (text === undefined) return '(none)'
  const t = text.length > 40 ? `${text.slice(0, 40)}...` : text
  return `'${t.replace(/[\x00-\x1f\x7f]/g, '?')}'`
}
