"""Readers of real spectra and image cutouts into `Spectrum` / `ImageCutout` records.

`read_spectrum(path)` returns one Spectrum; `read_spectra(path)` returns (records, rejects)
for any format, so a multi-object Euclid file and a one-object file stream the same way.
The format is detected from the file's content unless given.
"""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from specsr_keras.data.readers import cutouts, euclid_sir, kbss, mosdef, threedhst
from specsr_keras.data.readers._fits import open_fits
from specsr_keras.data.records import ImageCutout, SpecsrInputError, Spectrum

SPECTRUM_FORMATS = ("threedhst", "mosdef", "euclid_sir", "kbss")
FORMAT_TABLES = {"threedhst": threedhst.FORMAT, "mosdef": mosdef.FORMAT,
                 "euclid_sir": euclid_sir.FORMAT, "kbss": kbss.FORMAT,
                 "cutouts": cutouts.FORMAT}
_SINGLE_READERS = {"threedhst": threedhst.read_spectrum, "mosdef": mosdef.read_spectrum,
                   "kbss": kbss.read_spectrum}


def detect_format(path) -> str:
    """Name of the spectrum format of `path`, judged from its HDUs and headers."""
    path = Path(path)
    if path.name.endswith(".1D.fits"):
        return "threedhst"
    with open_fits(path) as hdul:
        if str(hdul[0].header.get("FITS_DEF", "")).startswith(euclid_sir.FORMAT["fits_def"].value):
            return "euclid_sir"
        for hdu in hdul[1:]:
            if isinstance(hdu, fits.BinTableHDU):
                names = {name.lower() for name in hdu.columns.names}
                if {"wave", "sensitivity"} <= names:
                    return "threedhst"
                if "signal" in names:
                    return "euclid_sir"
        extension_images = [h for h in hdul[1:] if isinstance(h, fits.ImageHDU)]
        if len(extension_images) >= 2 or mosdef.FORMAT["mask_key"].value in hdul[-1].header:
            return "mosdef"
        if hdul[0].data is not None and "CRVAL1" in hdul[0].header:
            return "kbss"
    raise SpecsrInputError(path, f"cannot tell the spectrum format; pass format= one of "
                                 f"{', '.join(SPECTRUM_FORMATS)}")


def read_spectra(path, format: str | None = None):
    """All spectra in `path` as (records, rejects); rejects are (object or HDU, reason)."""
    format = format or detect_format(path)
    if format == "euclid_sir":
        return euclid_sir.read_spectra(path)
    if format not in _SINGLE_READERS:
        raise SpecsrInputError(path, f"unknown format {format!r} "
                                     f"(known: {', '.join(SPECTRUM_FORMATS)})")
    return [_SINGLE_READERS[format](path)], []


def read_spectrum(path, format: str | None = None) -> Spectrum:
    """The one spectrum in `path`; SpecsrInputError if the file holds none or several."""
    records, rejects = read_spectra(path, format)
    if len(records) != 1:
        reasons = "; ".join(f"{label}: {reason}" for label, reason in rejects[:3])
        raise SpecsrInputError(path, f"expected one spectrum, found {len(records)}"
                                     + (f" ({reasons})" if reasons else ""))
    return records[0]


def read_cutout(paths, bands=None, object_id=None) -> ImageCutout:
    """Image cutout from one multi-extension FITS file or a list of one-band files."""
    return cutouts.read_cutout(paths, bands=bands, object_id=object_id)


__all__ = ["SPECTRUM_FORMATS", "FORMAT_TABLES", "detect_format", "read_spectra",
           "read_spectrum", "read_cutout"]
