"""Super-resolution predictors: diffusion samples of the hi-res window -> line measurements.

`SuperResolutionPredictor` runs a Keras `SuperResolver` (from a `.keras` file or a
training run); the SavedModel predictor (export) produces the same samples in a TF
graph. Both hand the samples to `measure_samples`, which fits every sample with the one
line fitter (`measure.fit_target_grid`, as the low-res baseline uses `fit_halpha_nii`)
and takes predictive percentiles over samples (`measure.intervals`: the percentiles of a new
draw, corrected for the finite K), so uncertainties come from the diffusion spread.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import keras
import numpy as np

import specsr_keras
from specsr_keras.inference.flags import QualityFlag
from specsr_keras.inference.predictors import DEFAULT_INSTRUMENT, QUANTITIES, redshift_guess
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure import fit_target_grid
from specsr_keras.measure.intervals import predictive_percentiles
from specsr_keras.models.diffusion import as_tensors, denoiser_input_shape
from specsr_keras.models.preprocessor import STAGE_KEYS, lowres_inputs
from specsr_keras.resampling import convolve_lsf, resample_flux

# Predictive percentiles reported per quantity (16/50/84 and the 95 % interval).
PERCENTILE_LEVELS = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}
# Noise floor given to the fitter for a (noiseless) sample, as a fraction of the object's scale.
SAMPLE_SIGMA_FRACTION = 0.02


def measure_samples(samples: np.ndarray, z_place: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Predictive percentiles from K samples (B, K, 320) [flux units] of Hα, [NII]6585, N2 and z.

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
        levels = predictive_percentiles(values, PERCENTILE_LEVELS.values(), axis=1)
        out.update({f"{q}_{name}": level for name, level in zip(PERCENTILE_LEVELS, levels, strict=True)})
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


def compiled(function):
    """`function` of backend tensors, compiled once per input shape: `jax.jit` under JAX, a
    `tf.function` under TensorFlow (plain graph: on CPU faster here than XLA, which takes
    ~10 s to compile the sampling loop), unchanged on other backends. Model variables are
    read when it is traced, so compile after training."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    return function


class SuperResolutionPredictor:
    """`Predictor` running a Keras SuperResolver: diffusion samples -> fitted line percentiles.

    Sampling (`sampler` "ddim" or "dpm++2m", see `models.diffusion`) runs in a compiled
    function (`compiled`) on noise drawn outside it, so a seed gives the samples that
    `SuperResolver.sample(..., seed=seed)` draws eagerly, ~4x faster (TF) and without
    re-tracing per batch (JAX); benchmarks/bench_roofline.py measures it. Default: DDIM with
    10 steps, which for the shipped model is as accurate as 20 steps or DPM++2M and the best
    calibrated (benchmarks/README.md, "Sampler and step count").
    """

    version = specsr_keras.__version__

    def __init__(self, model: keras.Model, instrument: str, model_id: str, *, steps: int = 10,
                 eta: float = 0.0, guidance: float = 1.0, sampler: str = "ddim"):
        self.model = model
        self.instrument = get_instrument(instrument).name
        self.model_id = model_id
        self.steps, self.eta, self.guidance, self.sampler = steps, eta, guidance, sampler
        self._draw = {}  # samples per object -> compiled sampling function

    @classmethod
    def from_path(cls, path: str | Path, instrument: str | None = None, **kwargs):
        """From `superres.keras` or a run directory (its `models/superres.keras`).

        instrument: the grid of the input spectra; default: the run's first training set's
        (run.json "instrument"), else DEFAULT_INSTRUMENT.
        """
        path = Path(path)
        file = path / "models" / "superres.keras" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no trained super-resolver (expected {file})")
        if instrument is None:
            run = path / "run.json"
            instrument = (json.loads(run.read_text()).get("instrument") if run.is_file() else None) \
                or DEFAULT_INSTRUMENT
        model = keras.saving.load_model(file, safe_mode=True)
        return cls(model, instrument, model_id=str(path), **kwargs)

    def for_instrument(self, instrument: str) -> SuperResolutionPredictor:
        """This predictor reading spectra on `instrument`'s grid (same model and compiled sampler)."""
        retargeted = copy.copy(self)
        retargeted.instrument = get_instrument(instrument).name
        return retargeted

    def sample(self, batch: dict, *, samples: int, seed: int) -> tuple[np.ndarray, dict]:
        """Physical-unit samples (B, K, 320) and the model inputs (incl. scale, z_place)."""
        z_place, flags = redshift_guess(batch, self.instrument)
        inputs = lowres_inputs(batch["lowres_flux"], batch["lowres_ivar"], batch["lowres_mask"],
                               get_instrument(self.instrument), z_place)
        inputs["instrument"] = np.asarray(batch["instrument_id"], np.int32)
        model_inputs = {k: inputs[k] for k in STAGE_KEYS["superres"] if k in inputs}
        drawn = keras.ops.convert_to_numpy(self.draw(model_inputs, samples, seed))
        inputs["flags"] = flags
        return drawn * inputs["scale"][:, None, None], inputs

    def draw(self, model_inputs: dict, samples: int, seed: int):
        """`SuperResolver.sample` (B, K, 320) in normalised units, sampled in a compiled function."""
        shape = (len(model_inputs["instrument"]) * samples, *denoiser_input_shape(self.model.denoiser, "x"))
        noise = self.model.diffusion.draw_noise(shape, self.steps, self.eta, seed)
        if samples not in self._draw:
            self._draw[samples] = compiled(
                lambda inputs, noise: self.model.sample(inputs, num_samples=samples, steps=self.steps, eta=self.eta,
                                                        guidance=self.guidance, sampler=self.sampler, noise=noise))
        return self._draw[samples](as_tensors(model_inputs), noise)

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
