"""How much a spectrum's pixels scatter next to what its ivar says (keras.ops, batched).

`noise_scale` is the one implementation: the line-model anomaly tests (numpy callers,
`measure.broadline`) and the super-resolver's data step (in the compiled and served graph,
`Sampler.noise_check`) both read it.

DER_SNR (Stoehr et al. 2008) on the whitened flux w = flux √ivar: σ(w) = 1.4826 / √6 ×
median |2 w_i − w_(i−2) − w_(i+2)| over triplets of usable pixels (ivar > 0, finite).
Second differences at lag 2 cancel a smooth continuum and are not correlated by a
two-pixel resampling; a median ignores a few lines, peaks or bad pixels. When the ivar
describes the noise the result is 1 ± NOISE_SCALE_SCATTER / √triplets (measured on
Gaussian noise, 100-2,000 triplets); 1.25 when the ivar is 1.56x too large.
"""

from __future__ import annotations

import math

from keras import ops

# The median absolute deviation of a Gaussian times this is its sigma.
MAD_TO_SIGMA = 1.4826
# sigma of independent Gaussian x from median |2 x_i - x_(i-2) - x_(i+2)|.
_SECOND_DIFFERENCE_TO_SIGMA = MAD_TO_SIGMA / math.sqrt(6.0)
# Fewest usable pixel triplets for a noise scale (fewer: NaN, the ivar is taken as it is).
MIN_SCALE_TRIPLETS = 20
# Scatter of noise_scale over n triplets of Gaussian noise: this / sqrt(n) (measured, n = 100-2000).
NOISE_SCALE_SCATTER = 1.4


def noise_scale(flux, ivar):
    """(noise_scale (B,), usable triplets (B,)) of spectra flux, ivar (B, L) in any consistent
    units: the pixel-to-pixel scatter of flux √ivar in units of 1 (module doc); NaN for a row
    with < MIN_SCALE_TRIPLETS triplets. float32 tensors."""
    flux, ivar = ops.cast(flux, "float32"), ops.cast(ivar, "float32")
    usable = ops.logical_and(ops.logical_and(ops.isfinite(flux), ops.isfinite(ivar)), ivar > 0)
    whitened = ops.where(usable, flux * ops.sqrt(ops.where(usable, ivar, 0.0)), 0.0)
    triplet = ops.logical_and(ops.logical_and(usable[:, 2:-2], usable[:, :-4]), usable[:, 4:])
    second = ops.abs(2.0 * whitened[:, 2:-2] - whitened[:, :-4] - whitened[:, 4:])
    count = ops.sum(ops.cast(triplet, "int32"), axis=1)
    # Median of the usable entries: unusable ones sort last (+inf); average the two middle
    # entries of an even count.
    ordered = ops.sort(ops.where(triplet, second, float("inf")), axis=1)
    lower = ops.maximum((count - 1) // 2, 0)
    upper = ops.maximum(count // 2, 0)
    middle = ops.take_along_axis(ordered, ops.stack([lower, upper], axis=1), axis=1)
    median = ops.mean(middle, axis=1)
    scale = _SECOND_DIFFERENCE_TO_SIGMA * median
    return ops.where(count >= MIN_SCALE_TRIPLETS, scale, float("nan")), count


def noise_inflation(scale):
    """max(1, noise_scale) (B,), 1 where the scale is NaN: the factor by which a spectrum's
    sigma is raised so that it never has less noise than its ivar states."""
    scale = ops.cast(scale, "float32")
    return ops.where(ops.isnan(scale), 1.0, ops.maximum(scale, 1.0))
