#!/usr/bin/python3
# A tile-compressed image for the cutout test and the headers benchmark, and reads of a section of it.
#   fpacked_image.py make OUT.fits.fz          4096x4096 int16 with noise as EXTNAME SCI, fpacked (RICE, a tile per row)
#   fpacked_image.py tiles PATH Y0 X0 N        JSON: the tiles a NxN section at (Y0, X0) intersects, their compressed bytes
#   fpacked_image.py read PATH Y0 X0 N OUT.npy the section as fitsio reads it (a slice of SCI), saved with numpy
import json, os, subprocess, sys
import numpy as np

def make(out):
    from astropy.io import fits
    rng = np.random.default_rng(11)
    img = (1000 + rng.normal(0, 300, (4096, 4096))).astype(np.int16)
    plain = out[:-3]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name='SCI')]).writeto(plain, overwrite=True)
    subprocess.run(['fpack', '-D', '-Y', plain], check=True)

def tiles(path, y0, x0, n):
    from astropy.io import fits
    with fits.open(path, disable_image_compression=True) as h:
        hdu = next(u for u in h if u.header.get('EXTNAME') == 'SCI')
        t1, t2 = hdu.header['ZTILE1'], hdu.header['ZTILE2']
        per_row = -(-hdu.header['ZNAXIS1'] // t1)
        col = hdu.data.field('COMPRESSED_DATA')
        which = [ty * per_row + tx for ty in range(y0 // t2, (y0 + n - 1) // t2 + 1) for tx in range(x0 // t1, (x0 + n - 1) // t1 + 1)]
        print(json.dumps({'tiles': len(which), 'tileBytes': int(sum(col[i].nbytes for i in which)), 'fileBytes': os.path.getsize(path)}))

def read(path, y0, x0, n, out):
    import fitsio
    with fitsio.FITS(path) as f:
        np.save(out, f['SCI'][y0:y0 + n, x0:x0 + n])

if __name__ == '__main__':
    what, args = sys.argv[1], sys.argv[2:]
    if what == 'make': make(args[0])
    elif what == 'tiles': tiles(args[0], *map(int, args[1:4]))
    elif what == 'read': read(args[0], *map(int, args[1:4]), args[4])
