"""Image-only generation: `ImageToSpectrum` samples of the hi-res window -> line measurements.

`ImageSpectrumPredictor` is a runner `Predictor` whose inputs are image cutouts (modality
"image"): it draws K DDIM samples of the hi-res window from each galaxy's image (the
run's `models/generator.keras`, conditioned on the image's shared embedding) and hands
them to `measure_samples`, the same line fitter and percentiles as super-resolution.

Units: the generator works in units of the object's low-res spectrum scale, which an
image alone does not give, so line fluxes and spectra are in those units (flag
NO_FLUX_SCALE on every row); N2 and z do not depend on the scale. The window is placed
at the catalog z prior, as in training; without one it is placed at rest (z = 0), z is
NaN and the row is flagged NO_Z_PRIOR. anomaly_score is the mean per-pixel spread of
the samples over their mean absolute level (how unsure the generator is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.inference.flags import QualityFlag
from specsr_keras.inference.predictors import DEFAULT_INSTRUMENT, PERCENTILES, QUANTITIES
from specsr_keras.inference.superres_predictor import measure_samples

__all__ = ["ImageSpectrumPredictor"]


class ImageSpectrumPredictor:
    """`Predictor` running a Keras ImageToSpectrum on image cutouts (B, 64, 64, 4) [nJy]."""

    version = specsr_keras.__version__
    modality = "image"
    input_keys = ("image", "z_prior")

    def __init__(self, model, model_id: str, *, steps: int = 20, eta: float = 0.0,
                 guidance: float = 1.0):
        self.model = model
        self.model_id = model_id
        self.instrument = DEFAULT_INSTRUMENT  # runner identity only: no spectrum is read
        self.steps, self.eta, self.guidance = steps, eta, guidance
        shape = getattr(getattr(model.embedder, "input", None), "shape", None)
        self.image_shape = tuple(shape[1:]) if shape is not None else (64, 64, 4)

    @classmethod
    def from_path(cls, path, **kwargs):
        """From `generator.keras` or a run directory (its `models/generator.keras`)."""
        import keras

        path = Path(path)
        file = path / "models" / "generator.keras" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no trained image-to-spectrum generator "
                                    f"(expected {file})")
        model = keras.saving.load_model(file, safe_mode=True)
        return cls(model, model_id=f"generator:{path}", **kwargs)

    def sample(self, images: np.ndarray, *, samples: int, seed: int) -> np.ndarray:
        """Samples (B, K, 320) in units of the object's spectrum scale."""
        import keras

        from specsr_keras.models.preprocess import normalise_image

        inputs = {"image": normalise_image(np.asarray(images, np.float32))}
        drawn = self.model.sample(inputs, num_samples=samples, steps=self.steps, eta=self.eta,
                                  guidance=self.guidance, seed=seed)
        return np.asarray(keras.ops.convert_to_numpy(drawn), np.float64)

    def predict(self, batch, *, samples=8, seed=0, save_spectra=False):
        images = np.asarray(batch["image"])
        n = len(images)
        z_prior = np.asarray(batch["z_prior"], np.float64)
        has_z = np.isfinite(z_prior)
        flags = np.full(n, int(QualityFlag.NO_FLUX_SCALE), np.int64)
        flags[~has_z] |= QualityFlag.NO_Z_PRIOR
        if n == 0:
            out = {f"{q}_{p}": np.zeros(0) for q in QUANTITIES for p in PERCENTILES}
            out.update(anomaly_score=np.zeros(0), flags=flags)
            if save_spectra:
                out["sr_mean"] = out["sr_std"] = np.zeros((0, 320), np.float32)
            return out
        drawn = self.sample(images, samples=samples, seed=seed)
        z_place = np.where(has_z, z_prior, 0.0)
        measured = measure_samples(drawn, z_place, np.ones(n))
        flags[measured["fit_ok_fraction"] < 0.5] |= QualityFlag.FIT_FAILED
        out = {f"{q}_{p}": measured[f"{q}_{p}"] for q in QUANTITIES for p in PERCENTILES}
        for p in PERCENTILES:
            out[f"z_{p}"] = np.where(has_z, out[f"z_{p}"], np.nan)
        mean, std = drawn.mean(axis=1), drawn.std(axis=1)
        out["anomaly_score"] = std.mean(axis=1) / np.maximum(np.abs(mean).mean(axis=1), 1e-6)
        out["flags"] = flags
        if save_spectra:
            out["sr_mean"], out["sr_std"] = mean.astype(np.float32), std.astype(np.float32)
        return out
