"""Super-resolution predictors: diffusion samples of the hi-res window -> line measurements.

`SuperResolutionPredictor` runs a Keras `SuperResolver` (from a `.keras` file or a
training run); the SavedModel predictor (export) produces the same samples in a TF
graph. Both hand the samples to `measure_samples`, which fits every sample with the one
line fitter (`measure.fit_target_grid`, as the low-res baseline uses `fit_halpha_nii`)
and takes percentiles over samples, so uncertainties come from the diffusion spread.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

import specsr_keras
from specsr_keras.inference.flags import QualityFlag
from specsr_keras.inference.predictors import QUANTITIES, redshift_guess
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure import fit_target_grid
from specsr_keras.models.preprocessor import STAGE_KEYS, lowres_inputs
from specsr_keras.resampling import convolve_lsf, resample_flux

# Percentiles reported per quantity (16/50/84 and the 95 % interval).
PERCENTILE_LEVELS = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}
# Noise floor given to the fitter for a (noiseless) sample, as a fraction of the object's scale.
SAMPLE_SIGMA_FRACTION = 0.02


def measure_samples(samples: np.ndarray, z_place: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Percentiles over K samples (B, K, 320) [flux units] of Hα, [NII]6585, N2 and z.

    Each sample is fitted on TARGET_GRID at R=3600 with the window's placement redshift
    as first guess. Returns `<q>_<p>` (B,) for q in QUANTITIES and PERCENTILE_LEVELS, and
    `fit_ok_fraction` (B,).
    """
    b, k, length = samples.shape
    flat = samples.reshape(b * k, length).astype(np.float64)
    sigma = SAMPLE_SIGMA_FRACTION * np.repeat(scale, k)[:, None]
    ivar = np.broadcast_to(1.0 / sigma**2, flat.shape)
    z = np.repeat(z_place, k)
    lsf = TARGET_GRID.lsf_sigma(TARGET_GRID.wavelength)
    fit = fit_target_grid(flat, ivar, z, TARGET_GRID.bin_edges, lsf)
    ok = fit["ok"].reshape(b, k)
    out = {"fit_ok_fraction": ok.mean(axis=1)}
    for q in QUANTITIES:
        values = np.where(ok, fit[q].reshape(b, k), np.nan)
        with np.errstate(all="ignore"):
            levels = np.nanpercentile(values, list(PERCENTILE_LEVELS.values()), axis=1) if ok.any() else None
        for i, name in enumerate(PERCENTILE_LEVELS):
            out[f"{q}_{name}"] = levels[i] if levels is not None else np.full(b, np.nan)
    return out


def forward_model_chi2(sr_mean: np.ndarray, z_place: np.ndarray, batch: dict, instrument_name: str) -> np.ndarray:
    """Reduced chi2 of the low-res data against the SR mean re-observed by the instrument.

    The hi-res mean (B, 320) is convolved with the instrument LSF and resampled onto its
    pixels; pixels outside the window do not count. Large values flag spectra the model
    cannot explain (AGN, contamination, artefacts): the reconstruction part of the anomaly score.
    """
    instrument = get_instrument(instrument_name)
    edges_obs = TARGET_GRID.bin_edges[None, :] * (1.0 + z_place[:, None])
    centres = 0.5 * (edges_obs[:, 1:] + edges_obs[:, :-1])
    lsf_extra = np.sqrt(np.maximum(instrument.lsf_sigma(centres) ** 2 - TARGET_GRID.lsf_sigma(centres) ** 2, 1e-6))
    blurred = np.stack([convolve_lsf(centres[i], sr_mean[i], lsf_extra[i]) for i in range(len(sr_mean))])
    grid = instrument.bin_edges[None, :].repeat(len(sr_mean), 0)
    model, _ = resample_flux(edges_obs, blurred, np.ones_like(blurred), grid)
    inside = (grid[:, :-1] >= edges_obs[:, :1]) & (grid[:, 1:] <= edges_obs[:, -1:])
    ivar = np.where(batch["lowres_mask"] | ~inside, 0.0, batch["lowres_ivar"])
    chi2 = np.sum(ivar * (batch["lowres_flux"] - model) ** 2, axis=1)
    dof = np.maximum(np.sum(ivar > 0, axis=1) - 4, 1)
    return chi2 / dof


class SuperResolutionPredictor:
    """`Predictor` running a Keras SuperResolver: DDIM samples -> fitted line percentiles."""

    version = specsr_keras.__version__

    def __init__(self, model: keras.Model, instrument: str, model_id: str, *, steps: int = 20,
                 eta: float = 0.0, guidance: float = 1.0):
        self.model = model
        self.instrument = get_instrument(instrument).name
        self.model_id = model_id
        self.steps, self.eta, self.guidance = steps, eta, guidance

    @classmethod
    def from_path(cls, path: str | Path, instrument: str = "euclid_nisp_red", **kwargs):
        """From `superres.keras` or a run directory (its `models/superres.keras`)."""
        path = Path(path)
        file = path / "models" / "superres.keras" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no trained super-resolver (expected {file})")
        model = keras.saving.load_model(file, safe_mode=True)
        return cls(model, instrument, model_id=str(path), **kwargs)

    def sample(self, batch: dict, *, samples: int, seed: int) -> tuple[np.ndarray, dict]:
        """Physical-unit samples (B, K, 320) and the model inputs (incl. scale, z_place)."""
        z_place, flags = redshift_guess(batch, self.instrument)
        inputs = lowres_inputs(batch["lowres_flux"], batch["lowres_ivar"], batch["lowres_mask"],
                               get_instrument(self.instrument), z_place)
        inputs["instrument"] = np.asarray(batch["instrument_id"], np.int32)
        model_inputs = {k: inputs[k] for k in STAGE_KEYS["superres"] if k in inputs}
        drawn = self.model.sample(model_inputs, num_samples=samples, steps=self.steps, eta=self.eta,
                                  guidance=self.guidance, seed=seed)
        drawn = keras.ops.convert_to_numpy(drawn) * inputs["scale"][:, None, None]
        inputs["flags"] = flags
        return drawn, inputs

    def predict(self, batch, *, samples=8, seed=0, save_spectra=False):
        drawn, inputs = self.sample(batch, samples=samples, seed=seed)
        out = measure_samples(drawn, inputs["z_place"], inputs["scale"])
        sr_mean, sr_std = drawn.mean(axis=1), drawn.std(axis=1)
        out["anomaly_score"] = forward_model_chi2(sr_mean, inputs["z_place"], batch, self.instrument)
        flags = inputs["flags"]
        flags[out.pop("fit_ok_fraction") < 0.5] |= QualityFlag.FIT_FAILED
        out["flags"] = flags
        if save_spectra:
            out["sr_mean"], out["sr_std"] = sr_mean.astype(np.float32), sr_std.astype(np.float32)
        return out
