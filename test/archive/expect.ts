// What the built-in recipes must select from a generated archive, computed from what the generator
// made (its manifest), not from SQL, so the tests check the recipes against an independent answer.
import type { Manifest } from '../../bin/demo/generate.js'

/** What the tile recipe must select, computed from what the generator made (not from SQL). */
export function expectedTileFiles(m: Manifest, tile: string, band: string): string[] {
  const out: string[] = []
  for (const f of m.files) {
    const name = f.rel.split('/').pop()!
    const coaddStem = `${tile}_r4575p01_${band}`
    if (['coadd', 'coadd_cat', 'coadd_segmap', 'coadd_psfex_model'].includes(f.kind)) {
      if (f.rel.includes(`/${tile}/`) && (name === `${coaddStem}.fits.fz` || name.startsWith(`${coaddStem}_`))) out.push(f.rel)
      continue
    }
    if (['red_immask', 'red_bkg', 'red_segmap', 'psfex_model'].includes(f.kind)) {
      const m2 = /^D0*(\d+)_(\w)_c\d+_/.exec(name)
      if (m2 && m2[2] === band && m.tileExposures[tile]!.includes(Number(m2[1]))) out.push(f.rel)
    }
  }
  return out.sort()
}
