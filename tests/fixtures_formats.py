"""Writers of tiny files in each supported format (for reader tests), and `write_survey`:
a dozen such files of one field at known positions (for build-dataset, evaluation and
fine-tuning tests).

Every writer takes physical arrays (Å, f_λ, 1-sigma) so a test can compare what a reader
returns with what went in. Optional `header` dicts add or override keywords.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from specsr_keras.instruments import get_instrument
from specsr_keras.physics import LINE_WAVELENGTHS, NII_DOUBLET_RATIO

N_PIXELS = 40


def grism_wavelengths(n=N_PIXELS):
    """A G141-like grid [Å]: 46.5 Å steps from 10800 Å."""
    return 10800.0 + 46.5 * np.arange(n)


def smooth_flux(wavelength, level=2.0):
    """A positive, slowly varying f_λ [1e-17 cgs] with a bump, on any grid."""
    x = (np.asarray(wavelength) - np.mean(wavelength)) / np.ptp(wavelength)
    return level * (1.0 + 0.3 * x) + np.exp(-0.5 * (x / 0.05) ** 2)


def _update(header, extra):
    for key, value in (extra or {}).items():
        header[key] = value


def write_threedhst(directory, wave, flambda, sigma, *, contam=None, sensitivity=None,
                    wave_unit="ANGSTROMS", drop=(), header=None,
                    name="goodss-01-G141_43386.1D.fits") -> Path:
    """3D-HST `*.1D.fits`: counts = f_λ * sensitivity + contam, error = σ * sensitivity."""
    wave = np.asarray(wave, float)
    sensitivity = np.full(wave.size, 250.0) if sensitivity is None else sensitivity
    contam = np.zeros(wave.size) if contam is None else contam
    columns = {
        "wave": (wave, wave_unit),
        "flux": (np.asarray(flambda) * sensitivity + contam, "ELECTRONS/S"),
        "error": (np.asarray(sigma) * sensitivity, "ELECTRONS/S"),
        "contam": (contam, "ELECTRONS/S"),
        "trace": (np.asarray(flambda) * sensitivity, "ELECTRONS/S"),
        "etrace": (np.asarray(sigma) * sensitivity, "ELECTRONS/S"),
        "sensitivity": (sensitivity, "E/S / 1E-17 CGS"),
    }
    cols = [fits.Column(name=key, format="D", unit=unit, array=values)
            for key, (values, unit) in columns.items() if key not in drop]
    table = fits.BinTableHDU.from_columns(cols)
    table.header["RA"], table.header["DEC"], table.header["MAG"] = 53.1, -27.8, 22.5
    _update(table.header, header)
    path = Path(directory) / name
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, overwrite=True)
    return path


def write_mosdef(directory, flux, sigma, *, crval1=15000.0, cdelt1=2.0, crpix1=1.0,
                 header=None, name="co3_01.H.12345.1d.fits") -> Path:
    """MOSDEF `*.1d.fits`: HDU 1 flux, HDU 2 error [erg/s/cm2/Å], 3/4 boxcar, 5/6 profile."""
    keywords = {"CRVAL1": crval1, "CDELT1": cdelt1, "CRPIX1": crpix1, "CTYPE1": "LINEAR",
                "MSKNM": "co3_01", "FILTNM": "H", "SLITNM": "12345"}
    hdus = [fits.PrimaryHDU()]
    for data in (flux, sigma, flux, sigma, np.ones(20), np.ones(20)):
        hdu = fits.ImageHDU(np.asarray(data, np.float64))
        for key, value in keywords.items():
            hdu.header[key] = value
        _update(hdu.header, header)
        hdus.append(hdu)
    path = Path(directory) / name
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_kbss(directory, flux, sigma, *, crval1=14500.0, cdelt1=1.63, header=None,
               stem="Q2343-BX610_H", error_suffix="_esig") -> Path:
    """KBSS-MOSFIRE flux file `<stem>.fits` and error file `<stem><error_suffix>.fits`."""
    paths = []
    for data, suffix in ((flux, ""), (sigma, error_suffix)):
        hdu = fits.PrimaryHDU(np.asarray(data, np.float64))
        hdu.header.update({"CRVAL1": crval1, "CDELT1": cdelt1, "CRPIX1": 1.0,
                           "BUNIT": "erg/s/cm2/Angstrom"})
        _update(hdu.header, header)
        paths.append(Path(directory) / f"{stem}{suffix}.fits")
        hdu.writeto(paths[-1], overwrite=True)
    return paths[0]


def euclid_object(obj_id, wave, signal, var, *, mask=None, ndith=None, fscale=1e-16,
                  drop=(), header=None):
    """One Euclid combined-spectrum HDU; signal and var are the stored (unscaled) values."""
    table = Table({"WAVELENGTH": np.asarray(wave, np.float32),
                   "SIGNAL": np.asarray(signal, np.float32),
                   "QUALITY": np.ones(len(wave), np.float32),
                   "VAR": np.asarray(var, np.float32),
                   "MASK": np.zeros(len(wave), np.int32) if mask is None else mask,
                   "NDITH": np.full(len(wave), 4, np.int16) if ndith is None else ndith})
    table["WAVELENGTH"].unit = "Angstrom"
    table["SIGNAL"].unit = "erg / (Angstrom s cm2)"
    table.remove_columns(list(drop))
    hdu = fits.table_to_hdu(table)
    hdu.header["EXTNAME"] = str(obj_id)
    hdu.header["OBJ_ID"] = obj_id
    hdu.header["FSCALE"] = fscale
    hdu.header["RA_OBJ"], hdu.header["DEC_OBJ"] = 150.1, 2.2
    _update(hdu.header, header)
    return hdu


def write_euclid(directory, objects, name="EUC_SIR_W-COMBSPEC_TEST.fits") -> Path:
    """Euclid SIR combined-spectra file holding the given object HDUs."""
    primary = fits.PrimaryHDU()
    primary.header["FITS_DEF"] = "sir.combinedSpectra"
    primary.header["TELESCOP"] = "EUCLID"
    path = Path(directory) / name
    fits.HDUList([primary, *objects]).writeto(path, overwrite=True)
    return path


def cutout_header(shape, pixel_scale_arcsec, ra, dec, band):
    """TAN WCS header centred on (ra, dec) [deg] with square pixels, plus FILTER = band."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    wcs.wcs.cdelt = [-pixel_scale_arcsec / 3600.0, pixel_scale_arcsec / 3600.0]
    header = wcs.to_header()
    header["FILTER"] = band
    header["BUNIT"] = "nJy"
    return header


def write_cutout_mef(directory, data, bands, *, pixel_scale=0.06, ra=53.1, dec=-27.8,
                     name="cutout_12345.fits") -> Path:
    """One file, one band per image extension; data is [H, W, bands]."""
    hdus = [fits.PrimaryHDU()]
    for i, band in enumerate(bands):
        header = cutout_header(data.shape[:2], pixel_scale, ra, dec, band)
        hdus.append(fits.ImageHDU(data[:, :, i], header=header))
    path = Path(directory) / name
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_cutout_files(directory, data, bands, *, pixel_scales=None, ra=53.1, dec=-27.8):
    """One file per band (`cutout_<band>.fits`, image in the primary HDU); returns paths."""
    pixel_scales = pixel_scales or [0.06] * len(bands)
    paths = []
    for i, band in enumerate(bands):
        header = cutout_header(data.shape[:2], pixel_scales[i], ra, dec, band)
        paths.append(Path(directory) / f"cutout_{band}.fits")
        fits.PrimaryHDU(data[:, :, i], header=header).writeto(paths[-1], overwrite=True)
    return paths


def truncate(path, keep_fraction=0.6) -> Path:
    """Cut a file to the first `keep_fraction` of its bytes, in place."""
    path = Path(path)
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep_fraction)])
    return path


# --- a tiny survey field -------------------------------------------------------------

SURVEY_RA, SURVEY_DEC = 53.1, -27.8
SURVEY_Z = 1.45
SURVEY_N2 = np.log10(0.3)
# Observed coverage [Å] of the survey's MOSDEF files: (crval1, n pixels) at CDELT Å/px.
COVERAGE = {"m1": [(16000.0, 400)], "m2": [(15900.0, 185), (16400.0, 185)]}
CDELT = 1.63


def survey_dec(arcsec_offset):
    """Declination [deg] `arcsec_offset` north of the field centre."""
    return SURVEY_DEC + arcsec_offset / 3600.0


def mosdef_lines(crval1, n):
    """Continuum 1 plus Hα and the [NII] doublet ([NII]6585/Hα = 0.3) at SURVEY_Z, σ = 4 Å
    observed [1e-17 cgs], on n pixels of CDELT Å from crval1."""
    wave = crval1 + CDELT * np.arange(n)
    amplitudes = {"halpha": 10.0, "nii_6585": 3.0, "nii_6550": 3.0 / NII_DOUBLET_RATIO}
    lines = sum(a * np.exp(-0.5 * ((wave - LINE_WAVELENGTHS[name] * (1 + SURVEY_Z)) / 4.0) ** 2)
                for name, a in amplitudes.items())
    return 1.0 + lines


def write_survey(root) -> Path:
    """3D-HST, MOSDEF and cutout files of one field under root/{lowres,hires,images} plus a
    catalogue; returns the catalogue path.

    Low-res 101..106 lie 10" apart in Dec (106 has no catalogue redshift) and a truncated
    999; hi-res m1 (H band) and m2 (two masks with a gap) pair with 101 and 102, m5a/m5b
    make 105 ambiguous, m7 is unmatched and "nocat" has no position; cutouts pair with 101
    and 103 (0.12"/px), cutout_8 is unmatched. build-dataset keeps 5 examples.
    """
    root = Path(root)
    for sub in ("lowres", "hires", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    g141 = get_instrument("hst_g141")
    wave = g141.wavelength[0] + g141.dispersion * np.arange(-3, g141.wavelength.size + 3)
    flux = 2.0 + 1e-4 * (wave - 14000.0)
    for k in range(1, 7):
        write_threedhst(root / "lowres", wave, flux, np.full(wave.size, 0.1),
                        header={"RA": SURVEY_RA, "DEC": survey_dec(10.0 * k)},
                        name=f"goodss-01-G141_{100 + k}.1D.fits")
    truncate(write_threedhst(root / "lowres", wave, flux, np.full(wave.size, 0.1),
                             name="goodss-01-G141_999.1D.fits"))
    # MOSDEF slit -> (catalogue Dec, masks); MOSDEF files carry no position.
    hires = {"m1": (survey_dec(10.1), ["co3_01"]), "m2": (survey_dec(20.2), ["co3_01", "co3_02"]),
             "m5a": (survey_dec(50.2), ["co3_01"]), "m5b": (survey_dec(49.65), ["co3_01"]),
             "m7": (survey_dec(500.0), ["co3_01"]), "nocat": (None, ["co3_01"])}
    rows = [(str(100 + k), SURVEY_RA, survey_dec(10.0 * k), SURVEY_Z if k < 6 else np.nan)
            for k in range(1, 7)]
    for slit, (dec, masks) in hires.items():
        for index, mask in enumerate(masks):
            crval1, n = COVERAGE.get(slit, [(16000.0, 400)])[index]
            write_mosdef(root / "hires", 1e-17 * mosdef_lines(crval1, n), np.full(n, 2e-18),
                         crval1=crval1, cdelt1=CDELT, name=f"{mask}.H.{slit}.1d.fits",
                         header={"SLITNM": slit, "MSKNM": mask})
        if dec is not None:
            rows.append((slit, SURVEY_RA, dec, np.nan))
    images = {"cutout_1": (survey_dec(10.05), ("F606W", "F125W", "F160W"), 0.06, 80),
              "cutout_3": (survey_dec(29.9), ("F606W", "F814W", "F125W", "F160W"), 0.12, 40),
              "cutout_8": (survey_dec(800.0), ("F160W",), 0.06, 64)}
    for name, (dec, bands, scale, size) in images.items():
        data = np.ones((size, size, len(bands)), np.float32) * np.arange(1, len(bands) + 1)
        write_cutout_mef(root / "images", data, bands, pixel_scale=scale, ra=SURVEY_RA, dec=dec,
                         name=f"{name}.fits")
    catalog = root / "matches.fits"
    Table(rows=rows, names=("id", "ra", "dec", "z")).write(catalog)
    return catalog


def build_dataset_args(root, catalog, out) -> list[str]:
    """`specsr build-dataset` arguments for the files of `write_survey(root)`."""
    root = Path(root)
    return ["build-dataset", "--lowres", str(root / "lowres" / "*.1D.fits"),
            "--highres", str(root / "hires" / "*.1d.fits"),
            "--images", str(root / "images" / "*.fits"), "--catalog", str(catalog),
            "--out", str(out)]
