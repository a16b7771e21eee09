"""Predictors: what `specsr infer` calls on each batch, and how `--model` picks one.

A predictor maps a batch of low-res spectra on its instrument grid to per-object columns
built by `measure.columns` from either posterior samples (kind "samples") or a line fit
(kind "fit"). Units: line fluxes in 1e-17 erg s^-1 cm^-2, N2 = log10([NII]6585/Hα) in dex,
redshift dimensionless, spectra in 1e-17 erg s^-1 cm^-2 Å^-1 on the rest-frame TARGET_GRID
placed at the object's redshift (docs/contracts.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

import specsr_keras
from specsr_keras.export.signatures import SIGNATURES_FILE
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure import direct_lowres_fit
from specsr_keras.measure.broadline import ANOMALY_COLUMNS, anomaly_columns
from specsr_keras.measure.columns import fit_columns
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.measure.redshift import lsf_sigma_rows, redshift_guess
from specsr_keras.physics import LINE_REGION_A, LINE_WAVELENGTHS, NII_DOUBLET_RATIO, SPEED_OF_LIGHT_KMS
from specsr_keras.schema import percentile_columns
from specsr_keras.spectral.kernel import binned_gaussian

__all__ = ["BaselinePredictor", "Predictor", "cached_predictor", "empty_outputs", "load_predictor",
           "output_columns"]

# With save_spectra: the window's mean and spread (B, 320) and the redshift placing it (B,).
WINDOW_COLUMNS = ("sr_mean", "sr_std")
SPECTRUM_COLUMNS = (*WINDOW_COLUMNS, "sr_z_place")
DEFAULT_INSTRUMENT = "euclid_nisp_red"


class Predictor(Protocol):
    """What the inference runner needs of a model.

    batch: lowres_flux (B, L) float32 [1e-17 erg/s/cm²/Å] on `instrument`'s grid,
    lowres_ivar (B, L), lowres_mask (B, L) bool (True = bad), z_prior (B,) (NaN = none),
    instrument_id (B,) int (the instrument that observed the row), and optionally
    source_sigma_arcsec (B,) (source size along the dispersion, NaN = unknown), image,
    has_image, log_mstar_catalog. Returns the `output_columns(predictor, ...)` arrays (B,):
    `measure.columns` percentiles, the predictor's `score_columns`, `flags` (QualityFlag
    bits) and, with save_spectra, `sr_mean`, `sr_std` (B, 320) on TARGET_GRID placed at
    `sr_z_place` (B,) (observed wavelength = rest x (1 + sr_z_place)). `samples` None means the
    predictor's default. The same batch, samples and seed give the same output.
    """

    model_id: str
    instrument: str
    kind: str  # "samples" or "fit"
    score_columns: tuple[str, ...]

    def predict(self, batch: dict, *, samples: int | None, seed: int,
                save_spectra: bool) -> dict[str, np.ndarray]: ...


def output_columns(predictor, save_spectra: bool) -> tuple[str, ...]:
    """Names of the per-object arrays `predictor` returns."""
    columns = percentile_columns() + tuple(predictor.score_columns) + ("flags",)
    return columns + (SPECTRUM_COLUMNS if save_spectra else ())


def empty_outputs(predictor, save_spectra: bool) -> dict[str, np.ndarray]:
    """Zero-row predictor outputs (for a chunk whose rows were all quarantined)."""
    out = {name: np.zeros(0) for name in output_columns(predictor, save_spectra)}
    out["flags"] = np.zeros(0, np.int64)
    out.update({name: np.zeros((0, TARGET_GRID.n_pixels), np.float32)
                for name in WINDOW_COLUMNS if save_spectra})
    return out


class BaselinePredictor:
    """The honest baseline: Hα + [NII] fitted directly on the low-res spectrum.

    z_guess is the catalog prior, or `coarse_redshift` of the spectrum where the prior is
    NaN; `direct_lowres_fit` then uses each row's instrument LSF (source size from
    `source_sigma_arcsec`, else the instrument's reference size). Percentiles are the
    fit's Gaussian errors (`measure.fit_columns`); `fit_chi2_dof` is its reduced chi2
    (NaN when the fit failed); `broad_line_*` test for a broad Hα at the fitted z
    (`measure.broadline`). sr_mean is the fitted model (lines + flat continuum) on
    TARGET_GRID at R = 3600; sr_std propagates the line-flux errors only. Deterministic:
    `samples` and `seed` are ignored.
    """

    model_id = "baseline"
    kind = "fit"
    score_columns = ("fit_chi2_dof", *ANOMALY_COLUMNS)
    samples = 1
    version = specsr_keras.__version__

    def __init__(self, instrument: str = DEFAULT_INSTRUMENT):
        self.instrument = get_instrument(instrument).name

    def for_instrument(self, instrument: str) -> BaselinePredictor:
        """The direct fit on `instrument`'s grid."""
        return BaselinePredictor(instrument)

    def fit(self, batch) -> tuple[dict, np.ndarray]:
        """(direct_lowres_fit output, flags (B,)) of a batch; a row with no usable pixel over
        Hα + [NII] (LINE_REGION_A at its z guess) is flagged LINE_NOT_COVERED and not fitted
        (NaN: there is no measurement to report)."""
        edges = get_instrument(self.instrument).bin_edges
        flux = np.asarray(batch["lowres_flux"], np.float64)
        ivar = np.where(batch["lowres_mask"], 0.0, np.asarray(batch["lowres_ivar"], np.float64))
        lsf = lsf_sigma_rows(batch, self.instrument)
        z_guess, flags = redshift_guess(batch, self.instrument, lsf)
        lo, hi = (np.asarray(LINE_REGION_A)[:, None] * (1.0 + z_guess[None, :]))[:, :, None]
        covered = ((edges[None, 1:] > lo) & (edges[None, :-1] < hi) & (ivar > 0)).any(axis=1)
        flags = np.where(covered, flags, flags | QualityFlag.LINE_NOT_COVERED)
        return direct_lowres_fit(edges, flux, np.where(covered[:, None], ivar, 0.0), lsf, z_guess), flags

    def predict(self, batch, *, samples=None, seed=0, save_spectra=False):
        fit, flags = self.fit(batch)
        out = fit_columns(fit, flags)
        out |= anomaly_columns(batch, fit["z"], self.instrument, out["flags"])
        if save_spectra:
            out["sr_mean"], out["sr_std"] = target_grid_model(fit)
            out["sr_z_place"] = np.asarray(fit["z"], np.float64)
        return out


def target_grid_model(fit: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fitted Hα + [NII] + flat continuum on TARGET_GRID at R = 3600, (B, 320) float32 each.

    fit: direct_lowres_fit output. Each line is a Gaussian of the fitted flux, z and σ_v,
    broadened by the R = 3600 LSF, averaged over the observed bins TARGET_GRID.bin_edges
    (1+z); std: line-flux errors propagated (no z, σ_v or continuum error). NaN rows stay NaN.
    """
    opz = (1.0 + fit["z"])[:, None]
    lo, hi = (TARGET_GRID.bin_edges - TARGET_GRID.bin_edges[0])[None, :-1], \
        (TARGET_GRID.bin_edges - TARGET_GRID.bin_edges[0])[None, 1:]  # window coordinates [rest Å]

    def unit_line(rest):  # per observed Å: the rest-frame bin mean / (1 + z)
        sigma = np.hypot(rest * opz * fit["sigma_v_kms"][:, None] / SPEED_OF_LIGHT_KMS,
                         TARGET_GRID.lsf_sigma(rest * opz)) / opz
        centre = np.full_like(sigma, rest - TARGET_GRID.bin_edges[0])
        return np.asarray(keras.ops.convert_to_numpy(binned_gaussian(lo, hi, centre, sigma)), np.float64) / opz

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
    """`generator:<run dir or superres.keras>`: spectra generated from image cutouts alone."""
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
    "saved_model": (lambda m: any((Path(m) / name).is_file() for name in ("saved_model.pb", SIGNATURES_FILE)),
                    _load_saved_model),
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
