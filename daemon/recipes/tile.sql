-- name: tile
-- description: what a coadd tile's processing needs for one band: the coadd image, its catalog, segmentation map and PSF model; the single-epoch red_immask images that went into it (found through the tile's coadd_nwgint images, matched on EXPNUM and CCDNUM) with their red_bkg images, segmentation maps and PSFEx models
-- params: tilename band
-- values tilename: SELECT DISTINCT TILENAME FROM Y6A2_COADD WHERE FILETYPE = 'coadd'
-- values band: SELECT DISTINCT BAND FROM Y6A2_COADD WHERE TILENAME = :tilename AND FILETYPE = 'coadd'
WITH coadd_attempt AS (
  SELECT PFW_ATTEMPT_ID FROM Y6A2_PROCTAG WHERE TAG = 'Y6A2_COADD'
),
single_epoch AS (
  SELECT DISTINCT j.FILENAME, j.PFW_ATTEMPT_ID, j.CCDNUM
  FROM Y6A2_IMAGE i
  JOIN Y6A2_IMAGE j ON j.EXPNUM = i.EXPNUM AND j.CCDNUM = i.CCDNUM AND j.FILETYPE = 'red_immask'
  WHERE i.FILETYPE = 'coadd_nwgint' AND i.TILENAME = :tilename AND i.BAND = :band
    AND i.PFW_ATTEMPT_ID IN coadd_attempt
),
wanted AS (
  SELECT FILENAME FROM Y6A2_COADD
    WHERE TILENAME = :tilename AND BAND = :band AND FILETYPE = 'coadd' AND PFW_ATTEMPT_ID IN coadd_attempt
  UNION SELECT FILENAME FROM Y6A2_CATALOG
    WHERE TILENAME = :tilename AND BAND = :band AND FILETYPE = 'coadd_cat' AND PFW_ATTEMPT_ID IN coadd_attempt
  UNION SELECT FILENAME FROM Y6A2_MISCFILE
    WHERE TILENAME = :tilename AND BAND = :band AND FILETYPE IN ('coadd_segmap', 'coadd_psfex_model') AND PFW_ATTEMPT_ID IN coadd_attempt
  UNION SELECT FILENAME FROM single_epoch
  UNION SELECT k.FILENAME FROM single_epoch se
    JOIN Y6A2_IMAGE k ON k.PFW_ATTEMPT_ID = se.PFW_ATTEMPT_ID AND k.CCDNUM = se.CCDNUM AND k.FILETYPE = 'red_bkg'
  UNION SELECT m.FILENAME FROM single_epoch se
    JOIN Y6A2_MISCFILE m ON m.PFW_ATTEMPT_ID = se.PFW_ATTEMPT_ID AND m.CCDNUM = se.CCDNUM AND m.FILETYPE IN ('psfex_model', 'red_segmap')
)
SELECT fai.PATH, fai.FILENAME, fai.COMPRESSION
FROM wanted w JOIN Y6A2_FILE_ARCHIVE_INFO fai ON fai.FILENAME = w.FILENAME
ORDER BY fai.PATH, fai.FILENAME
