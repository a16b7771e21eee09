"""The serving graph: one function per endpoint of `signatures.ENDPOINTS` (TensorFlow backend).

`ServingGraph(superres, contrastive, generator, instrument, sampling)` holds the three
trained models and the export constants (`signatures.SamplingSettings`); each endpoint method takes the
signature's inputs (tf tensors) and returns its output dict. Everything between the
request and the answer runs here: cleaning and flux-conserving resampling of the
low-res spectrum (`models.graph_ops`), normalisation (`models.preprocess`), the
embedding, the sampling loop (`GaussianDiffusion.sample`: DDIM or DPM++2M in a
`keras.ops.fori_loop`, i.e. a tf.while_loop), de-normalisation, the in-graph line measurements and the
re-observation chi2. Only the sampling noise is TensorFlow-specific (per-row stateless
seeds, see `signatures` for the convention).
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from specsr_keras.export.signatures import ANOMALY_WEIGHTS, PERCENTILE_NAMES, SamplingSettings
from specsr_keras.instruments import TARGET_GRID, Instrument
from specsr_keras.models import graph_ops
from specsr_keras.models.preprocess import normalise_image

_LEVELS = [float(p[1:]) for p in PERCENTILE_NAMES]


def row_noise(seeds, shape, offset=0):
    """(B, *shape) standard normal noise, row b from the stateless seed [seeds[b] + offset, 0]."""
    seeds = tf.cast(seeds, tf.int32) + offset

    def draw(seed):
        return tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.constant(0, tf.int32)]))

    return tf.map_fn(draw, seeds, fn_output_signature=tf.TensorSpec(shape, tf.float32))


def _calling(concrete):
    def call(*args):
        return concrete(*args)

    return call


class ServingGraph:
    """Endpoint functions over the trained models for one instrument grid."""

    def __init__(
        self,
        superres,
        contrastive,
        generator,
        instrument: Instrument,
        sampling: SamplingSettings = SamplingSettings(),
    ):
        self.superres, self.contrastive, self.generator = superres, contrastive, generator
        self.instrument = instrument
        self.sampling = sampling
        self._functions = {}

    def trace(self, endpoints: dict) -> dict:
        """Traced `tf.function`s {name: function} for resolved `signatures` endpoints.

        Each endpoint's graph is traced once into a ConcreteFunction and served through a
        thin tf.function wrapper that calls it: saving re-traces every tf.function in the
        SavedModel's save context (a new cache key), which is cheap for the wrapper and
        never happens to a ConcreteFunction. super_resolve is traced first and
        anomaly_score calls it, so the DDIM loop is traced and stored once.
        """
        order = sorted(endpoints, key=lambda name: name != "super_resolve")
        wrappers = {}
        for name in order:
            spec = [
                tf.TensorSpec(io["shape"], io["dtype"], name=key)
                for key, io in endpoints[name]["inputs"].items()
            ]
            concrete = tf.function(getattr(self, name), autograph=False).get_concrete_function(
                *spec
            )
            self._functions[name] = concrete
            wrappers[name] = tf.function(_calling(concrete), input_signature=spec, autograph=False)
            wrappers[name].get_concrete_function()
        return {name: wrappers[name] for name in endpoints}

    # --- sampling --------------------------------------------------------------------
    def draw(self, task, inputs, seeds):
        """K samples per row of a DiffusionTask: (B, K, 320) in the task's output units.

        The same steps as `DiffusionTask.sample` (repeat the conditioning K times, sample
        from x_T, postprocess) with per-row noise in place of one seed per batch.
        """
        settings = self.sampling
        k = settings.samples
        condition, extra = task.conditioning(inputs, training=False)
        if condition is not None:
            condition = ops.repeat(condition, k, axis=0)
        if extra is not None:
            extra = ops.repeat(extra, k, axis=0)
        row_shape = (k, TARGET_GRID.n_pixels, 1)
        noise = tf.reshape(row_noise(seeds, row_shape), (-1, *row_shape[1:]))
        step_noise = None
        if settings.eta:  # SuperResolver.sample draws the per-step noise with seed + 1
            per_row = row_noise(seeds, (settings.steps, *row_shape), offset=1)
            step_noise = tf.reshape(
                tf.transpose(per_row, (1, 0, 2, 3, 4)), (settings.steps, -1, *row_shape[1:])
            )
        x0 = task.diffusion.sample(
            tf.shape(noise),
            condition,
            extra,
            steps=settings.steps,
            eta=settings.eta,
            guidance=settings.guidance,
            sampler=settings.sampler,
            noise=(noise, step_noise),
        )
        x0 = task.postprocess(x0)
        return tf.reshape(x0, (-1, k, TARGET_GRID.n_pixels))

    def _prepare(self, lowres_flux, lowres_ivar, lowres_mask, z_prior):
        z_place = graph_ops.placement_redshift(z_prior, self.instrument)
        inputs = graph_ops.lowres_model_inputs(
            lowres_flux, lowres_ivar, lowres_mask, z_place, self.instrument
        )
        return inputs, z_place

    def _super_resolve(self, lowres_flux, lowres_ivar, lowres_mask, z_prior, seed):
        inputs, z_place = self._prepare(lowres_flux, lowres_ivar, lowres_mask, z_prior)
        model_inputs = {
            k: inputs[k]
            for k in (
                "lowres",
                "lowres_weight",
                "instrument",
                "lowres_on_target",
                "lowres_on_target_weight",
            )
        }
        normalised = self.draw(self.superres, model_inputs, seed)
        scale = inputs["scale"]
        samples = normalised * scale[:, None, None]
        mean, std = ops.mean(samples, axis=1), ops.std(samples, axis=1)
        chi2 = graph_ops.reobserve_chi2(
            mean, z_place, inputs["flux"], inputs["ivar"], self.instrument
        )
        out = {
            "sr_mean": mean,
            "sr_std": std,
            "samples": samples,
            "z_place": z_place,
            "scale": scale,
            "reconstruction_chi2": chi2,
        }
        lines = graph_ops.measure_lines(samples, z_place, scale)
        for name, values in lines.items():
            levels = graph_ops.predictive_percentiles(values, _LEVELS, axis=1)
            for label, value in zip(PERCENTILE_NAMES, levels, strict=True):
                out[f"{name}_{label}"] = value
        return out, inputs

    # --- endpoints -------------------------------------------------------------------
    def super_resolve(self, lowres_flux, lowres_ivar, lowres_mask, z_prior, seed):
        return self._super_resolve(lowres_flux, lowres_ivar, lowres_mask, z_prior, seed)[0]

    def _spectrum_embedding(self, inputs):
        return self.contrastive.embed_spectrum(
            inputs["lowres"], inputs["lowres_weight"], inputs["instrument"]
        )

    def embed_spectrum(self, lowres_flux, lowres_ivar, lowres_mask):
        z = tf.fill(tf.shape(lowres_flux)[:1], 1.0)  # placement does not matter here
        inputs, _ = self._prepare(lowres_flux, lowres_ivar, lowres_mask, z)
        return {"embedding": self._spectrum_embedding(inputs)}

    def _image_embedding(self, image):
        return self.contrastive.embed_image(normalise_image(image))

    def embed_image(self, image):
        return {"embedding": self._image_embedding(image)}

    def spectrum_from_image(self, image, seed):
        drawn = self.draw(self.generator, {"image": normalise_image(image)}, seed)
        return {"mean": ops.mean(drawn, axis=1), "std": ops.std(drawn, axis=1)}

    def anomaly_score(self, lowres_flux, lowres_ivar, lowres_mask, z_prior, seed, image):
        # Calls the traced super_resolve function (one copy of the DDIM loop in the graph).
        super_resolve = self._functions.get("super_resolve", self.super_resolve)
        sr = super_resolve(lowres_flux, lowres_ivar, lowres_mask, z_prior, seed)
        inputs, _ = self._prepare(lowres_flux, lowres_ivar, lowres_mask, z_prior)
        disagreement = graph_ops.cross_modal_disagreement(
            self._image_embedding(image), self._spectrum_embedding(inputs)
        )
        chi2 = sr["reconstruction_chi2"]
        score = ANOMALY_WEIGHTS["disagreement_weight"] * disagreement + ANOMALY_WEIGHTS[
            "reconstruction_weight"
        ] * ops.log(ops.maximum(chi2, 1.0))
        return {
            "score": score,
            "cross_modal_disagreement": disagreement,
            "reconstruction_chi2": chi2,
            "z_place": sr["z_place"],
        }
