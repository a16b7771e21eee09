"""`UNet1D`: the 1D denoiser backbone (spectra), keras-hub "backbone" style.

A functional `keras.Model` built in `__init__`; `get_config` returns the constructor
arguments, so `UNet1D.from_config(model.get_config())` rebuilds it exactly.

Inputs (dict): "x" (B, length, channels) noisy spectrum, "t" (B,) diffusion time in
[0, 1], "condition" (B, condition_dim) if condition_dim > 0, "extra"
(B, length, extra_channels) if extra_channels > 0. Output: (B, length, out_channels),
the v-prediction. `length` must be divisible by 2**(len(widths) - 1).
"""

import keras

from specsr_keras.models._unet import unet_config, unet_graph


@keras.saving.register_keras_serializable(package="specsr")
class UNet1D(keras.Model):
    def __init__(
        self,
        length=320,
        channels=1,
        out_channels=None,
        extra_channels=0,
        condition_dim=0,
        widths=(32, 64, 96),
        blocks_per_level=1,
        attention_levels=(2,),
        num_heads=2,
        embedding_dim=64,
        groups=8,
        dropout=0.0,
        kernel_size=3,
        **kwargs,
    ):
        out_channels = channels if out_channels is None else out_channels
        inputs, outputs = unet_graph(
            1,
            (length,),
            channels,
            out_channels,
            extra_channels,
            condition_dim,
            tuple(widths),
            blocks_per_level,
            tuple(attention_levels),
            num_heads,
            embedding_dim,
            groups,
            dropout,
            kernel_size,
        )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.length = length
        self.channels = channels
        self.out_channels = out_channels
        self.extra_channels = extra_channels
        self.condition_dim = condition_dim
        self.widths = tuple(widths)
        self.blocks_per_level = blocks_per_level
        self.attention_levels = tuple(attention_levels)
        self.num_heads = num_heads
        self.embedding_dim = embedding_dim
        self.groups = groups
        self.dropout = dropout
        self.kernel_size = kernel_size

    @property
    def sample_shape(self):
        return (self.length, self.channels)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "length": self.length,
            **unet_config(self),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
