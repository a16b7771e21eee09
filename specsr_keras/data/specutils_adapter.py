"""specutils <-> specsr: `Spectrum` from and to `specutils.Spectrum` (specutils >= 2).

    from specsr_keras.data.specutils_adapter import from_specutils, to_specutils
    record = from_specutils(spec)            # any spectral axis / flux unit astropy converts
    spec = to_specutils(record)              # Å, FLUX_UNIT, InverseVariance, mask

specutils carries no air/vacuum flag: a specutils spectral axis is taken as vacuum, as specsr's
grids are (convert air wavelengths first, e.g. with `specutils.utils.wcs_utils.air_to_vac`).
A super-resolved window from `SpecsrModel.super_resolve` comes out as a specutils spectrum with
`super_resolved_spectrum` (observed frame, posterior mean with its spread as StdDevUncertainty).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np

from specsr_keras.data.records import Spectrum, ivar_from_sigma, make_spectrum
from specsr_keras.instruments import TARGET_GRID
from specsr_keras.units import FLUX_UNIT, IVAR_UNIT, WAVELENGTH_UNIT


def is_specutils_spectrum(item) -> bool:
    """True for a specutils spectrum (duck-typed: spectral_axis and flux), without importing specutils."""
    return hasattr(item, "spectral_axis") and hasattr(item, "flux")


def from_specutils(spectrum, *, instrument: str = "", object_id: str = "") -> Spectrum:
    """A specutils spectrum (1-D) -> `Spectrum` in specsr's units.

    The spectral axis may be in any spectral unit (wavelength, frequency, energy) and either
    order (specutils itself refuses a non-monotonic axis); flux in any flux-density unit (per
    Å, per Hz, Jy, ...); the uncertainty (required) as StdDev, Variance or InverseVariance. Pixels with a
    zero or non-finite uncertainty and masked pixels become masked. Raises ValueError
    naming what is missing or wrong.
    """
    from astropy.nddata import StdDevUncertainty

    if spectrum.flux.ndim != 1:
        raise ValueError(f"one spectrum at a time: flux has shape {spectrum.flux.shape}")
    if spectrum.uncertainty is None:
        raise ValueError("the specutils spectrum has no uncertainty: specsr needs each pixel's noise (ivar)")
    if spectrum.flux.unit.physical_type == "dimensionless":
        raise ValueError(f"flux unit {spectrum.flux.unit!r} is not a flux density (specsr needs calibrated flux)")
    wave = spectrum.spectral_axis.to(WAVELENGTH_UNIT, equivalencies=u.spectral())
    density = u.spectral_density(wave)
    flux = spectrum.flux.to_value(FLUX_UNIT, equivalencies=density)
    with np.errstate(divide="ignore", invalid="ignore"):  # ivar 0 (a bad pixel) is an infinite std
        std = spectrum.uncertainty.represent_as(StdDevUncertainty).quantity.to_value(FLUX_UNIT, equivalencies=density)
    meta = dict(spectrum.meta or {})
    # make_spectrum reverses a frequency axis (decreasing in wavelength), as for the file readers
    return make_spectrum("specutils spectrum", wavelength=wave.value, wavelength_unit=WAVELENGTH_UNIT, flux=flux,
                         flux_scale=1.0, ivar=ivar_from_sigma(std), bad=spectrum.mask, instrument=instrument,
                         object_id=object_id or str(meta.get("object_id", "")), meta=meta)


def to_specutils(spectrum: Spectrum):
    """`Spectrum` -> `specutils.Spectrum` (Å, FLUX_UNIT, InverseVariance uncertainty, mask)."""
    from astropy.nddata import InverseVariance
    from specutils import Spectrum as SpecutilsSpectrum

    meta = {**spectrum.meta, "object_id": spectrum.object_id, "instrument": spectrum.instrument}
    return SpecutilsSpectrum(spectral_axis=spectrum.wavelength * WAVELENGTH_UNIT, flux=spectrum.flux * FLUX_UNIT,
                             uncertainty=InverseVariance(spectrum.ivar * IVAR_UNIT), mask=spectrum.mask.copy(),
                             meta=meta)


def super_resolved_spectrum(sr_mean, sr_std, z_place: float, object_id: str = ""):
    """A super-resolved window (`sr_mean`, `sr_std` (320,) [FLUX_UNIT] on the rest-frame
    TARGET_GRID placed at z_place) -> `specutils.Spectrum` in observed wavelength
    (rest x (1 + z_place)) with the posterior spread as StdDevUncertainty; z_place must be finite."""
    from astropy.nddata import StdDevUncertainty
    from specutils import Spectrum as SpecutilsSpectrum

    if not np.isfinite(z_place):
        raise ValueError(f"{object_id or 'row'}: no super-resolved window (sr_z_place is NaN: the row was not used)")
    observed = TARGET_GRID.wavelength * (1.0 + float(z_place)) * WAVELENGTH_UNIT
    return SpecutilsSpectrum(spectral_axis=observed, flux=np.asarray(sr_mean, np.float64) * FLUX_UNIT,
                             uncertainty=StdDevUncertainty(np.asarray(sr_std, np.float64) * FLUX_UNIT),
                             meta={"object_id": object_id, "z_place": float(z_place),
                                   "resolving_power": TARGET_GRID.resolving_power})
