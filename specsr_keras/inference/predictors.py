"""Predictors: what `specsr infer` calls on each batch, and how `--model` picks one.

A predictor maps a batch of low-res spectra on its instrument grid to per-object line
measurements with percentiles. Units: line fluxes in 1e-17 erg s^-1 cm^-2, N2 =
log10([NII]6585/Hα) in dex, redshift dimensionless, spectra in 1e-17 erg s^-1 cm^-2 Å^-1
on the rest-frame TARGET_GRID placed at the object's redshift (docs/contracts.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.special import ndtr

import specsr_keras
from specsr_keras.inference.flags import QualityFlag
from specsr_keras.instruments import INSTRUMENT_NAMES, TARGET_GRID, get_instrument
from specsr_keras.measure import N2_PRIOR_RANGE, coarse_redshift, direct_lowres_fit
from specsr_keras.physics import LINE_WAVELENGTHS, NII_DOUBLET_RATIO, SPEED_OF_LIGHT_KMS

__all__ = ["QUANTITIES", "PERCENTILES", "BaselinePredictor", "Predictor", "cached_predictor",
           "empty_outputs", "load_predictor", "output_columns"]

QUANTITIES = ("ha_flux", "nii_6585_flux", "n2", "z")
PERCENTILES = ("p16", "p50", "p84")
SPECTRUM_COLUMNS = ("sr_mean", "sr_std")
DEFAULT_INSTRUMENT = "euclid_nisp_red"
# Reduced chi2 above which a fit is flagged POOR_FIT, and the Hα S/N below LOW_HA_SNR.
POOR_FIT_CHI2_DOF = 3.0
LOW_HA_SNR = 3.0


class Predictor(Protocol):
    """What the inference runner needs of a model.

    batch: lowres_flux (B, L) float32 [1e-17 erg/s/cm²/Å] on `instrument`'s grid,
    lowres_ivar (B, L), lowres_mask (B, L) bool (True = bad), z_prior (B,) (NaN = none),
    instrument_id (B,) int (the instrument that observed the row), and optionally
    source_sigma_arcsec (B,) (source size along the dispersion, NaN = unknown).
    Returns (B,) arrays `<q>_p16/p50/p84` for q in QUANTITIES, `anomaly_score`, `flags`
    (int QualityFlag bits) and, with save_spectra, `sr_mean`, `sr_std` (B, 320).
    The same batch, samples and seed give the same output.
    """

    model_id: str
    instrument: str

    def predict(self, batch: dict, *, samples: int, seed: int,
                save_spectra: bool) -> dict[str, np.ndarray]: ...


def output_columns(save_spectra: bool) -> tuple[str, ...]:
    """Names of the per-object arrays a predictor returns."""
    columns = tuple(f"{q}_{p}" for q in QUANTITIES for p in PERCENTILES)
    columns += ("anomaly_score", "flags")
    return columns + (SPECTRUM_COLUMNS if save_spectra else ())


def empty_outputs(save_spectra: bool) -> dict[str, np.ndarray]:
    """Zero-row predictor outputs (for a chunk whose rows were all quarantined)."""
    out = {name: np.zeros(0) for name in output_columns(save_spectra)}
    out["flags"] = np.zeros(0, np.int64)
    out.update({name: np.zeros((0, TARGET_GRID.n_pixels), np.float32)
                for name in SPECTRUM_COLUMNS if save_spectra})
    return out


class BaselinePredictor:
    """The honest baseline: Hα + [NII] fitted directly on the low-res spectrum.

    z_guess is the catalog prior, or `coarse_redshift` of the spectrum where the prior is
    NaN; `direct_lowres_fit` then uses each row's instrument LSF (source size from
    `source_sigma_arcsec`, else the instrument's reference size). Percentiles are the
    fit's Gaussian 1σ (p50 ± err); anomaly_score is the fit's reduced chi2 (NaN when the
    fit failed). sr_mean is the fitted model (lines + flat continuum) on TARGET_GRID at
    R = 3600; sr_std propagates the line-flux errors only. Deterministic: `samples` and
    `seed` are ignored.
    """

    model_id = "baseline"
    version = specsr_keras.__version__

    def __init__(self, instrument: str = DEFAULT_INSTRUMENT):
        self.instrument = get_instrument(instrument).name

    def predict(self, batch, *, samples=1, seed=0, save_spectra=False):
        edges = get_instrument(self.instrument).bin_edges
        flux = np.asarray(batch["lowres_flux"], np.float64)
        ivar = np.where(batch["lowres_mask"], 0.0, np.asarray(batch["lowres_ivar"], np.float64))
        lsf = self._lsf_sigma(batch)
        z_guess, flags = redshift_guess(batch, self.instrument, lsf)
        fit = direct_lowres_fit(edges, flux, ivar, lsf, z_guess)
        ok = fit["ok"]
        n2_free = fit["n2_unclipped"]
        at_bound = ~((n2_free > N2_PRIOR_RANGE[0]) & (n2_free < N2_PRIOR_RANGE[1]))
        with np.errstate(invalid="ignore"):
            flags[~ok] |= QualityFlag.FIT_FAILED
            flags[ok & at_bound] |= QualityFlag.N2_AT_BOUND
            flags[ok & (fit["ha_snr"] < LOW_HA_SNR)] |= QualityFlag.LOW_HA_SNR
            flags[ok & (fit["chi2_dof"] > POOR_FIT_CHI2_DOF)] |= QualityFlag.POOR_FIT

        out = {"anomaly_score": fit["chi2_dof"], "flags": flags}
        for q in QUANTITIES:
            value, error = fit[q], fit[q + "_err"]
            out.update({f"{q}_p16": value - error, f"{q}_p50": value, f"{q}_p84": value + error})
        if save_spectra:
            out["sr_mean"], out["sr_std"] = target_grid_model(fit)
        return out

    def _lsf_sigma(self, batch) -> np.ndarray:
        return lsf_sigma_rows(batch, self.instrument)


def redshift_guess(batch: dict, instrument: str, lsf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(z (B,), flags (B,) int): the catalog prior, or `coarse_redshift` where it is NaN."""
    z_guess = np.array(batch["z_prior"], np.float64)
    flags = np.zeros(z_guess.shape, np.int64)
    scan = ~np.isfinite(z_guess)
    if scan.any():
        lsf = lsf_sigma_rows(batch, instrument) if lsf is None else lsf
        ivar = np.where(batch["lowres_mask"], 0.0, np.asarray(batch["lowres_ivar"], np.float64))
        found = coarse_redshift(get_instrument(instrument).bin_edges,
                                np.asarray(batch["lowres_flux"], np.float64)[scan], ivar[scan], lsf[scan])
        z_guess[scan] = found["z"]
        flags[scan] |= QualityFlag.Z_FROM_SPECTRUM
        flags[np.flatnonzero(scan)[~found["ok"]]] |= QualityFlag.Z_SCAN_FAILED
    return z_guess, flags


def lsf_sigma_rows(batch: dict, instrument: str) -> np.ndarray:
    """LSF sigma (B, L) [Å] on `instrument`'s grid for each row's instrument and source size."""
    wave = get_instrument(instrument).wavelength
    ids = np.asarray(batch["instrument_id"])
    size = np.asarray(batch.get("source_sigma_arcsec", np.full(ids.shape, np.nan)), float)
    lsf = np.empty((ids.size, wave.size))
    for instrument_id in np.unique(ids):
        rows = ids == instrument_id
        observed_with = get_instrument(INSTRUMENT_NAMES[int(instrument_id)])
        row_size = np.where(np.isfinite(size[rows]), size[rows],
                            observed_with.resolving_power_source_sigma)
        lsf[rows] = observed_with.lsf_sigma(wave[None, :], row_size[:, None])
    return lsf


def target_grid_model(fit: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fitted Hα + [NII] + flat continuum on TARGET_GRID at R = 3600, (B, 320) float32 each.

    fit: direct_lowres_fit output. Each line is a Gaussian of the fitted flux, z and σ_v,
    broadened by the R = 3600 LSF, averaged over the observed bins TARGET_GRID.bin_edges
    (1+z); std: line-flux errors propagated (no z, σ_v or continuum error). NaN rows stay NaN.
    """
    opz = (1.0 + fit["z"])[:, None]
    edges = TARGET_GRID.bin_edges[None, :] * opz  # observed [Å]

    def unit_line(rest):
        centre = rest * opz
        sigma = np.hypot(centre * fit["sigma_v_kms"][:, None] / SPEED_OF_LIGHT_KMS,
                         TARGET_GRID.lsf_sigma(centre))
        cdf = ndtr((edges - centre) / sigma)
        return np.diff(cdf, axis=1) / np.diff(edges, axis=1)

    ha = unit_line(LINE_WAVELENGTHS["halpha"])
    nii = (unit_line(LINE_WAVELENGTHS["nii_6585"])
           + unit_line(LINE_WAVELENGTHS["nii_6550"]) / NII_DOUBLET_RATIO)
    mean = (fit["ha_flux"][:, None] * ha + fit["nii_6585_flux"][:, None] * nii
            + fit["continuum_at_ha"][:, None])
    std = np.hypot(fit["ha_flux_err"][:, None] * ha, fit["nii_6585_flux_err"][:, None] * nii)
    return mean.astype(np.float32), std.astype(np.float32)


# --- loading ---------------------------------------------------------------------------

def _is_baseline(model: str) -> bool:
    return model.partition(":")[0] == "baseline"


def _load_baseline(model: str) -> Predictor:
    """`baseline` (Euclid NISP grid) or `baseline:<instrument>`."""
    return BaselinePredictor(model.partition(":")[2] or DEFAULT_INSTRUMENT)


def _not_available(kind: str) -> Callable[[str], Predictor]:
    def load(model: str) -> Predictor:
        raise ValueError(f"{model}: {kind} models are not available for inference yet; "
                         "use --model baseline")

    return load


def _load_superres(model: str) -> Predictor:
    """A Keras super-resolver: `superres.keras` or a training run directory (input grid: the
    run's first training set's, see `SuperResolutionPredictor.from_path`)."""
    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor

    return SuperResolutionPredictor.from_path(model)


def _load_generator(model: str) -> Predictor:
    """`generator:<run dir or generator.keras>`: spectra generated from image cutouts."""
    from specsr_keras.inference.generator_predictor import ImageSpectrumPredictor

    return ImageSpectrumPredictor.from_path(model.partition(":")[2])


def _load_saved_model(model: str) -> Predictor:
    """An exported SavedModel directory (saved_models/<name>/<version>)."""
    from specsr_keras.export.predictor import SavedModelPredictor

    return SavedModelPredictor(model)


# How a --model value is recognised -> (test, loader); the first matching test wins.
_LOADERS: dict[str, tuple[Callable[[str], bool], Callable[[str], Predictor]]] = {
    "generator": (lambda m: m.startswith("generator:"), _load_generator),
    "baseline": (_is_baseline, _load_baseline),
    "saved_model": (lambda m: (Path(m) / "saved_model.pb").is_file(), _load_saved_model),
    "keras_file": (lambda m: m.endswith(".keras") and Path(m).is_file(), _load_superres),
    "run_dir": (lambda m: (Path(m) / "models" / "superres.keras").is_file(), _load_superres),
}


def load_predictor(model: str) -> Predictor:
    """The predictor named by `model` ("baseline", "baseline:<instrument>", or a path)."""
    for test, load in _LOADERS.values():
        if test(model):
            return load(model)
    raise ValueError(f"unknown model {model!r}: expected 'baseline', 'baseline:<instrument>', "
                     "a SavedModel directory, a .keras file or a training run directory")


@functools.cache
def _cached(key: str) -> Predictor:
    return load_predictor(key)


def cached_predictor(model: str) -> Predictor:
    """load_predictor, once per process per model (Dask workers reuse it across chunks)."""
    path = Path(model)
    return _cached(str(path.resolve()) if path.exists() else model)
