"""`SavedModelPredictor`: the `Predictor` of `specsr infer` running an exported SavedModel.

Loads `saved_models/<name>/<version>/` once (`tf.saved_model.load`) and calls its
`super_resolve` signature per batch: the preprocessing, the DDIM sampling and the
re-observation chi2 run in the graph. As the Keras `SuperResolutionPredictor` does, the
returned samples are then fitted with the one line fitter (`measure_samples`) for the
same percentiles, so `specsr infer` numbers do not depend on the fast in-graph
estimator; `anomaly_score` is the graph's `reconstruction_chi2` (the same quantity as
the Keras predictor's `forward_model_chi2`).

Rows without a z prior get `redshift_guess` (coarse z from the spectrum) first, as in
the Keras predictor. Seeds: row b of a batch is sampled with seed `seed + b`. The
number of samples is fixed at export (`--samples`); a call asking for fewer uses the
first ones, more is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.export.client import load_signatures
from specsr_keras.inference.flags import QualityFlag
from specsr_keras.inference.predictors import redshift_guess
from specsr_keras.inference.superres_predictor import measure_samples
from specsr_keras.instruments import get_instrument

_SEED_MODULUS = 2**31 - 1


class SavedModelPredictor:
    """`Predictor` over an exported SavedModel directory (holding saved_model.pb)."""

    version = specsr_keras.__version__

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise FileNotFoundError(f"{self.path}: no saved_model.pb")
        self.signatures = load_signatures(self.path)
        meta = self.signatures["metadata"]
        self.instrument = meta["instrument"]["instrument"]
        self.samples = int(meta["samples"])
        self.model_id = f"savedmodel:{meta['name']}/{meta['version']}"
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))
        self._super_resolve = self._loaded.signatures["super_resolve"]

    def call_graph(self, batch: dict, z_prior: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """The super_resolve outputs (numpy) for a batch with z priors filled in."""
        tf = self._tf
        n = len(z_prior)
        seeds = (int(seed) + np.arange(n)) % _SEED_MODULUS
        feed = {
            "lowres_flux": np.asarray(batch["lowres_flux"], np.float32),
            "lowres_ivar": np.asarray(batch["lowres_ivar"], np.float32),
            "lowres_mask": np.asarray(batch["lowres_mask"], np.float32),
            "z_prior": np.asarray(z_prior, np.float32),
            "seed": seeds.astype(np.int32),
        }
        out = self._super_resolve(**{k: tf.constant(v) for k, v in feed.items()})
        return {k: v.numpy() for k, v in out.items()}

    def for_instrument(self, instrument: str) -> SavedModelPredictor:
        """Itself if exported for `instrument` (its grid is fixed in the graph), else an error."""
        if get_instrument(instrument).name != self.instrument:
            raise ValueError(f"{self.path} is exported for {self.instrument}, not {instrument}: "
                             "use the Keras run (saved_models/<name>/run) or export for that instrument")
        return self

    def predict(self, batch, *, samples=16, seed=0, save_spectra=False):
        if samples > self.samples:
            raise ValueError(
                f"{self.path} draws {self.samples} samples per object; ask for at most "
                f"that many or re-export with --samples {samples}"
            )
        z_guess, flags = redshift_guess(batch, self.instrument)
        graph = self.call_graph(batch, z_guess, seed)
        drawn = graph["samples"][:, :samples].astype(np.float64)
        out = measure_samples(
            drawn, graph["z_place"].astype(np.float64), graph["scale"].astype(np.float64)
        )
        out["anomaly_score"] = graph["reconstruction_chi2"].astype(np.float64)
        flags[out.pop("fit_ok_fraction") < 0.5] |= QualityFlag.FIT_FAILED
        out["flags"] = flags
        if save_spectra:
            out["sr_mean"] = drawn.mean(axis=1).astype(np.float32)
            out["sr_std"] = drawn.std(axis=1).astype(np.float32)
        return out


def load_saved_model_predictor(model: str) -> SavedModelPredictor:
    """`_LOADERS` entry: a directory holding saved_model.pb."""
    return SavedModelPredictor(model)
