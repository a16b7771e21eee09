"""`UNet2D`: the 2D denoiser backbone (image cutouts), keras-hub "backbone" style.

A functional `keras.Model` built in `__init__` (`_unet.UNetBase`); `get_config` returns
the constructor arguments, so `UNet2D.from_config(model.get_config())` rebuilds it exactly.

Inputs (dict): "x" (B, H, W, channels) noisy image, "t" (B,) diffusion time in
[0, 1], "condition" (B, condition_dim) if condition_dim > 0, "extra"
(B, H, W, extra_channels) if extra_channels > 0. Output: (B, H, W, out_channels),
the v-prediction. H and W must be divisible by 2**(len(widths) - 1). Other arguments:
`_unet.UNET_DEFAULTS`.
"""

import keras

from specsr_keras.models._unet import UNetBase


@keras.saving.register_keras_serializable(package="specsr")
class UNet2D(UNetBase):
    def __init__(self, image_size=(64, 64), channels=4, widths=(16, 32, 64), attention_levels=(), **kwargs):
        super().__init__(tuple(image_size), channels, widths, attention_levels, **kwargs)
        self.image_size = tuple(image_size)

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size)}
