"""specsr models (Keras 3, backend-agnostic: TensorFlow or JAX).

Backbones: `UNet1D`, `UNet2D`, `SpectrumEncoder`, `ImageEncoder`.
Tasks (trained with plain `model.fit`, loss in `compute_loss`):
`SuperResolver` (cross-modal prior, sampled as a posterior; also the image-to-spectrum
generator), `SpectrumDiffusionAutoencoder`,
`ImageDiffusionAutoencoder`, `ContrastiveAligner`, generic `DiffusionModel`.
Factories and named configs (`micro`, `tiny`, `base`): `presets`.
Input normalisation and the preprocessor (keras.ops, reusable in-graph): `preprocess`,
`preprocessor`; samplers saved with a model: `samplers`.
"""

from specsr_keras.models.autoencoders import (
    ImageDiffusionAutoencoder,
    SpectrumDiffusionAutoencoder,
)
from specsr_keras.models.contrastive import (
    ContrastiveAligner,
    ProjectionHead,
    info_nce,
    retrieval_top_k,
)
from specsr_keras.models.diffusion import DiffusionModel, GaussianDiffusion
from specsr_keras.models.encoders import ImageEncoder, SpectrumEncoder
from specsr_keras.models.flops import count_flops
from specsr_keras.models.presets import (
    build_aligner,
    build_image_autoencoder,
    build_image_embedder,
    build_spectrum_autoencoder,
    build_spectrum_embedder,
    build_superresolver,
    get_preset,
)
from specsr_keras.models.superres import SuperResolver, sample_mean_std
from specsr_keras.models.unet1d import UNet1D
from specsr_keras.models.unet2d import UNet2D

__all__ = [
    "ContrastiveAligner",
    "DiffusionModel",
    "GaussianDiffusion",
    "ImageDiffusionAutoencoder",
    "ImageEncoder",
    "ProjectionHead",
    "SpectrumDiffusionAutoencoder",
    "SpectrumEncoder",
    "SuperResolver",
    "UNet1D",
    "UNet2D",
    "build_aligner",
    "build_image_autoencoder",
    "build_image_embedder",
    "build_spectrum_autoencoder",
    "build_spectrum_embedder",
    "build_superresolver",
    "count_flops",
    "get_preset",
    "info_nce",
    "retrieval_top_k",
    "sample_mean_std",
]
