"""KBSS-MOSFIRE 1D spectra (Steidel et al. 2014; Strom et al. 2017): a flux file plus a
separate 1-sigma error file, both 1-D images on the same linear wavelength WCS.

Nothing in this layout could be checked against a KBSS release document; every entry
below is an assumption, and the error file can be given explicitly.
"""

from __future__ import annotations

import re
from pathlib import Path

import astropy.units as u

from specsr_keras.data.readers._fits import (
    assumed,
    get_hdu,
    image_vector,
    linear_wcs_spectrum,
    open_fits,
)
from specsr_keras.data.records import SpecsrInputError, Spectrum

FORMAT = {
    "flux_hdu": assumed(0, "1-D image in the primary HDU"),
    "error_hdu": assumed(0, "1-D image in the primary HDU of the error file"),
    "error_suffixes": assumed(("_esig", ".sig", "_sig", "_err", "_error", "_sigma"),
                              "error file = flux file name + suffix before '.fits'"),
    "wavelength_wcs": assumed(("CRVAL1", "CDELT1", "CRPIX1"), "linear dispersion"),
    "wavelength_unit": assumed(u.AA, "CUNIT1 honoured when present"),
    "flux_unit": assumed(u.erg / u.s / u.cm**2 / u.AA, "BUNIT honoured when present"),
    "vacuum": assumed(True, "MOSFIRE DRP solutions are vacuum; AIRORVAC, WAVTYPE or "
                            "CTYPE1 = 'AWAV' switch to air"),
    "band_key": assumed("FILTER", "MOSFIRE header keyword; else file name '<id>_<band>'"),
    "object_key": assumed("OBJECT", "else the file name before '_<band>'"),
    "instruments": assumed({"J": "mosfire_j", "H": "mosfire_h", "K": "mosfire_k"}, ""),
}
_BAND_IN_NAME = re.compile(r"^(?P<object>.+)_(?P<band>[JHK])$", re.IGNORECASE)


def find_error_file(path) -> Path:
    """The error file that sits next to flux file `path`, or SpecsrInputError."""
    path = Path(path)
    stem = _stem(path)
    for suffix in FORMAT["error_suffixes"].value:
        candidate = path.with_name(f"{stem}{suffix}.fits")
        if candidate.is_file():
            return candidate
    tried = ", ".join(f"{stem}{s}.fits" for s in FORMAT["error_suffixes"].value)
    raise SpecsrInputError(path, f"no error file found next to it (tried {tried})")


def read_spectrum(path, error_path=None) -> Spectrum:
    """Read a KBSS-MOSFIRE flux file and its error file (found next to it unless given)."""
    path = Path(path)
    error_path = find_error_file(path) if error_path is None else Path(error_path)
    with open_fits(path) as hdul:
        flux_hdu = get_hdu(hdul, FORMAT["flux_hdu"].value, path)
        flux = image_vector(flux_hdu, path, "flux HDU 0")
        header = flux_hdu.header
    with open_fits(error_path) as hdul:
        sigma = image_vector(get_hdu(hdul, FORMAT["error_hdu"].value, error_path),
                             error_path, "error HDU 0")
    stem = _stem(path)
    from_name = _BAND_IN_NAME.match(stem)
    band = str(header.get(FORMAT["band_key"].value, "")).strip().upper()
    band = band or (from_name["band"].upper() if from_name else "")
    instrument = FORMAT["instruments"].value.get(band)
    if instrument is None:
        raise SpecsrInputError(path, f"no instrument for MOSFIRE band {band!r} "
                                     f"(keyword {FORMAT['band_key'].value} or name '<id>_<band>')")
    object_id = (str(header.get(FORMAT["object_key"].value, "")).strip()
                 or (from_name["object"] if from_name else stem))
    return linear_wcs_spectrum(
        path, header, flux, sigma,
        wavelength_unit=FORMAT["wavelength_unit"].value,
        flux_unit=FORMAT["flux_unit"].value,
        instrument=instrument,
        object_id=object_id,
        meta={"format": "kbss", "path": str(path), "error_path": str(error_path),
              "band": band},
    )


def _stem(path: Path) -> str:
    return path.name[: -len(".fits")] if path.name.endswith(".fits") else path.stem
