"""Image-only generation: the super-resolver's prior given an image -> line measurements.

`ImageSpectrumPredictor` is a runner `Predictor` whose inputs are image cutouts (modality
"image"): it draws K samples of the hi-res window from each galaxy's image with
`SuperResolver.generate_from_image` (the prior given the image embedding, its amplitude,
z and, where the catalogue has one (column log_mstar_catalog), a stellar mass; no spectrum) and builds the columns
with `measure.sample_columns`, as for super-resolution.

Units: without a spectrum there is no flux scale, so line fluxes and spectra are in units
of the object's (unknown) low-res scale (flag NO_FLUX_SCALE on every row); N2 and z do not
depend on it. The window is placed at the catalog z prior; without one at the middle of
the Euclid band, z is NaN and the row is flagged NO_Z_PRIOR. `sample_spread` is the mean
per-pixel spread of the samples over their mean absolute level (how unsure the prior is).
"""

from __future__ import annotations

import numpy as np

import specsr_keras
from specsr_keras.backend.compile import compiled
from specsr_keras.instruments import get_instrument
from specsr_keras.measure.columns import sample_columns
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.spectral.window import placement_redshift

__all__ = ["ImageSpectrumPredictor"]


class ImageSpectrumPredictor:
    """`Predictor` of kind "samples" on image cutouts (B, 64, 64, 4) [nJy]."""

    kind = "samples"
    score_columns = ("sample_spread",)
    version = specsr_keras.__version__
    modality = "image"
    input_keys = ("image", "z_prior", "log_mstar_catalog")
    image_shape = (64, 64, 4)
    instrument = "euclid_nisp_red"  # runner identity only: no spectrum is read

    def __init__(self, model, model_id: str):
        self.model = model
        self.model_id = model_id
        self.sampler = model.sampler
        self._generate = {}

    @classmethod
    def from_path(cls, path):
        """From a run directory (its `models/superres.keras`) or a `.keras` file."""
        from specsr_keras.inference.superres_predictor import SuperResolutionPredictor

        keras_predictor = SuperResolutionPredictor.from_path(path)
        return cls(keras_predictor.model, model_id=f"generator:{path}")

    @property
    def samples(self) -> int:
        return self.sampler.samples

    def predict(self, batch, *, samples=None, seed=0, save_spectra=False):
        samples = samples or self.samples
        images = np.asarray(batch["image"], np.float32)
        z_prior = np.asarray(batch["z_prior"], np.float64)
        mass = np.asarray(batch.get("log_mstar_catalog", np.full(len(images), np.nan)), np.float32)
        has_z = np.isfinite(z_prior)
        flags = np.full(len(images), int(QualityFlag.NO_FLUX_SCALE), np.int64)
        flags[~has_z] |= QualityFlag.NO_Z_PRIOR
        import keras

        z_place = keras.ops.convert_to_numpy(placement_redshift(z_prior, get_instrument(self.instrument)))
        if samples not in self._generate:
            self._generate[samples] = compiled(lambda image, z, mass, noise: self.model.generate_from_image(
                image, z, mass, samples, self.sampler, noise=noise))
        noise = self.model.noise(len(images), samples, self.sampler.replace(data_consistency=False), seed)
        generated = self._generate[samples](images, z_place, mass, noise)
        out = {k: keras.ops.convert_to_numpy(v) for k, v in generated.items()}
        drawn = out["samples"]
        out.update(reconstruction_chi2=np.full(len(images), np.nan), line_pixels=np.ones(len(images)))
        columns = sample_columns(out, flags)
        for name in [c for c in columns if c.startswith("z_p")]:
            columns[name] = np.where(has_z, columns[name], np.nan)
        mean, std = drawn.mean(axis=1), drawn.std(axis=1)
        columns["sample_spread"] = std.mean(axis=1) / np.maximum(np.abs(mean).mean(axis=1), 1e-6)
        del columns["reconstruction_chi2"]
        if save_spectra:
            columns["sr_mean"], columns["sr_std"] = mean.astype(np.float32), std.astype(np.float32)
            columns["sr_z_place"] = np.asarray(z_place, np.float64)
        return columns
