"""`SuperResolver`: conditional 1D diffusion from a grism spectrum to the hi-res window.

Conditioning (see docs/contracts.md for the grids):
(a) input channels: the low-res spectrum resampled onto TARGET_GRID (rest frame, via
    the redshift prior) and its weight, concatenated to the noisy hi-res sample;
(b) the low-res spectrum's shared embedding, either given as "embedding" or computed
    from "lowres"/"lowres_weight" (ENCODER_GRID) by `embedder` (spectrum encoder +
    projection head, e.g. `ContrastiveAligner.spectrum_embedder()`; freeze it with
    `model.embedder.trainable = False` to keep the shared space fixed);
(c) an instrument-id embedding.
(b)+(c) form the condition vector (FiLM); classifier-free guidance drops it together
with the low-res channels, so the null branch is a prior over hi-res spectra.

Inputs (dict), all spectra normalised per object by the *low-res* scale
(`preprocess.py`):
    "lowres_on_target", "lowres_on_target_weight": (B, 320) float
    "lowres", "lowres_weight": (B, 512) float  (not needed if "embedding" is given)
    "embedding": (B, embedding_dim) float       (optional)
    "instrument": (B,) int
    "hires", "hires_weight": (B, 320) float     (training only; weight 0 = masked)
Inside, spectra are divided by `target_scale` (hi-res lines are much taller than
their low-res image; a scale > 1 keeps the diffusion's data range near unit variance).
`sample(...)` returns (B, K, 320) in the caller's normalised units.
"""

import keras
from keras import ops

from specsr_keras.models.diffusion import HiresSpectrumTask
from specsr_keras.models.preprocess import masked_flux

register = keras.saving.register_keras_serializable(package="specsr")


def sample_mean_std(samples):
    """Per-pixel mean and standard deviation over the sample axis of (B, K, L)."""
    return ops.mean(samples, axis=1), ops.std(samples, axis=1)


@register
class SuperResolver(HiresSpectrumTask):
    _nested = ("denoiser", "embedder")

    def __init__(
        self,
        denoiser,
        embedder=None,
        embedding_dim=32,
        num_instruments=6,
        instrument_dim=8,
        target_scale=1.0,
        condition_dropout=0.1,
        **kwargs,
    ):
        expected = embedding_dim + instrument_dim
        if denoiser.condition_dim != expected or denoiser.extra_channels != 2:
            raise ValueError(
                f"denoiser needs condition_dim={expected} and extra_channels=2, got "
                f"{denoiser.condition_dim} and {denoiser.extra_channels}"
            )
        super().__init__(
            denoiser, condition_dim=expected, condition_dropout=condition_dropout, **kwargs
        )
        self.embedder = embedder
        self.embedding_dim = int(embedding_dim)
        self.num_instruments = int(num_instruments)
        self.instrument_dim = int(instrument_dim)
        self.target_scale = float(target_scale)
        self.instrument_embedding = keras.layers.Embedding(
            num_instruments, instrument_dim, name="instrument_embedding"
        )
        self.instrument_embedding.build((None,))
        self.built = True

    def embed(self, inputs):
        """The shared embedding of the low-res spectrum (B, embedding_dim)."""
        if "embedding" in inputs:
            return inputs["embedding"]
        if self.embedder is None:
            raise ValueError("no 'embedding' input and no embedder to compute it")
        weight = inputs["lowres_weight"]
        spectrum = ops.stack([masked_flux(inputs["lowres"], weight), weight], axis=-1)
        instrument = ops.convert_to_tensor(inputs["instrument"])
        return self.embedder({"spectrum": spectrum, "instrument": instrument})

    def conditioning(self, inputs, training=None):
        instrument = self.instrument_embedding(inputs["instrument"])
        condition = ops.concatenate([self.embed(inputs), instrument], axis=-1)
        weight = inputs["lowres_on_target_weight"]
        flux = masked_flux(inputs["lowres_on_target"], weight) / self.target_scale
        extra = ops.stack([flux, weight], axis=-1)
        return condition, extra

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            num_instruments=self.num_instruments,
            instrument_dim=self.instrument_dim,
            target_scale=self.target_scale,
        )
        return config
