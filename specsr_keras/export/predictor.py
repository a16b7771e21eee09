"""`SavedModelPredictor`: the `Predictor` of `specsr infer` running an exported SavedModel.

Loads `saved_models/<name>/<version>/` once (`tf.saved_model.load`) and calls its
`super_resolve` signature per batch: preprocessing, data-consistent posterior sampling and
the per-sample line fits run in the graph (`SuperResolver.generate`), and the columns are
built from its per-sample outputs by `measure.sample_columns`, the same builder as for a
Keras run; so `specsr infer` and TF Serving give the same numbers for every object.

Rows without a z prior get `redshift_guess` (coarse z from the spectrum) first, as in
the Keras predictor. Seeds: row b of a batch is sampled with seed `seed + b`. The number
of samples K is fixed at export; a call asking for another number is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.export.client import check_export_files, load_signatures
from specsr_keras.instruments import get_instrument
from specsr_keras.measure.broadline import ANOMALY_COLUMNS, anomaly_columns
from specsr_keras.measure.columns import sample_columns
from specsr_keras.measure.redshift import redshift_guess

_SEED_MODULUS = 2**31 - 1


class SavedModelPredictor:
    """`Predictor` of kind "samples" over an exported SavedModel directory (holding saved_model.pb)."""

    kind = "samples"
    score_columns = ("reconstruction_chi2", *ANOMALY_COLUMNS)
    version = specsr_keras.__version__

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = Path(path)
        check_export_files(self.path)
        self.signatures = load_signatures(self.path)
        try:
            meta = self.signatures["metadata"]
            self.instrument = meta["instrument"]["instrument"]
            self.samples = int(meta["samples"])
            self.model_id = f"savedmodel:{meta['name']}/{meta['version']}"
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: signatures.json lacks or garbles metadata {exc}; "
                             "re-export with `specsr export`") from None
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(self.path))
            self._super_resolve = self._loaded.signatures["super_resolve"]
        except Exception as exc:  # noqa: BLE001 - TF raises many kinds for a damaged directory
            detail = " ".join(str(exc).split())[:200]
            raise ValueError(f"{self.path}: not a loadable SavedModel ({type(exc).__name__}: {detail}); "
                             "re-export it with `specsr export`") from None

    def call_graph(self, batch: dict, z_prior: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """The super_resolve outputs (numpy) for a batch with z priors filled in."""
        tf = self._tf
        n = len(z_prior)
        seeds = (int(seed) + np.arange(n)) % _SEED_MODULUS
        missing = np.full(n, np.nan, np.float32)
        feed = {
            "lowres_flux": np.asarray(batch["lowres_flux"], np.float32),
            "lowres_ivar": np.asarray(batch["lowres_ivar"], np.float32),
            "lowres_mask": np.asarray(batch["lowres_mask"], np.float32),
            "z_prior": np.asarray(z_prior, np.float32),
            "source_sigma_arcsec": np.asarray(batch.get("source_sigma_arcsec", missing), np.float32),
            "log_mstar": np.asarray(batch.get("log_mstar_catalog", missing), np.float32),
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

    def predict(self, batch, *, samples=None, seed=0, save_spectra=False):
        if samples not in (None, self.samples):
            raise ValueError(f"{self.path} draws {self.samples} samples per object (fixed at export); "
                             f"leave --samples out or re-export with --samples {samples}")
        z_guess, flags = redshift_guess(batch, self.instrument)
        graph = self.call_graph(batch, z_guess, seed)
        out = sample_columns(graph, flags)
        out |= anomaly_columns(batch, out["z_p50"], self.instrument, out["flags"])
        if save_spectra:
            out["sr_mean"], out["sr_std"] = graph["sr_mean"], graph["sr_std"]
            out["sr_z_place"] = np.asarray(graph["z_place"], np.float64)
        return out
