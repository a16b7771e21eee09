"""The Python API: load a model once, super-resolve spectra held in memory or run a catalogue.

    import specsr_keras as specsr
    model = specsr.load("saved_models/specsr/11")          # or a training run, or "baseline"
    table = model.super_resolve(spectra, z_prior=[1.21, 1.48])
    table["n2_p50"], table["ha_flux_p16"], table["flags"], table["reason"]
    windows = specsr.super_resolved_spectra(table)       # specutils spectra, observed frame
    model.infer("cat.fits", "results/run1")                # = `specsr infer`, resumable

`spectra` is one spectrum or a list: `specsr_keras.data.records.Spectrum`, a
`specutils.Spectrum` (with an uncertainty; its spectral axis taken as vacuum), a FITS file that
`specsr_keras.data.readers.read_spectra` reads, or a (wavelength, flux, ivar) tuple
(numpy arrays in Å and 1e-17 erg s^-1 cm^-2 Å^-1, or astropy Quantities in any convertible
unit). The returned astropy Table has one row per input spectrum in input order: the
`specsr infer` result columns with units (N2 in dex; docs/scale-out.md has the flags),
`sr_mean` / `sr_std` (320,) [1e-17 erg s^-1 cm^-2 Å^-1] on the rest-frame TARGET_GRID
placed at `sr_z_place` (observed wavelength = rest x (1 + sr_z_place)), and `reason`
("" = used; otherwise the quarantine reason, and NaN values).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table, vstack

from specsr_keras.data.records import Spectrum
from specsr_keras.data.specutils_adapter import from_specutils, is_specutils_spectrum, super_resolved_spectrum
from specsr_keras.inference.catalog import RawRows
from specsr_keras.inference.predictors import cached_predictor
from specsr_keras.inference.runner import InferConfig, predict_rows, resolved_samples, run_inference
from specsr_keras.schema import PERCENTILES, QUANTITIES, QUANTITY_UNITS
from specsr_keras.units import DEX, FLUX_UNIT, IVAR_UNIT, WAVELENGTH_UNIT

__all__ = ["SpecsrModel", "load", "super_resolved_spectra"]


def load(model: str | Path) -> SpecsrModel:
    """The model named as `specsr infer --model` takes it: a SavedModel directory, a training
    run or `.keras` file, "baseline" / "baseline:<instrument>", "generator:<run>"."""
    return SpecsrModel(str(model))


class SpecsrModel:
    """A loaded predictor with its defaults (samples per object, instrument grid)."""

    def __init__(self, model: str):
        self.predictor = cached_predictor(model)
        self.model = model

    @property
    def instrument(self) -> str:
        return self.predictor.instrument

    def super_resolve(self, spectra, z_prior=None, *, log_mstar=None, source_sigma_arcsec=None,
                      samples: int | None = None, seed: int = 0, batch: int = 64) -> Table:
        """One result row per spectrum (see the module doc); z_prior, log_mstar (log10 M*/Msun)
        and source_sigma_arcsec: a scalar or one value per spectrum (NaN = unknown)."""
        records = [_as_spectrum(item) for item in (spectra if isinstance(spectra, list) else [spectra])]
        n = len(records)
        raw = RawRows(
            row=np.arange(n, dtype=np.int64),
            object_id=np.array([r.object_id or str(i) for i, r in enumerate(records)], dtype=str),
            flux=[r.flux for r in records], ivar=[r.ivar for r in records], mask=[r.mask for r in records],
            wavelength=[r.wavelength for r in records], instrument=np.array([r.instrument for r in records], str),
            z_prior=_per_row(z_prior, n), log_mstar_catalog=_per_row(log_mstar, n),
            source_sigma_arcsec=_per_row(source_sigma_arcsec, n))
        config = InferConfig(batch=batch, samples=resolved_samples(self.predictor, samples),
                             save_spectra=True, seed=seed)
        results, quarantine = predict_rows(raw, self.predictor, config)
        for q in QUANTITIES:  # FITS has no dex (RESULT_UNITS); an astropy Table does
            if QUANTITY_UNITS[q] == DEX:
                for p in PERCENTILES:
                    results[f"{q}_{p}"].unit = u.dex
        results["reason"] = np.full(len(results), "", dtype=object)
        if len(quarantine):  # the unusable rows too, with NaN values and their reason
            missing = Table({name: np.full((len(quarantine), *column.shape[1:]),
                                           np.nan if column.dtype.kind == "f" else 0, column.dtype)
                             for name, column in results.columns.items()})
            for name in ("object_id", "row", "reason"):
                missing[name] = quarantine[name].astype(results[name].dtype if name != "reason" else object)
            results = vstack([results, missing], metadata_conflicts="silent")
        results.sort("row")
        results["reason"] = results["reason"].astype(str)
        return results

    def infer(self, catalog, out, *, overwrite: bool = False, workers: int | None = None, **config):
        """`specsr infer CATALOG --model MODEL --out OUT`: InferConfig fields as keywords."""
        settings = replace(InferConfig(), **config)
        return run_inference(catalog, self.model, out, settings, workers=workers, overwrite=overwrite)


def super_resolved_spectra(table: Table) -> list:
    """The super-resolved windows of a `SpecsrModel.super_resolve` table as `specutils.Spectrum`
    objects in observed wavelength, posterior spread as StdDevUncertainty; None for a row
    that was not used (its `reason`)."""
    return [super_resolved_spectrum(row["sr_mean"], row["sr_std"], row["sr_z_place"], str(row["object_id"]))
            if np.isfinite(row["sr_z_place"]) else None for row in table]


def _per_row(values, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    values = np.broadcast_to(np.asarray(values, np.float64), (n,))
    return np.array(values)


def _as_spectrum(item) -> Spectrum:
    """A Spectrum from a Spectrum, a specutils spectrum, a spectrum file, or (wavelength, flux, ivar)."""
    if isinstance(item, Spectrum):
        return item
    if is_specutils_spectrum(item):
        return from_specutils(item)
    if isinstance(item, str | Path):
        from specsr_keras.data.readers import read_spectra

        records, rejects = read_spectra(Path(item))
        if len(records) != 1:
            raise ValueError(f"{item}: holds {len(records)} spectra ({rejects or 'none'}); "
                             "pass them one by one or use SpecsrModel.infer")
        return records[0]
    if isinstance(item, tuple) and len(item) == 3:
        wavelength, flux, ivar = (_in_unit(value, unit) for value, unit in
                                  zip(item, (WAVELENGTH_UNIT, FLUX_UNIT, IVAR_UNIT), strict=True))
        return Spectrum(wavelength, flux, ivar)
    raise TypeError(f"cannot read a spectrum from {type(item).__name__}: give a Spectrum, a "
                    "specutils.Spectrum, a file or a (wavelength, flux, ivar) tuple")


def _in_unit(value, unit) -> np.ndarray:
    if isinstance(value, u.Quantity):
        return value.to_value(unit, equivalencies=u.spectral())
    return np.asarray(value, np.float64)
