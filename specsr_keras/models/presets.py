"""Named model configurations and `build_*` factories.

`micro`: unit tests only (two levels of 16 channels: every model builds and compiles in
         seconds, which matters under JAX where each new shape is an XLA compile).
`tiny`: CPU demo (super-resolver ~0.4 M parameters incl. its embedder).
`base`: GPU training (several M parameters per model).
Every factory takes a preset name and keyword overrides for the top-level sections,
e.g. `build_superresolver("tiny", superres={"target_scale": 4.0})`.
"""

import copy

from specsr_keras.models.autoencoders import (
    ImageDiffusionAutoencoder,
    SpectrumDiffusionAutoencoder,
)
from specsr_keras.models.contrastive import ContrastiveAligner
from specsr_keras.models.encoders import ImageEncoder, SpectrumEncoder
from specsr_keras.models.superres import SuperResolver
from specsr_keras.models.unet1d import UNet1D
from specsr_keras.models.unet2d import UNet2D

TARGET_LENGTH = 320  # TARGET_GRID pixels (docs/contracts.md)
ENCODER_LENGTH = 512  # ENCODER_GRID pixels
NUM_INSTRUMENTS = 6  # len(specsr_keras.instruments.INSTRUMENT_NAMES)
IMAGE_SHAPE = (64, 64, 4)

PRESETS = {
    "micro": {
        "embedding_dim": 16,
        "projection_hidden": 16,
        "shared_space": {"amplitude": True, "augment": True, "property_weight": 5.0},
        "spectrum_encoder": {
            "widths": [16, 16],
            "blocks_per_level": 1,
            "z_dim": 16,
            "hidden_dim": 16,
            "instrument_dim": 16,
            "kernel_size": 3,
        },
        "image_encoder": {"widths": [16, 16], "blocks_per_level": 1, "z_dim": 16, "hidden_dim": 16},
        "spectrum_decoder": {
            "widths": [16, 16],
            "blocks_per_level": 1,
            "attention_levels": [1],
            "num_heads": 2,
            "embedding_dim": 16,
        },
        "image_decoder": {
            "widths": [16, 16],
            "blocks_per_level": 1,
            "attention_levels": [1],
            "num_heads": 2,
            "embedding_dim": 16,
        },
        "superres_denoiser": {
            "widths": [16, 16],
            "blocks_per_level": 1,
            "attention_levels": [1],
            "num_heads": 2,
            "embedding_dim": 16,
        },
        "superres": {"instrument_dim": 16, "context_dim": 16, "target_scale": 1.0},
    },
    "tiny": {
        "embedding_dim": 32,
        "projection_hidden": 64,
        "shared_space": {"amplitude": True, "augment": True, "property_weight": 5.0},
        "spectrum_encoder": {
            "widths": [16, 32, 48],
            "blocks_per_level": 1,
            "z_dim": 32,
            "hidden_dim": 64,
            "instrument_dim": 8,
            "kernel_size": 5,
        },
        "image_encoder": {
            "widths": [16, 32, 48],
            "blocks_per_level": 1,
            "z_dim": 32,
            "hidden_dim": 64,
        },
        "spectrum_decoder": {
            "widths": [16, 32, 64],
            "blocks_per_level": 1,
            "attention_levels": [2],
            "num_heads": 2,
            "embedding_dim": 64,
        },
        "image_decoder": {
            "widths": [8, 16, 32],
            "blocks_per_level": 1,
            "attention_levels": [],
            "embedding_dim": 64,
        },
        "superres_denoiser": {
            "widths": [24, 48, 72],
            "blocks_per_level": 1,
            "attention_levels": [2],
            "num_heads": 2,
            "embedding_dim": 64,
        },
        "superres": {"instrument_dim": 8, "context_dim": 64, "target_scale": 1.0, "line_weight": 5.0},
    },
    "base": {
        "embedding_dim": 128,
        "projection_hidden": 256,
        "shared_space": {"amplitude": True, "augment": True, "property_weight": 5.0},
        "spectrum_encoder": {
            "widths": [32, 64, 96, 128],
            "blocks_per_level": 2,
            "z_dim": 128,
            "hidden_dim": 256,
            "instrument_dim": 16,
            "kernel_size": 5,
        },
        "image_encoder": {
            "widths": [32, 64, 96, 128],
            "blocks_per_level": 2,
            "z_dim": 128,
            "hidden_dim": 256,
        },
        "spectrum_decoder": {
            "widths": [32, 64, 128, 160],
            "blocks_per_level": 2,
            "attention_levels": [3],
            "num_heads": 4,
            "embedding_dim": 128,
        },
        "image_decoder": {
            "widths": [32, 64, 96, 128],
            "blocks_per_level": 2,
            "attention_levels": [3],
            "num_heads": 4,
            "embedding_dim": 128,
        },
        "superres_denoiser": {
            "widths": [64, 96, 128, 192],
            "blocks_per_level": 2,
            "attention_levels": [3],
            "num_heads": 4,
            "embedding_dim": 256,
        },
        "superres": {"instrument_dim": 16, "context_dim": 128, "target_scale": 1.0},
    },
}


def get_preset(name, **overrides):
    """A deep copy of preset `name`; each override replaces/updates a top-level section."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    config = copy.deepcopy(PRESETS[name])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def build_spectrum_encoder(preset="tiny", **overrides):
    config = get_preset(preset, **overrides)
    return SpectrumEncoder(num_instruments=NUM_INSTRUMENTS + 1, **config["spectrum_encoder"])


def build_image_encoder(preset="tiny", **overrides):
    config = get_preset(preset, **overrides)
    return ImageEncoder(image_shape=IMAGE_SHAPE, **config["image_encoder"])


def build_spectrum_autoencoder(
    preset="tiny", encoder=None, with_hires=True, seed=None, **overrides
):
    config = get_preset(preset, **overrides)
    encoder = encoder or build_spectrum_encoder(preset, **overrides)
    decoder = config["spectrum_decoder"]
    lowres = UNet1D(length=ENCODER_LENGTH, condition_dim=encoder.z_dim, **decoder)
    hires = (
        UNet1D(length=TARGET_LENGTH, condition_dim=encoder.z_dim, **decoder) if with_hires else None
    )
    return SpectrumDiffusionAutoencoder(encoder, lowres, hires, seed=seed)


def build_image_autoencoder(preset="tiny", encoder=None, seed=None, **overrides):
    config = get_preset(preset, **overrides)
    encoder = encoder or build_image_encoder(preset, **overrides)
    decoder = UNet2D(
        image_size=IMAGE_SHAPE[:2],
        channels=IMAGE_SHAPE[2],
        condition_dim=encoder.z_dim,
        **config["image_decoder"],
    )
    return ImageDiffusionAutoencoder(decoder, encoder, seed=seed)


def build_aligner(preset="tiny", image_encoder=None, spectrum_encoder=None, **overrides):
    config = get_preset(preset, **overrides)
    return ContrastiveAligner(
        image_encoder or build_image_encoder(preset, **overrides),
        spectrum_encoder or build_spectrum_encoder(preset, **overrides),
        embedding_dim=config["embedding_dim"],
        hidden_dim=config["projection_hidden"],
        **config["shared_space"],
    )


def build_spectrum_embedder(preset="tiny", **overrides):
    """A fresh spectrum encoder + projection head as one functional model."""
    return build_aligner(preset, **overrides).spectrum_embedder()


def build_image_embedder(preset="tiny", **overrides):
    """A fresh image encoder + projection head as one functional model."""
    return build_aligner(preset, **overrides).image_embedder()


def build_superresolver(preset="tiny", spectrum_embedder=None, image_embedder=None, seed=None,
                        wavelength_channel=True, **overrides):
    """SuperResolver; the embedders default to fresh (trainable) encoders + projection heads.
    wavelength_channel False: the denoiser of models trained before it (to load their weights)."""
    config = get_preset(preset, **overrides)
    sr = config["superres"]
    denoiser = UNet1D(
        length=TARGET_LENGTH,
        extra_channels=3 if wavelength_channel else 2,  # low-res flux, its weight (, rest wavelength)
        condition_dim=sr["context_dim"],
        **config["superres_denoiser"],
    )
    return SuperResolver(
        denoiser,
        spectrum_embedder or build_spectrum_embedder(preset, **overrides),
        image_embedder or build_image_embedder(preset, **overrides),
        embedding_dim=config["embedding_dim"],
        num_instruments=NUM_INSTRUMENTS,
        seed=seed,
        **sr,
    )
