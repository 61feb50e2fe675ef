// The WebAssembly Adler-32 agrees with the reference loop for every length and split, and the module
// embedded in cache/adler32-wasm.ts is the one cache/adler32.wat assembles to.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { adler32, adler32Combine, adler32Fast } from '../cache/adler32.js'
import { ADLER32_WASM } from '../cache/adler32-wasm.js'
import { assemble } from './tools/build-wasm.js'

t.test('adler32Fast equals adler32', async (t) => {
  const lengths = [
    0,
    1,
    2,
    15,
    16,
    17,
    31,
    32,
    33,
    5551,
    5552,
    5553,
    5552 * 2 + 9,
    65536,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    (3 << 20) + 12345,
  ]
  for (const len of lengths) {
    const random = randomBytes(len)
    const ones = Buffer.alloc(len, 0xff) // the largest sums: where an overflow would show
    t.equal(adler32Fast(random), adler32(random), `random bytes, length ${len}`)
    t.equal(adler32Fast(ones), adler32(ones), `0xff bytes, length ${len}`)
  }
  const b = randomBytes(100_003)
  for (const cut of [1, 16, 5552, 50_000, 100_002]) {
    t.equal(adler32Fast(b.subarray(cut), adler32Fast(b.subarray(0, cut))), adler32(b), `continued after ${cut} bytes`)
    t.equal(adler32Combine(adler32Fast(b.subarray(0, cut)), adler32Fast(b.subarray(cut)), b.length - cut), adler32(b), `combined at ${cut}`)
  }
})

t.test('the embedded module is assembled from cache/adler32.wat', async (t) => {
  t.same(Buffer.from(await assemble()), ADLER32_WASM, 'run `npm run build:wasm` after changing the .wat')
})
