"""FITS plumbing shared by the readers: safe opening, column lookup, linear wavelength WCS.

Every failure becomes a one-line SpecsrInputError naming the file. Each reader documents
its format in a table of `FormatEntry`s (value + "confirmed"/"assumed" + source).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits

from specsr_keras.data.records import (
    SpecsrInputError,
    Spectrum,
    flux_scale_to_flux_unit,
    header_says_air,
    ivar_from_sigma,
    make_spectrum,
    parse_wavelength_unit,
)

# Warnings astropy emits at open time for a file that is cut short or has a broken header.
_CORRUPT_HINTS = ("truncated", "validating header", "corrupt")


class FormatEntry(NamedTuple):
    """One column / HDU / keyword mapping of a file format and how sure we are of it."""

    value: Any
    status: str  # "confirmed" (seen in a primary source) or "assumed"
    source: str = ""


def confirmed(value, source: str) -> FormatEntry:
    """A mapping verified against the named source."""
    return FormatEntry(value, "confirmed", source)


def assumed(value, reason: str = "") -> FormatEntry:
    """A mapping not verified against a primary source."""
    return FormatEntry(value, "assumed", reason)


@contextlib.contextmanager
def open_fits(path):
    """Open a FITS file fully (headers parsed), mapping every failure to SpecsrInputError.

    Raises for a missing, empty, truncated or non-FITS file. Errors raised by the body while
    reading HDU data (astropy's OSError/ValueError/TypeError on corrupt data) are re-raised
    as SpecsrInputError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecsrInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise SpecsrInputError(path, "empty file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        except (OSError, ValueError, TypeError) as exc:
            raise SpecsrInputError(path, f"not a readable FITS file ({exc})") from None
    problems = [str(w.message) for w in caught
                if any(hint in str(w.message).lower() for hint in _CORRUPT_HINTS)]
    if problems:
        hdul.close()
        raise SpecsrInputError(path, f"truncated or corrupt FITS file ({problems[0]})")
    try:
        yield hdul
    except SpecsrInputError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise SpecsrInputError(path, f"corrupt FITS data ({exc})") from None
    finally:
        hdul.close()


def get_hdu(hdul, key, path):
    """HDU by index or EXTNAME, or SpecsrInputError naming the missing HDU."""
    try:
        return hdul[key]
    except (IndexError, KeyError):
        raise SpecsrInputError(path, f"missing HDU {key!r} (file has {len(hdul)})") from None


def get_table(hdul, key, path):
    """Binary-table HDU by index or EXTNAME, or SpecsrInputError."""
    hdu = get_hdu(hdul, key, path)
    if not isinstance(hdu, fits.BinTableHDU):
        raise SpecsrInputError(path, f"HDU {key!r} is not a binary table")
    return hdu


def get_column(table_hdu, name: str, path, required: bool = True):
    """Column `name` (case-insensitive) of a binary-table HDU as float64, with its TUNIT.

    Returns (values, unit_text). A missing required column raises SpecsrInputError naming it;
    a missing optional one returns (None, "").
    """
    columns = table_hdu.columns
    names = {c.name.lower(): c for c in columns}
    column = names.get(name.lower())
    if column is None:
        if not required:
            return None, ""
        have = ", ".join(c.name for c in columns)
        raise SpecsrInputError(path, f"missing column {name!r} (have: {have})")
    data = np.asarray(table_hdu.data[column.name], dtype=np.float64).ravel()
    return data, (column.unit or "")


def image_vector(hdu, path, where: str) -> np.ndarray:
    """The data of an image HDU as a 1-D float64 vector; error unless it is 1 x N."""
    if hdu.data is None:
        raise SpecsrInputError(path, f"{where} has no data")
    data = np.asarray(hdu.data, dtype=np.float64)
    if data.ndim != 1 and not (data.ndim == 2 and 1 in data.shape):
        raise SpecsrInputError(path, f"{where} is not a 1-D spectrum (shape {data.shape})")
    return data.ravel()


def linear_wavelengths(header, n_pixels: int, path) -> np.ndarray:
    """λ_i = CRVAL1 + (i + 1 - CRPIX1) * CDELT1 (or CD1_1), i = 0..n-1, in header units."""
    if "CRVAL1" not in header:
        raise SpecsrInputError(path, "missing wavelength keyword 'CRVAL1'")
    step = header.get("CDELT1", header.get("CD1_1"))
    if step is None:
        raise SpecsrInputError(path, "missing wavelength keyword 'CDELT1' (or 'CD1_1')")
    reference_pixel = float(header.get("CRPIX1", 1.0))
    pixels = np.arange(n_pixels, dtype=np.float64) + 1.0
    return float(header["CRVAL1"]) + (pixels - reference_pixel) * float(step)


def linear_wcs_spectrum(path, header, flux, sigma, *, wavelength_unit, flux_unit,
                        instrument, object_id, meta) -> Spectrum:
    """Spectrum from flux and 1-sigma vectors on the linear wavelength WCS of `header`.

    CUNIT1 and BUNIT override the format defaults `wavelength_unit` / `flux_unit`;
    AIRORVAC, WAVTYPE or CTYPE1 = 'AWAV' mark air wavelengths (converted to vacuum).
    """
    if sigma.shape != flux.shape:
        raise SpecsrInputError(path, f"flux has {flux.size} pixels but error has {sigma.size}")
    return make_spectrum(
        path,
        wavelength=linear_wavelengths(header, flux.size, path),
        wavelength_unit=parse_wavelength_unit(header.get("CUNIT1"), path, "CUNIT1",
                                              wavelength_unit),
        flux=flux,
        flux_scale=flux_scale_to_flux_unit(header.get("BUNIT"), path, "BUNIT", flux_unit),
        ivar=ivar_from_sigma(sigma),
        air=header_says_air(header, path),
        instrument=instrument,
        object_id=object_id,
        meta=meta,
    )
