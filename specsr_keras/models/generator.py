"""`ImageToSpectrum`: the hi-res spectrum decoder conditioned on an image's embedding.

The same 1D diffusion family as `SuperResolver`, with no low-res input channels: the
condition vector is the image's shared embedding, given as "embedding" or computed
from "image" by `embedder` (image encoder + projection head, e.g.
`ContrastiveAligner.image_embedder()`). Classifier-free guidance drops the embedding.

Inputs (dict): "image" (B, 64, 64, 4) normalised cutout (or "embedding"
(B, embedding_dim)); for training "hires", "hires_weight" (B, 320), normalised by the
object's scale (for images alone there is no low-res spectrum: use a scale from
photometry or the catalogue, or train on spectra normalised by their own scale).
`sample(...)` -> (B, K, 320).
"""

import keras

from specsr_keras.models.diffusion import HiresSpectrumTask


@keras.saving.register_keras_serializable(package="specsr")
class ImageToSpectrum(HiresSpectrumTask):
    _nested = ("denoiser", "embedder")

    def __init__(self, denoiser, embedder=None, target_scale=1.0, condition_dropout=0.1, **kwargs):
        if denoiser.extra_channels != 0 or not denoiser.condition_dim:
            raise ValueError("ImageToSpectrum needs a denoiser with a condition and no extras")
        super().__init__(
            denoiser,
            condition_dim=denoiser.condition_dim,
            condition_dropout=condition_dropout,
            **kwargs,
        )
        self.embedder = embedder
        self.target_scale = float(target_scale)
        self.built = True

    def conditioning(self, inputs, training=None):
        if "embedding" in inputs:
            return inputs["embedding"], None
        if self.embedder is None:
            raise ValueError("no 'embedding' input and no embedder to compute it")
        return self.embedder(inputs["image"]), None

    def get_config(self):
        config = super().get_config()
        config.update(target_scale=self.target_scale)
        return config
