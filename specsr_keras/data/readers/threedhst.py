"""3D-HST v4.1.5 1D grism spectra (`<pointing>-G141_<id>.1D.fits`, Momcheva et al. 2016).

One binary table; flux, error and contamination are count rates [e-/s] and `sensitivity`
converts them: f_λ [1e-17 erg s^-1 cm^-2 Å^-1] = (flux - contam) / sensitivity,
σ = error / sensitivity. Pixels with sensitivity <= 0 are masked.
"""

from __future__ import annotations

import re
from pathlib import Path

import astropy.units as u
import numpy as np

from specsr_keras.data.readers._fits import assumed, confirmed, get_column, get_table, open_fits
from specsr_keras.data.records import (
    Spectrum,
    header_says_air,
    ivar_from_sigma,
    make_spectrum,
    parse_wavelength_unit,
)

_PIPELINE = "3D-HST pipeline source (gbrammer/unicorn reduce.py, 1D writer + Interlace1D)"

FORMAT = {
    "hdu": confirmed(1, _PIPELINE),
    "wave": confirmed("wave", _PIPELINE + ": TUNIT 'ANGSTROMS'"),
    "flux": confirmed("flux", _PIPELINE + ": 'ELECTRONS/S'"),
    "error": confirmed("error", _PIPELINE + ": 1-sigma, 'ELECTRONS/S'"),
    "contam": confirmed("contam", _PIPELINE + ": modelled contamination, 'ELECTRONS/S'"),
    "sensitivity": confirmed("sensitivity", _PIPELINE + ": 'E/S / 1E-17 CGS'"),
    "flux_conversion": confirmed("(flux - contam) / sensitivity -> 1e-17 erg/s/cm2/A",
                                 _PIPELINE + " (Interlace1D flux_units, show())"),
    "ra_key": confirmed("RA", _PIPELINE),
    "dec_key": confirmed("DEC", _PIPELINE),
    "mag_key": confirmed("MAG", _PIPELINE),
    "object_id": confirmed(r"_(\d+)\.1D\.fits$", "release file names, e.g. "
                           "goodss-01-G141_43386.1D.fits"),
    "vacuum": assumed(True, "HST grism calibrations are in vacuum; no AIRORVAC keyword seen"),
    "instrument": assumed("hst_g141", "v4.1.5 1D spectra are G141; G102 not handled"),
}


def read_spectrum(path) -> Spectrum:
    """Read one 3D-HST `*.1D.fits` file into a Spectrum on its native grid (instrument hst_g141)."""
    path = Path(path)
    with open_fits(path) as hdul:
        table = get_table(hdul, FORMAT["hdu"].value, path)
        columns = {key: get_column(table, FORMAT[key].value, path)
                   for key in ("wave", "flux", "error", "contam", "sensitivity")}
        header = table.header
    wave, wave_unit = columns["wave"]
    sensitivity = columns["sensitivity"][0]
    usable = sensitivity > 0
    safe = np.where(usable, sensitivity, 1.0)
    meta = {"format": "threedhst", "path": str(path),
            "contam": columns["contam"][0] / safe}
    for key in ("ra_key", "dec_key", "mag_key"):
        name = FORMAT[key].value
        if name in header:
            meta[name.lower()] = header[name]
    return make_spectrum(
        path,
        wavelength=wave,
        wavelength_unit=parse_wavelength_unit(wave_unit, path, "TUNIT of 'wave'", u.AA),
        flux=(columns["flux"][0] - columns["contam"][0]) / safe,
        flux_scale=1.0,
        ivar=ivar_from_sigma(columns["error"][0] / safe),
        air=header_says_air(header, path),
        bad=~usable,
        instrument=FORMAT["instrument"].value,
        object_id=_object_id(path),
        meta=meta,
    )


def _object_id(path: Path) -> str:
    match = re.search(FORMAT["object_id"].value, path.name)
    return match.group(1) if match else path.name.split(".")[0]
