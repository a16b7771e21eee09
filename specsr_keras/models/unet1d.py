"""`UNet1D`: the 1D denoiser backbone (spectra), keras-hub "backbone" style.

A functional `keras.Model` built in `__init__` (`_unet.UNetBase`); `get_config` returns
the constructor arguments, so `UNet1D.from_config(model.get_config())` rebuilds it exactly.

Inputs (dict): "x" (B, length, channels) noisy spectrum, "t" (B,) diffusion time in
[0, 1], "condition" (B, condition_dim) if condition_dim > 0, "extra"
(B, length, extra_channels) if extra_channels > 0. Output: (B, length, out_channels),
the v-prediction. `length` must be divisible by 2**(len(widths) - 1). Other arguments:
`_unet.UNET_DEFAULTS`.
"""

import keras

from specsr_keras.models._unet import UNetBase


@keras.saving.register_keras_serializable(package="specsr")
class UNet1D(UNetBase):
    def __init__(self, length=320, channels=1, widths=(32, 64, 96), attention_levels=(2,), **kwargs):
        super().__init__((length,), channels, widths, attention_levels, **kwargs)
        self.length = length

    def get_config(self):
        return {**super().get_config(), "length": self.length}
