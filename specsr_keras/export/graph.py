"""The serving graph: one function per endpoint of `signatures.ENDPOINTS` (TensorFlow backend).

`ServingGraph(superres, contrastive, instrument, sampler)` wraps the trained models; each
endpoint takes the signature's inputs (tf tensors) and returns its output dict. The
super_resolve endpoint *is* `SuperResolver.generate` (preprocessing, data-consistent
posterior sampling, per-sample line fits: the code `specsr infer` runs) plus the
predictive-percentile columns of `spectral.intervals`. Only the sampling noise is
TensorFlow-specific: per-row stateless seeds (see `signatures`), so a row's answer
depends on its own seed, not on its batch neighbours.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from specsr_keras.export.signatures import ANOMALY_WEIGHTS, PERCENTILE_NAMES, SAMPLE_QUANTITIES
from specsr_keras.instruments import Instrument
from specsr_keras.models.preprocessor import SpectrumPreprocessor
from specsr_keras.models.samplers import Sampler
from specsr_keras.spectral.intervals import predictive_percentiles

_LEVELS = [float(p[1:].replace("_", ".")) for p in PERCENTILE_NAMES]


def row_noise(seeds, shape, offset=0):
    """(B, *shape) standard normal noise, row b from the stateless seed [seeds[b] + offset, 0]."""
    seeds = tf.cast(seeds, tf.int32) + offset

    def draw(seed):
        return tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.constant(0, tf.int32)]))

    return tf.map_fn(draw, seeds, fn_output_signature=tf.TensorSpec(shape, tf.float32))


def sampler_noise(seeds, sampler: Sampler, samples: int, sample_shape, observed: int) -> dict:
    """The noise `sampler.run` reads for K = `samples` draws of each row, row b's from its seed
    (noise kind i uses seed[b] + i): arrays of (B K, ...) like `Sampler.draw_noise`."""
    noise = {}
    for offset, (name, shape) in enumerate(sampler.noise_shapes(sample_shape, observed).items()):
        per_row = row_noise(seeds, (samples, *shape), offset)
        noise[name] = tf.reshape(per_row, (-1, *shape))
    return noise


def _calling(concrete):
    def call(*args):
        return concrete(*args)

    return call


def percentile_columns(values: dict) -> dict:
    """`<q>_<p>` (B,) from per-sample values (B, K) of SAMPLE_QUANTITIES and "ok"."""
    out = {}
    for name in SAMPLE_QUANTITIES:
        levels = predictive_percentiles(values[name], _LEVELS, values["ok"] > 0)
        out.update({f"{name}_{label}": level for label, level in zip(PERCENTILE_NAMES, levels, strict=True)})
    return out


class ServingGraph:
    """Endpoint functions over the trained models for one instrument grid."""

    def __init__(self, superres, contrastive, instrument: Instrument, sampler: Sampler):
        self.superres, self.contrastive = superres, contrastive
        self.preprocessor = SpectrumPreprocessor(instrument.name)
        self.sampler = sampler
        self._functions = {}

    def trace(self, endpoints: dict) -> dict:
        """Traced `tf.function`s {name: function} for resolved `signatures` endpoints.

        Each endpoint's graph is traced once into a ConcreteFunction and served through a
        thin tf.function wrapper that calls it: saving re-traces every tf.function in the
        SavedModel's save context (a new cache key), which is cheap for the wrapper and
        never happens to a ConcreteFunction. super_resolve is traced first and
        anomaly_score calls it, so the sampling loop is traced and stored once.
        """
        order = sorted(endpoints, key=lambda name: name != "super_resolve")
        wrappers = {}
        for name in order:
            spec = [tf.TensorSpec(io["shape"], io["dtype"], name=key) for key, io in endpoints[name]["inputs"].items()]
            concrete = tf.function(getattr(self, name), autograph=False).get_concrete_function(*spec)
            self._functions[name] = concrete
            wrappers[name] = tf.function(_calling(concrete), input_signature=spec, autograph=False)
            wrappers[name].get_concrete_function()
        return {name: wrappers[name] for name in endpoints}

    def noise(self, seeds, observed: int):
        return sampler_noise(seeds, self.sampler, self.sampler.samples, self.superres.denoiser.sample_shape, observed)

    # --- endpoints -------------------------------------------------------------------
    def super_resolve(self, lowres_flux, lowres_ivar, lowres_mask, z_prior, source_sigma_arcsec, log_mstar, seed):
        raw = {"lowres_flux": lowres_flux, "lowres_ivar": lowres_ivar, "lowres_mask": lowres_mask,
               "z_prior": z_prior, "source_sigma_arcsec": source_sigma_arcsec, "log_mstar_catalog": log_mstar}
        out = self.superres.generate(raw, self.sampler.samples, self.sampler,
                                     noise=self.noise(seed, self.preprocessor.observed_pixels),
                                     preprocessor=self.preprocessor)
        samples = out["samples"]
        out.update(percentile_columns(out))
        out.update(sr_mean=ops.mean(samples, axis=1), sr_std=ops.std(samples, axis=1))
        return out

    def _spectrum_embedding(self, lowres_flux, lowres_ivar, lowres_mask):
        z = tf.fill(tf.shape(lowres_flux)[:1], 1.0)  # placement does not matter here
        inputs, _ = self.preprocessor({"lowres_flux": lowres_flux, "lowres_ivar": lowres_ivar,
                                       "lowres_mask": lowres_mask, "z_prior": z})
        return self.superres.embed_spectrum(inputs)

    def embed_spectrum(self, lowres_flux, lowres_ivar, lowres_mask):
        return {"embedding": self._spectrum_embedding(lowres_flux, lowres_ivar, lowres_mask)}

    def _image_embedding(self, image):
        from specsr_keras.models.preprocessor import image_inputs

        return self.superres.embed_image(image_inputs(image))

    def embed_image(self, image):
        return {"embedding": self._image_embedding(image)}

    def spectrum_from_image(self, image, z_prior, log_mstar, seed):
        out = self.superres.generate_from_image(image, z_prior, log_mstar, self.sampler.samples, self.sampler,
                                                noise=self.noise(seed, 0))
        samples = out["samples"]
        columns = percentile_columns(out)
        return {"mean": ops.mean(samples, axis=1), "std": ops.std(samples, axis=1), "samples": samples,
                **{k: v for k, v in columns.items() if k.startswith(("n2_", "z_"))}}

    def anomaly_score(self, lowres_flux, lowres_ivar, lowres_mask, z_prior, source_sigma_arcsec, log_mstar, seed,
                      image):
        # Calls the traced super_resolve function (one copy of the sampling loop in the graph).
        super_resolve = self._functions.get("super_resolve", self.super_resolve)
        sr = super_resolve(lowres_flux, lowres_ivar, lowres_mask, z_prior, source_sigma_arcsec, log_mstar, seed)
        image_embedding = self._image_embedding(image)
        spectrum_embedding = self._spectrum_embedding(lowres_flux, lowres_ivar, lowres_mask)
        dot = ops.sum(image_embedding * spectrum_embedding, axis=-1)
        disagreement = 1.0 - dot
        chi2 = sr["reconstruction_chi2"]
        score = ANOMALY_WEIGHTS["disagreement_weight"] * disagreement + ANOMALY_WEIGHTS[
            "reconstruction_weight"] * ops.log(ops.maximum(chi2, 1.0))
        return {"score": score, "cross_modal_disagreement": disagreement, "reconstruction_chi2": chi2,
                "z_place": sr["z_place"]}
