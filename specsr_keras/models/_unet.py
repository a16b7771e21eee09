"""The U-Net graph shared by `UNet1D` and `UNet2D` (private; see those modules)."""

import keras
from keras import layers

from specsr_keras.models.layers import (
    Downsample,
    GroupNormalization,
    ResidualBlock,
    SelfAttention,
    SinusoidalEmbedding,
    Upsample,
    conv_layer,
    group_count,
)


def unet_graph(
    rank,
    spatial_shape,
    channels,
    out_channels,
    extra_channels,
    condition_dim,
    widths,
    blocks_per_level,
    attention_levels,
    num_heads,
    embedding_dim,
    groups,
    dropout,
    kernel_size,
):
    """Build the symbolic U-Net; returns (inputs dict, output tensor).

    Inputs: "x" (B, *spatial, channels) noisy sample, "t" (B,) diffusion time in
    [0, 1], optional "condition" (B, condition_dim), optional "extra"
    (B, *spatial, extra_channels) concatenated to x (e.g. low-res spectrum + weight).
    Down path: per level `blocks_per_level` residual blocks (+ attention where the
    level is in `attention_levels`), a skip saved after each, then a stride-2
    downsample; a middle block pair with attention at the coarsest level; the up
    path mirrors it, concatenating one skip per block.
    """
    factor = 2 ** (len(widths) - 1)
    for size in spatial_shape:
        if size is not None and size % factor:
            raise ValueError(f"spatial size {size} not divisible by 2**(levels-1) = {factor}")
    x_in = keras.Input(tuple(spatial_shape) + (channels,), name="x")
    t_in = keras.Input((), name="t")
    inputs = {"x": x_in, "t": t_in}

    emb = SinusoidalEmbedding(embedding_dim, name="time_features")(t_in)
    emb = layers.Dense(embedding_dim, activation="silu", name="time_mlp_1")(emb)
    emb = layers.Dense(embedding_dim, name="time_mlp_2")(emb)
    if condition_dim:
        c_in = keras.Input((condition_dim,), name="condition")
        inputs["condition"] = c_in
        emb = layers.Add(name="add_condition")(
            [emb, layers.Dense(embedding_dim, name="condition_proj")(c_in)]
        )

    h = x_in
    if extra_channels:
        e_in = keras.Input(tuple(spatial_shape) + (extra_channels,), name="extra")
        inputs["extra"] = e_in
        h = layers.Concatenate(axis=-1, name="concat_extra")([x_in, e_in])
    h = conv_layer(rank, widths[0], kernel_size, name="stem")(h)

    def block(h, width, name, attend):
        h = ResidualBlock(width, rank, groups, kernel_size, dropout, name=name)(h, emb)
        if attend:
            h = SelfAttention(num_heads, groups, name=name + "_attn")(h)
        return h

    skips = []
    for level, width in enumerate(widths):
        for i in range(blocks_per_level):
            h = block(h, width, f"down{level}_{i}", level in attention_levels)
            skips.append(h)
        if level < len(widths) - 1:
            h = Downsample(rank, name=f"down{level}_pool")(h)

    coarsest = len(widths) - 1
    h = block(h, widths[-1], "mid_0", coarsest in attention_levels)
    h = block(h, widths[-1], "mid_1", False)

    for level in reversed(range(len(widths))):
        for i in range(blocks_per_level):
            h = layers.Concatenate(axis=-1, name=f"up{level}_{i}_skip")([h, skips.pop()])
            h = block(h, widths[level], f"up{level}_{i}", level in attention_levels)
        if level > 0:
            h = Upsample(rank, name=f"up{level}_upsample")(h)

    h = GroupNormalization(group_count(widths[0], groups), name="out_norm")(h)
    h = layers.Activation("silu", name="out_act")(h)
    out = conv_layer(rank, out_channels, kernel_size, name="out_conv")(h)
    return inputs, out


# Hyper-parameters every U-Net takes (besides its spatial size), with their defaults.
UNET_DEFAULTS = {
    "out_channels": None,  # = channels
    "extra_channels": 0,
    "condition_dim": 0,
    "blocks_per_level": 1,
    "num_heads": 2,
    "embedding_dim": 64,
    "groups": 8,
    "dropout": 0.0,
    "kernel_size": 3,
}


class UNetBase(keras.Model):
    """The functional U-Net of `unet_graph` over `spatial_shape`; `UNet1D` and `UNet2D` name
    their spatial argument and defaults. Attributes: every constructor argument."""

    def __init__(self, spatial_shape, channels, widths, attention_levels, **kwargs):
        hyper = {k: kwargs.pop(k, default) for k, default in UNET_DEFAULTS.items()}
        if hyper["out_channels"] is None:
            hyper["out_channels"] = channels
        hyper.update(channels=channels, widths=tuple(widths), attention_levels=tuple(attention_levels))
        inputs, outputs = unet_graph(len(spatial_shape), tuple(spatial_shape), **hyper)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.spatial_shape = tuple(spatial_shape)
        for key, value in hyper.items():
            setattr(self, key, value)

    @property
    def sample_shape(self):
        return (*self.spatial_shape, self.channels)

    def get_config(self):
        hyper = {k: getattr(self, k) for k in ("channels", "widths", "attention_levels", *UNET_DEFAULTS)}
        return {"name": self.name, "trainable": self.trainable,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
