// The HDU walker (fs/fits-hdus.ts) on files written by astropy and fpack, checked against astropy's
// own reading of the same files: offsets, lengths, types, EXTNAMEs, keywords; and that it reads only
// header bytes (never a data part), ends quietly on a header cut short, and reads one record of a
// file that is not FITS.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { walkFits, hduIndex, type ReadAt } from '../fs/fits-hdus.js'
import { parseCard, RECORD } from '../daemon/fits.js'
import { PYTHON, tmp, needPythonModule, needTool } from './helpers.js'

/** Writes the fixtures (astropy), fpacks one, and prints astropy's view of each file as JSON. */
const GENERATE = String.raw`
import json, sys, os, subprocess
import numpy as np
from astropy.io import fits
d = sys.argv[1]
def p(n): return os.path.join(d, n)
fits.PrimaryHDU(np.arange(100 * 200, dtype='>i2').reshape(200, 100)).writeto(p('primary.fits'))
prim = fits.PrimaryHDU(); prim.header['EXPNUM'] = 123456; prim.header['BAND'] = 'r'
prim.header['LONGSTR'] = 'x' * 100 + 'end'
sci = fits.ImageHDU(np.ones((50, 60), dtype='>f4'), name='SCI'); sci.header['AIRMASS'] = 1.25
msk = fits.ImageHDU(np.zeros((50, 60), dtype='>i4'), name='MSK')
tab = fits.TableHDU.from_columns([fits.Column(name='A', format='I6', array=np.arange(5))], name='ASCII')
fits.HDUList([prim, sci, msk, tab]).writeto(p('multi.fits'))
col = fits.Column(name='V', format='PJ()', array=np.array([np.arange(n) for n in range(1, 400)], dtype=object))
fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([col, fits.Column(name='X', format='D', array=np.arange(399.0))], name='HEAPY')]).writeto(p('heap.fits'))
img = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU((np.arange(300 * 300) % 977).astype('>i4').reshape(300, 300), name='SCI')])
img.writeto(p('tofpack.fits'))
subprocess.run(['fpack', '-O', p('fpacked.fits.fz'), p('tofpack.fits')], check=True)
out = {}
for name in ['primary.fits', 'multi.fits', 'heap.fits', 'fpacked.fits.fz']:
    hdus = []
    with fits.open(p(name), disable_image_compression=True) as h:
        for i, hdu in enumerate(h):
            info = h.fileinfo(i)
            x = hdu.header.get('XTENSION', 'IMAGE').strip()
            kind = {'IMAGE': 'image', 'TABLE': 'table', 'BINTABLE': 'compressed' if hdu.header.get('ZIMAGE') else 'bintable'}[x]
            hdus.append({'index': i, 'extname': hdu.header.get('EXTNAME'), 'type': kind, 'headerOffset': info['hdrLoc'], 'dataOffset': info['datLoc'], 'dataSpan': info['datSpan'],
                         'cards': {k: v for k, v in hdu.header.items() if k in ('EXPNUM', 'BAND', 'AIRMASS', 'NAXIS1', 'PCOUNT', 'THEAP', 'LONGSTR', 'ZCMPTYPE')}})
    out[name] = hdus
print(json.dumps(out))
`

interface Expect {
  index: number
  extname: string | null
  type: string
  headerOffset: number
  dataOffset: number
  dataSpan: number
  cards: Record<string, unknown>
}

/** A reader over a file's bytes that records what was asked. */
function reader(bytes: Buffer): { read: ReadAt; asked: [number, number][] } {
  const asked: [number, number][] = []
  return {
    asked,
    read: async (off, len) => {
      asked.push([off, len])
      return bytes.subarray(off, off + len)
    },
  }
}

t.test('parseCard reads the values the writer and astropy write', async (t) => {
  t.same(parseCard("EXTNAME = 'SCI     '           / extension name".padEnd(80)), { key: 'EXTNAME', value: 'SCI' })
  t.same(parseCard("OBJECT  = 'it''s a '".padEnd(80)), { key: 'OBJECT', value: "it's a" })
  t.same(parseCard('SIMPLE  =                    T'.padEnd(80)), { key: 'SIMPLE', value: true })
  t.same(parseCard('NAXIS1  =                 2048 / axis'.padEnd(80)), { key: 'NAXIS1', value: 2048 })
  t.same(parseCard('AIRMASS =                 1.25'.padEnd(80)), { key: 'AIRMASS', value: 1.25 })
  t.same(parseCard('EXPTIME =             9.0D+01'.padEnd(80)), { key: 'EXPTIME', value: 90 })
  t.same(parseCard('BLANKV  =                      / undefined'.padEnd(80)), { key: 'BLANKV', value: null })
  t.same(parseCard('HISTORY a = b'.padEnd(80)), { key: 'HISTORY' })
  t.same(parseCard('BIGINT  = 123456789012345678901'.padEnd(80)), { key: 'BIGINT', value: '123456789012345678901' })
})

t.test('HDU index matches astropy on generated files', async (t) => {
  if (!needPythonModule(t, 'astropy', 'python3-astropy') || !needTool(t, 'fpack', 'libcfitsio-bin')) return
  const dir = tmp(t)
  const expected = JSON.parse(execFileSync(PYTHON, ['-c', GENERATE, dir], { encoding: 'utf8', timeout: 120_000 })) as Record<
    string,
    Expect[]
  >
  for (const [name, want] of Object.entries(expected)) {
    await t.test(name, async (t) => {
      const bytes = readFileSync(join(dir, name))
      const { read, asked } = reader(bytes)
      const walk = await walkFits(read, bytes.length, true)
      t.equal(walk.hdus.length, want.length, 'every HDU')
      want.forEach((w, i) => {
        const h = walk.hdus[i]!
        t.equal(h.index, w.index)
        t.equal(h.extname, w.extname ?? null, `HDU ${i} EXTNAME`)
        t.equal(h.type, w.type, `HDU ${i} type`)
        t.equal(h.headerOffset, w.headerOffset, `HDU ${i} header offset`)
        t.equal(h.headerOffset + h.headerLength, w.dataOffset, `HDU ${i} header length`)
        t.equal(h.dataOffset, w.dataOffset, `HDU ${i} data offset`)
        t.equal(Math.ceil(h.dataLength / RECORD) * RECORD, w.dataSpan, `HDU ${i} data span`)
        for (const [k, v] of Object.entries(w.cards)) t.same(walk.headers[i]!.get(k), v, `HDU ${i} ${k}`)
      })
      // Only header bytes were read: every read lies inside some header.
      for (const [off, len] of asked) {
        t.ok(
          walk.hdus.some((h) => off >= h.headerOffset && off + len <= h.headerOffset + h.headerLength),
          `read ${off}+${len} is header bytes`,
        )
      }
    })
  }
  await t.test('exact data lengths', async (t) => {
    const prim = await hduIndex(reader(readFileSync(join(dir, 'primary.fits'))).read, readFileSync(join(dir, 'primary.fits')).length)
    t.equal(prim[0]!.dataLength, 100 * 200 * 2, 'primary image: NAXIS1 x NAXIS2 x 2')
    const heap = await hduIndex(reader(readFileSync(join(dir, 'heap.fits'))).read, readFileSync(join(dir, 'heap.fits')).length)
    const pcount = expected['heap.fits']![1]!.cards.PCOUNT as number
    t.ok(pcount > 0, 'the table has a heap')
    t.equal(heap[1]!.dataLength, 399 * (8 + 8) + pcount, 'bintable: rows x row bytes + the heap (PCOUNT)')
  })
  await t.test('a header cut short ends the walk quietly after the HDUs before it', async (t) => {
    const bytes = readFileSync(join(dir, 'multi.fits'))
    const cut = expected['multi.fits']![2]!.headerOffset + RECORD / 2 // half way into MSK's header
    const walk = await walkFits(reader(bytes.subarray(0, cut)).read, cut)
    t.same(
      walk.hdus.map((h) => h.extname),
      [null, 'SCI'],
    )
    // A header whose END never comes (cards all the way to the end of the file).
    const noEnd = Buffer.concat([
      bytes.subarray(0, expected['multi.fits']![1]!.headerOffset),
      Buffer.from("XTENSION= 'IMAGE   '".padEnd(80) + 'COMMENT'.padEnd(80 * 35)),
    ])
    t.same(
      (await hduIndex(reader(noEnd).read, noEnd.length)).map((h) => h.index),
      [0],
    )
  })
  await t.test('garbage after the last HDU is not an HDU', async (t) => {
    const bytes = Buffer.concat([readFileSync(join(dir, 'primary.fits')), Buffer.alloc(RECORD, 'x')])
    t.equal((await hduIndex(reader(bytes).read, bytes.length)).length, 1)
  })
  t.ok(existsSync(join(dir, 'fpacked.fits.fz')))
})

t.test('a file that is not FITS: no HDUs, one read of its first record', async (t) => {
  const dir = tmp(t)
  const file = join(dir, 'catalog.fits.gz')
  writeFileSync(file, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(10_000, 7)]))
  const bytes = readFileSync(file)
  const { read, asked } = reader(bytes)
  t.same(await hduIndex(read, bytes.length), [])
  t.same(asked, [[0, RECORD]])
  const small = reader(Buffer.from('SIMPLE  = '))
  t.same(await hduIndex(small.read, 10), [], 'shorter than a record')
  t.same(small.asked, [], 'not even read')
})
