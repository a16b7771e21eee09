"""Semantic encoders (keras-hub backbones): spectrum -> z_s and image -> z_i.

`SpectrumEncoder`
    inputs {"spectrum": (B, L, in_channels) float, "instrument": (B,) int} -> z (B, z_dim).
    Channels are the normalised flux and its weight (see `preprocess.py`); L may be
    any multiple of 2**(levels-1) (the graph has a dynamic length), so the *same*
    encoder embeds low-res spectra on ENCODER_GRID (512 px, any instrument) and the
    hi-res target window (TARGET_GRID, 320 px). The instrument id is embedded and
    modulates every residual block (FiLM); `num_instruments` includes one extra
    pseudo-instrument, `target_instrument_id = num_instruments - 1`, which marks the
    hi-res rest-frame target window. A position channel (0..1 along the grid) is
    appended so pooled features still know where a line sits (on ENCODER_GRID that
    is the redshift). Pooling: global mean and max, concatenated with the
    instrument embedding, then a 2-layer MLP.

`ImageEncoder`
    inputs (B, H, W, bands) normalised cutout -> z (B, z_dim): residual conv stages
    with stride-2 downsampling, global mean + max pooling, 2-layer MLP.
"""

import keras
from keras import layers

from specsr_keras.models.layers import (
    Downsample,
    GroupNormalization,
    PositionChannel,
    ResidualBlock,
    conv_layer,
    group_count,
)

register = keras.saving.register_keras_serializable(package="specsr")


def _encoder_trunk(h, rank, widths, blocks_per_level, groups, kernel_size, emb=None):
    h = conv_layer(rank, widths[0], kernel_size, name="stem")(h)
    for level, width in enumerate(widths):
        for i in range(blocks_per_level):
            block = ResidualBlock(
                width, rank, groups, kernel_size, use_film=emb is not None, name=f"block{level}_{i}"
            )
            h = block(h, emb) if emb is not None else block(h)
        if level < len(widths) - 1:
            h = Downsample(rank, name=f"pool{level}")(h)
    h = GroupNormalization(group_count(widths[-1], groups), name="out_norm")(h)
    h = layers.Activation("silu", name="out_act")(h)
    pool = {
        1: (layers.GlobalAveragePooling1D, layers.GlobalMaxPooling1D),
        2: (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D),
    }[rank]
    return [pool[0](name="mean_pool")(h), pool[1](name="max_pool")(h)]


@register
class SpectrumEncoder(keras.Model):
    def __init__(
        self,
        in_channels=2,
        num_instruments=7,
        instrument_dim=8,
        widths=(16, 32, 48),
        blocks_per_level=1,
        z_dim=32,
        hidden_dim=64,
        groups=8,
        kernel_size=5,
        **kwargs,
    ):
        spectrum = keras.Input((None, in_channels), name="spectrum")
        instrument = keras.Input((), dtype="int32", name="instrument")
        inst = layers.Embedding(num_instruments, instrument_dim, name="instrument_embedding")(
            instrument
        )
        h = PositionChannel(name="position")(spectrum)
        pooled = _encoder_trunk(h, 1, widths, blocks_per_level, groups, kernel_size, emb=inst)
        h = layers.Concatenate(name="concat_pool")([*pooled, inst])
        h = layers.Dense(hidden_dim, activation="silu", name="head_1")(h)
        z = layers.Dense(z_dim, name="z")(h)
        super().__init__(
            inputs={"spectrum": spectrum, "instrument": instrument}, outputs=z, **kwargs
        )
        self.in_channels = in_channels
        self.num_instruments = num_instruments
        self.instrument_dim = instrument_dim
        self.widths = tuple(widths)
        self.blocks_per_level = blocks_per_level
        self.z_dim = z_dim
        self.hidden_dim = hidden_dim
        self.groups = groups
        self.kernel_size = kernel_size

    @property
    def target_instrument_id(self):
        """Pseudo-instrument id for hi-res target-window spectra (the last one)."""
        return self.num_instruments - 1

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "in_channels": self.in_channels,
            "num_instruments": self.num_instruments,
            "instrument_dim": self.instrument_dim,
            "widths": list(self.widths),
            "blocks_per_level": self.blocks_per_level,
            "z_dim": self.z_dim,
            "hidden_dim": self.hidden_dim,
            "groups": self.groups,
            "kernel_size": self.kernel_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@register
class ImageEncoder(keras.Model):
    def __init__(
        self,
        image_shape=(64, 64, 4),
        widths=(16, 32, 48),
        blocks_per_level=1,
        z_dim=32,
        hidden_dim=64,
        groups=8,
        kernel_size=3,
        **kwargs,
    ):
        image = keras.Input(tuple(image_shape), name="image")
        pooled = _encoder_trunk(image, 2, widths, blocks_per_level, groups, kernel_size)
        h = layers.Concatenate(name="concat_pool")(pooled)
        h = layers.Dense(hidden_dim, activation="silu", name="head_1")(h)
        z = layers.Dense(z_dim, name="z")(h)
        super().__init__(inputs=image, outputs=z, **kwargs)
        self.image_shape = tuple(image_shape)
        self.widths = tuple(widths)
        self.blocks_per_level = blocks_per_level
        self.z_dim = z_dim
        self.hidden_dim = hidden_dim
        self.groups = groups
        self.kernel_size = kernel_size

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            "widths": list(self.widths),
            "blocks_per_level": self.blocks_per_level,
            "z_dim": self.z_dim,
            "hidden_dim": self.hidden_dim,
            "groups": self.groups,
            "kernel_size": self.kernel_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
