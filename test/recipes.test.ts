// The tile recipe selects exactly what a tile's processing needs, and nothing of other tiles or bands.
import t from 'tap'
import Database from 'better-sqlite3'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeArchive, tmp } from './helpers.js'
import { loadRecipesLenient, parseRecipe, recipeWithParams } from '../daemon/catalog/recipes.js'
import { rowsToPaths } from '../daemon/jobs/sync.js'
import { expectedTileFiles } from './archive/expect.js'

t.test('the tile recipe selects exactly the expected files', async (t) => {
  const a = makeArchive(t, { exposures: 9, ccds: 3, tiles: ['DES2041-5248', 'DES2041-5331', 'DES2045-5248'] })
  const db = new Database(a.db, { readonly: true })
  t.teardown(() => db.close())
  let checked = 0
  let withInputs = 0
  for (const tile of a.manifest.tiles) {
    for (const band of a.manifest.bands) {
      const { recipe, values } = recipeWithParams('tile', { tilename: tile, band })
      const { paths, refused } = rowsToPaths(db.prepare(recipe.sql).raw(true).all(values) as unknown[][])
      const expected = expectedTileFiles(a.manifest, tile, band)
      if (expected.length > 4) withInputs++
      t.same(paths.sort(), expected, `${tile} ${band}: exactly the expected files`)
      t.same(refused, [], 'no refused rows')
      checked++
    }
  }
  t.equal(checked, 9)
  t.equal(withInputs, 6, 'six tile/band pairs have single-epoch inputs (exposures cover two of three tiles)')
  const { recipe, values } = recipeWithParams('tile', { tilename: 'DES0000+0000', band: 'r' })
  t.same(db.prepare(recipe.sql).all(values), [], 'an unknown tile selects nothing')
})

t.test('recipes are data: a user recipe is found, checked and may replace a built-in', async (t) => {
  const dir = tmp(t)
  const recipes = join(dir, 'recipes')
  mkdirSync(recipes)
  writeFileSync(
    join(recipes, 'psf.sql'),
    "-- name: psf\n-- description: PSF models of one exposure\n-- params: expnum\nSELECT PATH, FILENAME, COMPRESSION FROM Y6A2_FILE_ARCHIVE_INFO WHERE FILENAME LIKE 'D%' || :expnum || '%psfexcat.psf'\n",
  )
  process.env.DESFS_RECIPES = recipes
  t.teardown(() => {
    delete process.env.DESFS_RECIPES
  })
  writeFileSync(join(recipes, 'broken.sql'), '-- name: broken\nDELETE FROM Y6A2_IMAGE\n')
  const { recipes: all, broken } = loadRecipesLenient()
  t.ok(all.has('tile') && all.has('psf'), 'built-in and user recipes, beside a broken one')
  t.match(broken.get('broken'), /must be one SELECT/, 'the broken one, with why')
  t.throws(() => recipeWithParams('broken', {}), /broken\.sql: must be one SELECT/, 'asked for by name, it says what is wrong with it')
  t.ok(recipeWithParams('tile', { tilename: 'DES0000+0000', band: 'r' }), 'the others still work')
  t.same(all.get('psf')!.params, ['expnum'])
  t.throws(() => recipeWithParams('psf', {}), /recipe 'psf' needs --expnum/)
  t.throws(() => recipeWithParams('nope', {}), /no recipe named 'nope' \(known: .*tile/)
  t.throws(() => parseRecipe('-- name: bad\n-- params: x\nDELETE FROM Y6A2_IMAGE', 'bad.sql'), /must be one SELECT/)
  t.throws(() => parseRecipe('-- name: bad\n-- params: x\nSELECT 1', 'bad.sql'), /declares parameter x but the SQL does not use :x/)
})

t.test('paths from rows are checked like the tree checks them', async (t) => {
  const { paths, refused } = rowsToPaths([
    ['OPS/a', 'f.fits', '.fz'],
    ['OPS/a', 'f.fits', '.fz'],
    ['OPS/../etc', 'passwd', null],
    ['OPS/b/g.fits'],
    ['/etc/shadow'],
  ])
  t.same(paths, ['OPS/a/f.fits.fz', 'OPS/b/g.fits'], 'valid rows once each')
  t.equal(refused.length, 2, 'hostile rows refused')
})
