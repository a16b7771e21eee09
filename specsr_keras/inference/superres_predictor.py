"""`SuperResolutionPredictor`: a Keras `SuperResolver` run on catalogue rows.

Each batch goes through `SuperResolver.generate` (preprocessing, data-consistent posterior
sampling, per-sample line fits; the same function the SavedModel serves) in a compiled
function on noise drawn outside it, then through `measure.sample_columns` (predictive
percentiles and flags). Rows without a z prior get one from the spectrum first
(`measure.redshift_guess`). The image and catalogue-mass modalities are used where the
batch has them ("image", "has_image", "log_mstar_catalog").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import keras
import numpy as np

import specsr_keras
from specsr_keras.backend.compile import compiled
from specsr_keras.measure.broadline import ANOMALY_COLUMNS, anomaly_columns
from specsr_keras.measure.columns import sample_columns
from specsr_keras.measure.redshift import redshift_guess
from specsr_keras.models.preprocessor import OPTIONAL_RAW, SpectrumPreprocessor
from specsr_keras.models.samplers import Sampler

DEFAULT_INSTRUMENT = "euclid_nisp_red"


class SuperResolutionPredictor:
    """`Predictor` of kind "samples" running a Keras SuperResolver."""

    kind = "samples"
    score_columns = ("reconstruction_chi2", *ANOMALY_COLUMNS)
    version = specsr_keras.__version__

    def __init__(self, model: keras.Model, instrument: str, model_id: str, sampler: Sampler | None = None):
        self.model = model
        self.preprocessor = SpectrumPreprocessor(instrument)
        self.instrument = self.preprocessor.instrument.name
        self.model_id = model_id
        self.sampler = sampler or model.sampler
        self._generate = {}  # (samples, raw keys) -> compiled generate

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

    @property
    def samples(self) -> int:
        """Posterior samples per object when the caller does not say (the sampler's)."""
        return self.sampler.samples

    def for_instrument(self, instrument: str) -> SuperResolutionPredictor:
        """This predictor reading spectra on `instrument`'s grid (same model)."""
        retargeted = copy.copy(self)
        retargeted.preprocessor = SpectrumPreprocessor(instrument)
        retargeted.instrument = retargeted.preprocessor.instrument.name
        retargeted._generate = {}
        return retargeted

    def with_sampler(self, sampler: Sampler) -> SuperResolutionPredictor:
        """This predictor sampling with another `Sampler` (same model and grid)."""
        changed = copy.copy(self)
        changed.sampler, changed._generate = sampler, {}
        return changed

    def raw_inputs(self, batch: dict) -> tuple[dict, np.ndarray]:
        """(raw inputs of `SuperResolver.generate`, flags (B,)): z priors filled in."""
        z_guess, flags = redshift_guess(batch, self.instrument)
        raw = {"lowres_flux": np.asarray(batch["lowres_flux"], np.float32),
               "lowres_ivar": np.asarray(batch["lowres_ivar"], np.float32),
               "lowres_mask": np.asarray(batch["lowres_mask"], bool),
               "z_prior": z_guess.astype(np.float32)}
        for key in OPTIONAL_RAW:
            if key in batch:
                raw[key] = np.asarray(batch[key], bool if key == "has_image" else np.float32)
        return raw, flags

    def generate(self, batch: dict, *, samples: int | None = None, seed: int = 0) -> tuple[dict, np.ndarray]:
        """(`SuperResolver.generate` outputs as numpy, flags (B,)) for a batch of rows."""
        samples = samples or self.samples
        sampler = self.sampler.for_instrument(self.instrument)
        raw, flags = self.raw_inputs(batch)
        key = (samples, tuple(sorted(raw)))
        if key not in self._generate:
            self._generate[key] = compiled(lambda raw, noise: self.model.generate(
                raw, samples, sampler, noise=noise, preprocessor=self.preprocessor))
        noise = self.model.noise(len(raw["z_prior"]), samples, sampler, seed, self.preprocessor)
        out = self._generate[key](raw, noise)
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}, flags

    def predict(self, batch, *, samples=None, seed=0, save_spectra=False):
        generated, flags = self.generate(batch, samples=samples, seed=seed)
        out = sample_columns(generated, flags)
        out |= anomaly_columns(batch, out["z_p50"], self.instrument, out["flags"])
        if save_spectra:
            out["sr_mean"] = generated["samples"].mean(axis=1).astype(np.float32)
            out["sr_std"] = generated["samples"].std(axis=1).astype(np.float32)
            out["sr_z_place"] = np.asarray(generated["z_place"], np.float64)
        return out
