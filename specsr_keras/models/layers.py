"""Backend-agnostic building blocks for the specsr networks.

Everything here uses only `keras.layers`, `keras.ops` and `keras.random`, so the same
code runs (and serialises) under TensorFlow and JAX. Blocks work on 1D sequences
`(B, L, C)` (`rank=1`) and 2D images `(B, H, W, C)` (`rank=2`).

- `SinusoidalEmbedding`: diffusion time t in [0, 1] -> (B, dim) Fourier features.
- `GroupNormalization`: a drop-in for keras' layer of that name (same weights, config and
  saved-file paths) computed as one per-(example, channel) multiply-add, with an optional
  FiLM folded into it.
- `ResidualBlock`: GroupNorm -> SiLU -> Conv -> GroupNorm -> FiLM -> SiLU -> Dropout -> Conv,
  plus a (1x1-projected) skip. FiLM = per-channel `(1 + scale) * h + shift` computed
  from a conditioning vector (timestep embedding + condition).
- `SelfAttention`: pre-norm multi-head self-attention over all positions, residual.
- `Downsample` (strided conv) and `Upsample` (nearest upsampling + conv).
- `PositionChannel`: appends a 0..1 position coordinate, for any sequence length.
"""

import math

import keras
from keras import layers, ops

register = keras.saving.register_keras_serializable(package="specsr")


def group_count(channels, groups):
    """Largest number of groups <= `groups` that divides `channels`."""
    return math.gcd(int(channels), int(groups))


def conv_layer(rank, filters, kernel_size, strides=1, name=None):
    conv = {1: layers.Conv1D, 2: layers.Conv2D}[rank]
    return conv(filters, kernel_size, strides=strides, padding="same", name=name)


def broadcast_vector(vector, rank):
    """(B, C) -> (B, 1, C) for rank 1 or (B, 1, 1, C) for rank 2."""
    for _ in range(rank):
        vector = ops.expand_dims(vector, 1)
    return vector


@register
class SinusoidalEmbedding(layers.Layer):
    """Transformer-style sinusoidal features of a continuous time t (B,) -> (B, dim).

    `scale` multiplies t first (t in [0, 1] -> [0, 1000]) so that the lowest
    frequencies resolve the whole range.
    """

    def __init__(self, dim, scale=1000.0, max_period=10000.0, **kwargs):
        super().__init__(**kwargs)
        if dim % 2:
            raise ValueError(f"SinusoidalEmbedding dim must be even, got {dim}")
        self.dim = int(dim)
        self.scale = float(scale)
        self.max_period = float(max_period)

    def call(self, t):
        t = ops.reshape(ops.cast(t, "float32"), (-1, 1)) * self.scale
        half = self.dim // 2
        exponent = ops.arange(half, dtype="float32") / half
        frequencies = ops.exp(-math.log(self.max_period) * exponent)
        angles = t * ops.expand_dims(frequencies, 0)
        features = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
        return ops.cast(features, self.compute_dtype)

    def compute_output_shape(self, t_shape):
        return (t_shape[0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, scale=self.scale, max_period=self.max_period)
        return config


@register
class GroupNormalization(layers.GroupNormalization):
    """Group normalisation over the last (channel) axis: a drop-in for keras' layer (same
    weights, config and float32 statistics) computed the fast way round. Each channel's mean
    and variance over the spatial axes (B, C) give its group's by the law of total variance
    (group variance = mean over the group's channels of var_c + (mean_c - mean_group)²); the
    normalisation, the affine and an optional FiLM are then one multiply-add with (B, C)
    coefficients. 1.7-1.8x faster than keras' moments over a (B, L, G, C/G) view on the
    denoiser's norms, under TensorFlow and JAX (benchmarks/README.md).

    call(x, film_scale=None, film_shift=None): x (B, *spatial, C) -> same shape; the FiLM
    coefficients (B, C) give ((x - mean) / std * gamma + beta) * (1 + film_scale) + film_shift.

    It keeps keras' class name because a saved functional model files a layer's weights
    under that name: models saved with keras' layer load into this one unchanged.
    """

    def build(self, input_shape):
        if self.axis not in (-1, len(input_shape) - 1):
            raise ValueError(f"GroupNormalization normalises the last axis, not axis {self.axis}")
        super().build(input_shape)

    def call(self, inputs, film_scale=None, film_shift=None):
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        grouped = (-1, self.groups, channels // self.groups)
        rank = len(x.shape) - 2
        channel_mean, channel_variance = ops.moments(x, axes=tuple(range(1, rank + 1)))  # (B, C)
        channel_mean = ops.reshape(channel_mean, grouped)
        group_mean = ops.mean(channel_mean, axis=-1, keepdims=True)
        group_variance = ops.mean(ops.reshape(channel_variance, grouped) + ops.square(channel_mean - group_mean),
                                  axis=-1, keepdims=True)

        def per_channel(per_group):  # (B, G, 1) -> (B, C)
            return ops.reshape(ops.repeat(per_group, grouped[-1], axis=-1), (-1, channels))

        gain = per_channel(ops.rsqrt(group_variance + self.epsilon))
        mean = per_channel(group_mean)
        if self.scale:
            gain = gain * ops.cast(self.gamma, "float32")
        offset = -mean * gain
        if self.center:
            offset = offset + ops.cast(self.beta, "float32")
        if film_scale is not None:
            film = 1.0 + ops.cast(film_scale, "float32")
            gain, offset = gain * film, offset * film + ops.cast(film_shift, "float32")
        outputs = x * broadcast_vector(gain, rank) + broadcast_vector(offset, rank)
        return ops.cast(outputs, self.compute_dtype)


@register
class ResidualBlock(layers.Layer):
    """Pre-activation residual block with optional FiLM conditioning.

    call(x, emb=None): x (B, *spatial, C_in), emb (B, E) -> (B, *spatial, filters).
    With `use_film=False` the block ignores `emb`.
    """

    def __init__(
        self,
        filters,
        rank=1,
        groups=8,
        kernel_size=3,
        dropout=0.0,
        use_film=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rank = int(rank)
        self.groups = int(groups)
        self.kernel_size = int(kernel_size)
        self.dropout = float(dropout)
        self.use_film = bool(use_film)
        self.norm2 = GroupNormalization(group_count(filters, groups), name="norm2")
        self.conv1 = conv_layer(rank, filters, kernel_size, name="conv1")
        self.conv2 = conv_layer(rank, filters, kernel_size, name="conv2")
        self.drop = layers.Dropout(dropout)
        self.film = layers.Dense(2 * self.filters, name="film") if self.use_film else None
        self.norm1 = None
        self.skip = None

    def build(self, x_shape, emb_shape=None):
        in_channels = x_shape[-1]
        self.norm1 = GroupNormalization(group_count(in_channels, self.groups), name="norm1")
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        hidden_shape = tuple(x_shape[:-1]) + (self.filters,)
        self.norm2.build(hidden_shape)
        self.conv2.build(hidden_shape)
        if self.use_film:
            if emb_shape is None:
                raise ValueError("ResidualBlock(use_film=True) needs a conditioning vector")
            self.film.build(emb_shape)
        if in_channels != self.filters:
            self.skip = conv_layer(self.rank, self.filters, 1, name="skip")
            self.skip.build(x_shape)

    def call(self, x, emb=None, training=None):
        h = self.conv1(ops.silu(self.norm1(x)))
        if self.use_film:
            scale, shift = ops.split(self.film(ops.silu(emb)), 2, axis=-1)
            h = self.norm2(h, scale, shift)
        else:
            h = self.norm2(h)
        h = self.conv2(self.drop(ops.silu(h), training=training))
        skip = x if self.skip is None else self.skip(x)
        return skip + h

    def compute_output_shape(self, x_shape, emb_shape=None):
        return tuple(x_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            rank=self.rank,
            groups=self.groups,
            kernel_size=self.kernel_size,
            dropout=self.dropout,
            use_film=self.use_film,
        )
        return config


@register
class SelfAttention(layers.Layer):
    """Pre-norm multi-head self-attention over all positions (1D or 2D), residual."""

    def __init__(self, num_heads=4, groups=8, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.groups = int(groups)
        self.norm = None
        self.attention = None

    def build(self, x_shape):
        channels = x_shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels not divisible by {self.num_heads} heads")
        self.norm = GroupNormalization(group_count(channels, self.groups), name="norm")
        self.norm.build(x_shape)
        self.attention = layers.MultiHeadAttention(
            self.num_heads, key_dim=channels // self.num_heads, name="mha"
        )
        self.attention.build((None, None, channels), (None, None, channels))

    def call(self, x):
        shape = ops.shape(x)
        h = self.norm(x)
        tokens = ops.reshape(h, (shape[0], -1, shape[-1]))
        attended = self.attention(tokens, tokens)
        return x + ops.reshape(attended, shape)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, groups=self.groups)
        return config


@register
class Downsample(layers.Layer):
    """Halve every spatial axis with a stride-2 convolution (channels unchanged)."""

    def __init__(self, rank=1, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.rank = int(rank)
        self.kernel_size = int(kernel_size)
        self.conv = None

    def build(self, x_shape):
        self.conv = conv_layer(self.rank, x_shape[-1], self.kernel_size, strides=2, name="conv")
        self.conv.build(x_shape)

    def call(self, x):
        return self.conv(x)

    def compute_output_shape(self, x_shape):
        return self.conv.compute_output_shape(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank, kernel_size=self.kernel_size)
        return config


@register
class Upsample(layers.Layer):
    """Double every spatial axis (nearest neighbour) then smooth with a convolution."""

    def __init__(self, rank=1, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.rank = int(rank)
        self.kernel_size = int(kernel_size)
        self.upsample = {1: layers.UpSampling1D, 2: layers.UpSampling2D}[self.rank](2)
        self.conv = None

    def build(self, x_shape):
        up_shape = self.upsample.compute_output_shape(x_shape)
        self.conv = conv_layer(self.rank, x_shape[-1], self.kernel_size, name="conv")
        self.conv.build(up_shape)

    def call(self, x):
        return self.conv(self.upsample(x))

    def compute_output_shape(self, x_shape):
        return self.upsample.compute_output_shape(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank, kernel_size=self.kernel_size)
        return config


@register
class PositionChannel(layers.Layer):
    """Append a channel with the normalised position 0..1 along a 1D sequence.

    Works for any (even dynamic) length, so one encoder can see grids of different
    sizes and still know *where* a feature sits (e.g. which wavelength a line is at).
    """

    def call(self, x):
        ones = ops.ones_like(x[..., :1])
        index = ops.cumsum(ones, axis=1) - 1.0
        last = ops.maximum(ops.sum(ones, axis=1, keepdims=True) - 1.0, 1.0)
        return ops.concatenate([x, index / last], axis=-1)

    def compute_output_shape(self, x_shape):
        return tuple(x_shape[:-1]) + (x_shape[-1] + 1,)
