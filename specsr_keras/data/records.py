"""Records every reader returns, the input error they raise, and the unit helpers they share.

Conventions (docs/contracts.md): wavelengths in Å, vacuum, observed frame; flux density in
FLUX_UNIT = 1e-17 erg s^-1 cm^-2 Å^-1; `ivar` is the inverse variance of flux in the same
scaling; `mask` is True for a bad pixel, and ivar is 0 wherever mask is True.
Units enter as astropy units here and leave as plain numpy arrays.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np

from specsr_keras.units import FLUX_UNIT  # re-exported: the unit inside every array

# Spellings of wavelength units seen in spectrum headers that astropy does not parse as
# lengths ("A" is the ampere to astropy; 3D-HST writes "ANGSTROMS").
_WAVELENGTH_ALIASES = {
    "a": u.AA, "aa": u.AA, "ang": u.AA, "angstrom": u.AA, "angstroms": u.AA,
    "angstroem": u.AA, "å": u.AA, "um": u.um, "µm": u.um, "μm": u.um, "micron": u.um,
    "microns": u.um, "nm": u.nm, "nanometer": u.nm, "nanometers": u.nm,
}
# Header values that mean air or vacuum wavelengths (AIRORVAC, WAVTYPE, CTYPE1).
_AIR_WORDS = {"air", "awav"}
_VACUUM_WORDS = {"vac", "vacuum", "wave"}


class SpecsrInputError(ValueError):
    """A bad input file; str() is one line "PATH: problem" or "PATH: row N: problem"."""

    def __init__(self, path, problem: str, row: int | None = None):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        self.row = row
        where = self.path if row is None else f"{self.path}: row {row}"
        super().__init__(f"{where}: {self.problem}")


@dataclass
class Spectrum:
    """One 1-D spectrum.

    wavelength [Å, vacuum, observed frame], strictly increasing; flux [FLUX_UNIT];
    ivar [FLUX_UNIT^-2]; mask (True = bad). On construction non-finite flux or ivar and
    ivar <= 0 become masked pixels, masked pixels get ivar = 0 and, if non-finite, flux = 0.
    Raises ValueError for mismatched shapes, non-1-D arrays or non-monotonic wavelengths.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray | None = None
    instrument: str = ""
    object_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.wavelength = np.array(self.wavelength, dtype=np.float64)
        self.flux = np.array(self.flux, dtype=np.float64)
        self.ivar = np.array(self.ivar, dtype=np.float64)
        mask = np.zeros(self.flux.shape, bool) if self.mask is None else self.mask
        self.mask = np.array(mask, dtype=bool)
        arrays = {"wavelength": self.wavelength, "flux": self.flux, "ivar": self.ivar,
                  "mask": self.mask}
        for name, values in arrays.items():
            if values.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
        if len({values.shape for values in arrays.values()}) != 1:
            shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
            raise ValueError(f"array lengths differ: {shapes}")
        if self.wavelength.size < 2:
            raise ValueError("a spectrum needs at least 2 pixels")
        check_increasing(self.wavelength)
        self.mask |= ~np.isfinite(self.flux) | ~np.isfinite(self.ivar) | ~(self.ivar > 0)
        self.ivar[self.mask] = 0.0
        self.flux[~np.isfinite(self.flux)] = 0.0
        self.object_id = str(self.object_id)


@dataclass
class ImageCutout:
    """Image cutout data[H, W, bands] with band names, pixel scale [arcsec] and metadata.

    meta holds "ra"/"dec" [deg] of the cutout centre when known and the flux unit ("bunit").
    """

    data: np.ndarray
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    object_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        self.bands = tuple(str(b) for b in self.bands)
        if self.data.ndim != 3:
            raise ValueError(f"cutout data must be [H, W, bands], got shape {self.data.shape}")
        if self.data.shape[2] != len(self.bands):
            raise ValueError(f"{self.data.shape[2]} image planes but {len(self.bands)} band names")
        if not self.pixel_scale_arcsec > 0:
            raise ValueError(f"pixel scale must be > 0 arcsec, got {self.pixel_scale_arcsec}")
        self.object_id = str(self.object_id)


def check_increasing(wavelength: np.ndarray) -> None:
    """Raise ValueError unless wavelength is finite and strictly increasing."""
    if not np.all(np.isfinite(wavelength)):
        raise ValueError("wavelengths contain NaN or inf")
    steps = np.diff(wavelength)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0))
        raise ValueError(
            f"wavelengths are not strictly increasing (pixel {first + 1}: "
            f"{wavelength[first]:.6g} -> {wavelength[first + 1]:.6g})")


def parse_wavelength_unit(text, path, where: str, default: u.UnitBase | None = None):
    """Length unit from a header string such as "Angstrom", "um" or "nm".

    Empty text gives `default`; an unknown or non-length unit raises SpecsrInputError
    naming `where` (e.g. "TUNIT1").
    """
    text = "" if text is None else str(text).strip()
    if not text:
        if default is None:
            raise SpecsrInputError(path, f"no wavelength unit in {where}")
        return default
    unit = _WAVELENGTH_ALIASES.get(text.lower())
    if unit is None:
        try:
            unit = u.Unit(text, parse_strict="raise")
        except ValueError:
            unit = None
    if unit is None or unit.physical_type != "length":
        raise SpecsrInputError(
            path, f"unknown wavelength unit {text!r} in {where} (expected Å, nm or µm)")
    return unit


def flux_scale_to_flux_unit(text, path, where: str, default: u.UnitBase | None = None) -> float:
    """Factor that converts f_λ values in the header unit `text` to FLUX_UNIT.

    Accepts astropy-parsable f_λ units ("erg/s/cm2/Angstrom", "1e-17 erg s-1 cm-2 A-1";
    "ergs" and a bare "A" are read as erg and Å). Empty text uses `default`; other units
    raise SpecsrInputError.
    """
    text = "" if text is None else str(text).strip()
    if not text:
        if default is None:
            raise SpecsrInputError(path, f"no flux unit in {where}")
        return float(default.to(FLUX_UNIT))
    normalised = re.sub(r"\bergs\b", "erg", text)
    normalised = re.sub(r"(?<![A-Za-z])A(?![A-Za-z])", "Angstrom", normalised)
    for candidate in (text, normalised):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                return float(u.Unit(candidate, parse_strict="raise").to(FLUX_UNIT))
        except (ValueError, u.UnitConversionError):
            continue
    raise SpecsrInputError(
        path, f"unknown flux unit {text!r} in {where} (expected erg s-1 cm-2 Å-1 or scaled)")


def header_says_air(header, path) -> bool:
    """True when AIRORVAC, WAVTYPE or CTYPE1 declare air wavelengths; vacuum otherwise."""
    for key in ("AIRORVAC", "WAVTYPE", "CTYPE1"):
        value = str(header.get(key, "")).strip().lower()
        if not value:
            continue
        word = value.split("-")[0]
        if word in _AIR_WORDS:
            return True
        if word in _VACUUM_WORDS or key == "CTYPE1":
            return False
        raise SpecsrInputError(path, f"{key} = {value!r} is neither air nor vacuum")
    return False


def air_to_vacuum(wavelength_air):
    """Vacuum wavelength [Å] from air wavelength [Å].

    Inverse (N. Piskunov, VALD) of the Morton (2000, ApJS 130, 403) air index used by SDSS;
    agrees with `vacuum_to_air` to < 1e-5 Å over 2000 Å - 5 µm.
    """
    wavelength_air = np.asarray(wavelength_air, dtype=np.float64)
    s2 = (1e4 / wavelength_air) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return wavelength_air * n


def vacuum_to_air(wavelength_vacuum):
    """Air wavelength [Å] from vacuum wavelength [Å] (Morton 2000, Eq. 3, IAU standard)."""
    wavelength_vacuum = np.asarray(wavelength_vacuum, dtype=np.float64)
    s2 = (1e4 / wavelength_vacuum) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return wavelength_vacuum / n


def ivar_from_sigma(sigma):
    """Inverse variance from 1-sigma errors; 0 where sigma is <= 0 or not finite."""
    sigma = np.asarray(sigma, dtype=np.float64)
    good = np.isfinite(sigma) & (sigma > 0)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        return np.divide(1.0, sigma**2, out=np.zeros_like(sigma), where=good)


def ivar_from_variance(variance):
    """Inverse variance from variance; 0 where the variance is <= 0 or not finite."""
    variance = np.asarray(variance, dtype=np.float64)
    good = np.isfinite(variance) & (variance > 0)
    with np.errstate(over="ignore", divide="ignore"):
        return np.divide(1.0, variance, out=np.zeros_like(variance), where=good)


def make_spectrum(path, *, wavelength, wavelength_unit, flux, flux_scale, ivar, air=False,
                  bad=None, instrument="", object_id="", meta=None) -> Spectrum:
    """Build a validated Spectrum from raw reader arrays, or raise SpecsrInputError.

    wavelength in `wavelength_unit` (converted to Å; air converted to vacuum when `air`);
    flux * flux_scale is in FLUX_UNIT and ivar is for the unscaled flux (rescaled here);
    `bad` marks pixels the format flags as unusable. Strictly decreasing wavelengths are
    reversed; any other ordering problem is an error naming the file.
    """
    try:
        wave = (np.asarray(wavelength, dtype=np.float64) * wavelength_unit).to_value(u.AA)
        if air:
            wave = air_to_vacuum(wave)
        with np.errstate(over="ignore", under="ignore"):  # extreme values end up masked
            flux = np.asarray(flux, dtype=np.float64) * flux_scale
            ivar = np.asarray(ivar, dtype=np.float64) / flux_scale**2
        mask = np.zeros(flux.shape, bool) if bad is None else np.asarray(bad, bool)
        if wave.ndim == 1 and wave.size > 1 and np.all(np.diff(wave) < 0):
            wave, flux, ivar, mask = wave[::-1], flux[::-1], ivar[::-1], mask[::-1]
        return Spectrum(wave, flux, ivar, mask, instrument=instrument, object_id=object_id,
                        meta=dict(meta or {}))
    except ValueError as exc:
        if isinstance(exc, SpecsrInputError):
            raise
        raise SpecsrInputError(path, str(exc)) from None
