"""MOSDEF 1D spectra (`<mask>.<filter>.<slit>.1d.fits`, Kriek et al. 2015; extracted by bmep).

Image HDUs on a linear wavelength WCS: HDU 1 optimally extracted flux, HDU 2 its 1-sigma
error (HDUs 3/4 are the boxcar versions, 5/6 the spatial profile).
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u

from specsr_keras.data.readers._fits import (
    assumed,
    confirmed,
    get_hdu,
    image_vector,
    linear_wcs_spectrum,
    open_fits,
)
from specsr_keras.data.records import SpecsrInputError, Spectrum

_BMEP = "MOSDEF extraction code bmep.pro (billfreeman44/bmep) writer and readers"

FORMAT = {
    "flux_hdu": confirmed(1, _BMEP + ": exten 1 = optimal flux"),
    "error_hdu": confirmed(2, _BMEP + ": exten 2 = optimal error (sigma)"),
    "wavelength_wcs": confirmed(("CRVAL1", "CDELT1", "CRPIX1"),
                                _BMEP + ": wavel = CRVAL1 + i*CDELT1 (CRPIX1 = 1)"),
    "wavelength_unit": confirmed(u.AA, _BMEP + ": text output '# wavelength(A)'; CUNIT1 "
                                       "honoured when present"),
    "flux_unit": assumed(u.erg / u.s / u.cm**2 / u.AA, "Kriek et al. 2015; BUNIT honoured"),
    "vacuum": assumed(True, "MOSFIRE DRP wavelength solutions are vacuum; AIRORVAC, "
                            "WAVTYPE or CTYPE1 = 'AWAV' switch to air"),
    "file_name": confirmed("<mask>.<filter>.<slit>.1d.fits", _BMEP),
    "mask_key": confirmed("MSKNM", _BMEP),
    "filter_key": confirmed("FILTNM", _BMEP),
    "slit_key": confirmed("SLITNM", _BMEP),
    "object_id": assumed("SLITNM", "the MOSDEF slit name is the target id"),
    "instruments": assumed({"J": "mosfire_j", "H": "mosfire_h", "K": "mosfire_k"},
                           "FILTNM is the MOSFIRE band letter"),
}


def read_spectrum(path) -> Spectrum:
    """Read one MOSDEF `*.1d.fits` file (optimal extraction) into a Spectrum."""
    path = Path(path)
    with open_fits(path) as hdul:
        flux_hdu = get_hdu(hdul, FORMAT["flux_hdu"].value, path)
        flux = image_vector(flux_hdu, path, "flux HDU 1")
        sigma = image_vector(get_hdu(hdul, FORMAT["error_hdu"].value, path), path,
                             "error HDU 2")
        header = flux_hdu.header
    name_parts = path.name.split(".")  # mask, filter, slit, "1d", "fits"
    band = _keyword_or(header, "filter_key", name_parts, 1).upper()
    instrument = FORMAT["instruments"].value.get(band)
    if instrument is None:
        raise SpecsrInputError(path, f"no instrument for MOSFIRE filter {band!r} "
                                     f"(keyword {FORMAT['filter_key'].value})")
    return linear_wcs_spectrum(
        path, header, flux, sigma,
        wavelength_unit=FORMAT["wavelength_unit"].value,
        flux_unit=FORMAT["flux_unit"].value,
        instrument=instrument,
        object_id=_keyword_or(header, "object_id", name_parts, 2),
        meta={"format": "mosdef", "path": str(path), "band": band,
              "mask": _keyword_or(header, "mask_key", name_parts, 0)},
    )


def _keyword_or(header, key: str, name_parts: list[str], index: int) -> str:
    """Header value of FORMAT[key], else the `index`-th dot-separated part of the file name."""
    value = str(header.get(FORMAT[key].value, "")).strip()
    if value:
        return value
    return name_parts[index] if len(name_parts) == 5 else ""
