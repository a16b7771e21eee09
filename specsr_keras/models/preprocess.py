"""Per-object normalisation of spectra and images, in keras.ops (reusable in-graph).

The models never see physical units. What a caller must do for one object:

1. `scale = spectrum_scale(lowres_flux, lowres_ivar)` on the low-res spectrum (on its
   instrument grid or on ENCODER_GRID; both give nearly the same value). It is the
   `quantile` (default 98 %) of the covered flux values, floored at the median noise
   sigma so that noisy or negative spectra never blow up. One scale per object.
2. Divide *every* spectrum of that object by the same scale: the low-res spectrum on
   ENCODER_GRID, the low-res spectrum resampled onto TARGET_GRID, and the hi-res
   target: `flux_n, weight = prepare_spectrum(flux, ivar, scale)`. `weight` in [0, 1)
   is both the weight input channel and the per-pixel loss weight
   (`spectrum_weight`: ivar_n * s**2 / (1 + ivar_n * s**2), s = `sigma_ref` = 0.1,
   i.e. ~1 where the noise is well below 10 % of the scale, 0 where masked).
   A noiseless simulated hi-res truth uses weight = 1 - mask instead.
3. Model outputs (samples) are in the same normalised units:
   `denormalise_spectrum(samples, scale)` -> physical flux (1e-17 cgs).

Images: `normalise_image(image)` = arcsinh(image / (softening * q)) / arcsinh(1 / softening)
with q = `image_level(image)`, the per-object 99 % quantile over all pixels and bands; the
models also get log10 q as the image's amplitude (the brightness the stretch removes).
"""

import numpy as np
from keras import ops


def _masked_quantile(values, valid, quantile):
    """Quantile along the last axis over entries where `valid`; (B,) and count (B,)."""
    length = ops.shape(values)[-1]
    valid = ops.cast(valid, "bool")
    count = ops.sum(ops.cast(valid, "int32"), axis=-1)
    ordered = ops.sort(ops.where(valid, values, -3.0e38), axis=-1)
    position = ops.cast(
        ops.floor(quantile * ops.cast(ops.maximum(count - 1, 0), "float32")), "int32"
    )
    index = ops.clip(length - count + position, 0, length - 1)
    picked = ops.take_along_axis(ordered, ops.expand_dims(index, -1), axis=-1)[..., 0]
    return picked, count


def spectrum_scale(flux, ivar, quantile=0.98, tiny=1e-30):
    """Robust per-object flux scale (B,) from flux, ivar (B, L); 1 if nothing is covered."""
    flux = ops.cast(flux, "float32")
    ivar = ops.cast(ivar, "float32")
    valid = ops.logical_and(ivar > 0, ops.isfinite(flux))
    level, count = _masked_quantile(flux, valid, quantile)
    sigma = ops.where(valid, 1.0 / ops.sqrt(ops.where(valid, ivar, 1.0)), 0.0)
    noise, _ = _masked_quantile(sigma, valid, 0.5)
    scale = ops.maximum(ops.maximum(level, noise), tiny)
    return ops.where(count > 0, scale, 1.0)


def _per_object(scale, x):
    return ops.reshape(ops.cast(scale, x.dtype), (-1,) + (1,) * (len(x.shape) - 1))


def normalise_spectrum(flux, ivar, scale):
    """(flux / scale, ivar * scale**2); masked or non-finite pixels -> flux 0, ivar 0."""
    flux = ops.cast(flux, "float32")
    ivar = ops.cast(ivar, "float32")
    valid = ops.logical_and(ivar > 0, ops.isfinite(flux))
    s = _per_object(scale, flux)
    flux_n = ops.where(valid, flux / s, 0.0)
    ivar_n = ops.where(valid, ivar * ops.square(s), 0.0)
    return flux_n, ivar_n


def spectrum_weight(ivar_normalised, sigma_ref=0.1):
    """Weight channel / loss weight in [0, 1) from normalised ivar; 0 where masked."""
    precision = ops.maximum(ivar_normalised, 0.0) * sigma_ref**2
    return precision / (1.0 + precision)


def prepare_spectrum(flux, ivar, scale, sigma_ref=0.1):
    """Normalised flux and weight (both (B, L)) ready for the spectrum models."""
    flux_n, ivar_n = normalise_spectrum(flux, ivar, scale)
    return flux_n, spectrum_weight(ivar_n, sigma_ref)


def masked_flux(flux, weight):
    """Flux with pixels of weight 0 set to 0, so masked values never reach a network."""
    return ops.where(weight > 0, flux, ops.zeros_like(flux))


def denormalise_spectrum(x, scale):
    """Model units -> physical flux; x (B, ...) with one scale per object (B,)."""
    return x * _per_object(scale, x)


def image_level(image, quantile=0.99):
    """Per-object brightness level (B,) of cutouts (B, H, W, bands): the `quantile` of all
    pixels and bands (non-finite ones count as 0; image units, e.g. nJy), floored at 1e-12.
    Found with top_k (the k-th largest value) rather than a full sort."""
    image = ops.cast(image, "float32")
    size = int(np.prod(image.shape[1:]))
    flat = ops.reshape(ops.where(ops.isfinite(image), image, 0.0), (-1, size))
    k = size - int(quantile * (size - 1))  # the same order statistic as _masked_quantile
    return ops.maximum(ops.top_k(flat, k)[0][:, -1], 1e-12)


def normalise_image(image, softening=0.05, quantile=0.99):
    """Per-object arcsinh stretch of a cutout (B, H, W, bands); peak ~1, background ~0."""
    image = ops.cast(image, "float32")
    image = ops.where(ops.isfinite(image), image, 0.0)
    level = _per_object(image_level(image, quantile), image)
    return ops.arcsinh(image / (softening * level)) / ops.arcsinh(1.0 / softening)
