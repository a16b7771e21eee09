"""Euclid Q1 SIR combined 1D spectra (DpdSirCombinedSpectra): one FITS file per batch of up
to 1000 objects of a MER tile, one binary-table HDU per object.

A problem with one object (missing column, bad wavelengths, unknown unit) becomes a reject
(label, reason) for the quarantine table; only a file-level problem raises.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from specsr_keras.data.readers._fits import assumed, confirmed, get_column, open_fits
from specsr_keras.data.records import (
    SpecsrInputError,
    Spectrum,
    flux_scale_to_flux_unit,
    header_says_air,
    ivar_from_variance,
    make_spectrum,
    parse_wavelength_unit,
)

_DPDD = "Euclid Q1 DPDD, SIR Combined Spectra product card"
_IRSA = "IRSA Euclid Q1 SIR 1D spectra tutorial (Caltech-IPAC/irsa-tutorials)"

FORMAT = {
    "layout": confirmed("one CombinedSpectrum per object, up to 1000 per file", _DPDD),
    "fits_def": confirmed("sir.combinedSpectra", _DPDD + ": primary header FITS_DEF"),
    "spectrum_hdus": assumed("every BINTABLE extension", "per-object HDU layout not seen"),
    "wavelength": confirmed("WAVELENGTH", _IRSA + ": in Angstrom"),
    "signal": confirmed("SIGNAL", _IRSA + ": flux, scaled by the HDU's FSCALE"),
    "variance": confirmed("VAR", _IRSA + ": error plotted as sqrt(VAR)"),
    "mask": confirmed("MASK", _IRSA + ": do not use a pixel if MASK is odd or >= 64"),
    "ndith": assumed("NDITH", "number of dithers; 0 = not observed, masked"),
    "fscale_key": confirmed("FSCALE", _IRSA),
    "flux_unit": assumed(u.erg / u.s / u.cm**2 / u.AA,
                         "SIGNAL * FSCALE in erg/s/cm2/A; TUNIT honoured when present"),
    "variance_scale": assumed("FSCALE**2", "VAR is the variance of SIGNAL"),
    "object_id_keys": assumed(("OBJ_ID", "OBJECT_ID", "SOURCE_ID"),
                              "DR1 archive code reads OBJ_ID; else an integer EXTNAME"),
    "ra_key": assumed("RA_OBJ", "DR1 archive code"),
    "dec_key": assumed("DEC_OBJ", "DR1 archive code"),
    "vacuum": assumed(True, "space-based; AIRORVAC/WAVTYPE honoured"),
    "instrument": assumed("euclid_nisp_red", "RGS files; blue-grism (BGS) files not handled"),
}
_MASK_BAD_FROM = 64


def read_spectra(path) -> tuple[list[Spectrum], list[tuple[str, str]]]:
    """Read every object of a combined-spectra file.

    Returns (records, rejects); a reject is (object id or "HDU n", reason). Raises
    SpecsrInputError when the file itself is unreadable or holds no spectrum table.
    """
    path = Path(path)
    records, rejects = [], []
    with open_fits(path) as hdul:
        tables = [(i, hdu) for i, hdu in enumerate(hdul) if isinstance(hdu, fits.BinTableHDU)]
        if not tables:
            raise SpecsrInputError(path, "no spectrum tables (binary-table HDUs) in file")
        for index, hdu in tables:
            label = _object_id(hdu.header) or f"HDU {index}"
            try:
                records.append(_read_hdu(path, index, hdu, label))
            except (SpecsrInputError, OSError, ValueError, TypeError) as exc:
                problem = exc.problem if isinstance(exc, SpecsrInputError) else str(exc)
                rejects.append((label, f"HDU {index}: {' '.join(problem.split())}"))
    return records, rejects


def _read_hdu(path: Path, index: int, hdu, object_id: str) -> Spectrum:
    header = hdu.header
    wave, wave_unit = get_column(hdu, FORMAT["wavelength"].value, path)
    signal, signal_unit = get_column(hdu, FORMAT["signal"].value, path)
    variance, _ = get_column(hdu, FORMAT["variance"].value, path)
    mask_bits, _ = get_column(hdu, FORMAT["mask"].value, path, required=False)
    ndith, _ = get_column(hdu, FORMAT["ndith"].value, path, required=False)
    bad = np.zeros(signal.shape, bool)
    if mask_bits is not None:
        bits = mask_bits.astype(np.int64)
        bad |= (bits % 2 == 1) | (bits >= _MASK_BAD_FROM)
    if ndith is not None:
        bad |= ndith <= 0
    fscale = float(header.get(FORMAT["fscale_key"].value, 1.0))
    unit_scale = flux_scale_to_flux_unit(signal_unit, path, "TUNIT of SIGNAL",
                                         FORMAT["flux_unit"].value)
    meta = {"format": "euclid_sir", "path": str(path), "hdu": index, "fscale": fscale}
    for name in ("ra", "dec"):
        keyword = FORMAT[f"{name}_key"].value
        if keyword in header:
            meta[name] = float(header[keyword])
    return make_spectrum(
        path,
        wavelength=wave,
        wavelength_unit=parse_wavelength_unit(wave_unit, path, "TUNIT of WAVELENGTH", u.AA),
        flux=signal,
        flux_scale=fscale * unit_scale,
        ivar=ivar_from_variance(variance),
        air=header_says_air(header, path),
        bad=bad,
        instrument=FORMAT["instrument"].value,
        object_id=object_id or f"HDU{index}",
        meta=meta,
    )


def _object_id(header) -> str:
    for key in FORMAT["object_id_keys"].value:
        if str(header.get(key, "")).strip():
            return str(header[key]).strip()
    extname = str(header.get("EXTNAME", "")).strip()
    return extname if extname.lstrip("-").isdigit() else ""
