"""The one kernel of every spectral resampling and LSF operation in specsr (keras.ops).

A binned spectrum is a piecewise-constant flux density: value x_i on bin [a_i, b_i]. Seen
through a Gaussian line-spread function of width sigma and averaged over an output pixel
[p, q], bin i contributes x_i times

    w(p, q, a, b, sigma) = mean over t in [p, q] of  Phi((t - a) / sigma) - Phi((t - b) / sigma)
                         = [overlap([p, q], [a, b]) + sigma (g(u_qa) - g(u_pa) - g(u_qb) + g(u_pb))] / (q - p)

with u_xy = (x - y) / sigma and g(u) = phi(u) - |u| Phi(-|u|) (the antiderivative of Phi
minus its ramp; it vanishes away from 0, so distant bins get exactly 0). sigma = 0 is
plain flux-conserving rebinning (the overlap fraction). The formula is exact for
piecewise-constant input, so resampling, LSF convolution and the instrument's forward
operator are all this one function evaluated on different (output, input) pairs.

Positions are passed *relative* (e.g. offsets from the output pixel's left edge or
rest-frame window coordinates), so float32 is exact to ~1e-5 Å on every backend; see
`spectral.grids` for how each caller gets relative positions.
"""

from __future__ import annotations

import math

from keras import ops

# |u| beyond which g(u) is set to 0 (g(8) ~ 2e-17).
_TAIL_CUTOFF = 8.0
# Smallest sigma evaluated as a Gaussian; below it the kernel is the overlap alone.
_MIN_SIGMA = 1e-6
# An output pixel counts as covered when its weights sum to within this of 1.
COVERAGE_TOLERANCE = 1e-4


def _tail(u):
    """g(u) = phi(u) - |u| Phi(-|u|) for u of any shape (0 where |u| > _TAIL_CUTOFF)."""
    au = ops.abs(u)
    phi = ops.exp(-0.5 * ops.square(au)) / math.sqrt(2.0 * math.pi)
    upper = 0.5 * (1.0 - ops.erf(au / math.sqrt(2.0)))
    return ops.where(au < _TAIL_CUTOFF, phi - au * upper, 0.0)


def binned_gaussian(p, q, centre, sigma):
    """Mean over bins [p, q] of a unit-flux Gaussian of `centre`, `sigma` (all broadcast):
    (Phi((q - centre) / sigma) - Phi((p - centre) / sigma)) / (q - p)."""
    p, q, centre, sigma = (ops.cast(v, "float32") for v in (p, q, centre, sigma))
    root2 = math.sqrt(2.0)
    return 0.5 * (ops.erf((q - centre) / (root2 * sigma)) - ops.erf((p - centre) / (root2 * sigma))) / (q - p)


def box_gaussian_mean(p, q, a, b, sigma=None):
    """Mean over output pixels [p, q] of unit boxes [a, b] blurred by a Gaussian of `sigma`.

    All arguments broadcast against each other (float32 tensors or arrays, same length
    unit); `sigma` None or <= _MIN_SIGMA means no blur (flux-conserving rebinning
    weights). Returns the weights, shaped like the broadcast arguments: the output value
    of pixel [p, q] is sum_i w_i x_i for input bins [a_i, b_i] with values x_i.
    """
    p, q, a, b = (ops.cast(v, "float32") for v in (p, q, a, b))
    overlap = ops.relu(ops.minimum(q, b) - ops.maximum(p, a))
    if sigma is None:
        return overlap / (q - p)
    sigma = ops.cast(sigma, "float32")
    blur = sigma > _MIN_SIGMA
    s = ops.where(blur, sigma, 1.0)
    tails = _tail((q - a) / s) - _tail((p - a) / s) - _tail((q - b) / s) + _tail((p - b) / s)
    return (overlap + ops.where(blur, s * tails, 0.0)) / (q - p)


def rebin_weights(out_edges, in_edges, sigma=None, extend_ends=False):
    """Dense weights (..., L_out, L_in) from relative edges out (..., L_out+1), in (..., L_in+1).

    sigma: None, or broadcastable to (..., L_out, 1) (per output pixel) or (..., 1, 1).
    extend_ends: the first and last input bins reach to -inf and +inf (constant
    extrapolation), so output pixels near the input's ends see no missing flux.
    """
    out_edges = ops.cast(out_edges, "float32")
    in_edges = ops.cast(in_edges, "float32")
    lo, hi = in_edges[..., :-1], in_edges[..., 1:]
    if extend_ends:
        far = 1.0e9
        n_in = lo.shape[-1]
        first = ops.expand_dims(ops.arange(n_in) == 0, 0)
        last = ops.expand_dims(ops.arange(n_in) == n_in - 1, 0)
        lo = ops.where(first, -far, lo)
        hi = ops.where(last, far, hi)
    p = ops.expand_dims(out_edges[..., :-1], -1)
    q = ops.expand_dims(out_edges[..., 1:], -1)
    return box_gaussian_mean(p, q, ops.expand_dims(lo, -2), ops.expand_dims(hi, -2), sigma)


def apply_weights(weights, flux):
    """sum_i W[..., j, i] x[..., i]: weights (B, L_out, L_in) or (L_out, L_in), flux (B, L_in)."""
    flux = ops.cast(flux, "float32")
    if len(weights.shape) == 2:
        return ops.matmul(flux, ops.transpose(weights))
    return ops.einsum("bji,bi->bj", weights, flux)


def weighted_rebin(weights, flux, ivar=None):
    """Rebinned (flux, ivar) (..., L_out) from weights (..., L_out, K) and the input values
    flux, ivar broadcastable to them ((..., 1, K) for dense weights, (..., L_out, K) gathered).

    Each output pixel gets sum(w x) and the variance sum(w² / ivar); a pixel whose weights
    do not sum to 1 (not fully covered), or that touches an input of ivar 0, gets flux 0 and
    ivar 0. ivar None: a noiseless model (ivar None out; only the coverage applies).
    """
    flux = ops.cast(flux, "float32")
    covered = ops.abs(ops.sum(weights, axis=-1) - 1.0) < COVERAGE_TOLERANCE
    if ivar is None:
        return ops.where(covered, ops.sum(weights * flux, axis=-1), 0.0), None
    ivar = ops.cast(ivar, "float32")
    good = ivar > 0
    variance = ops.sum(ops.square(weights) * ops.where(good, 1.0 / ops.where(good, ivar, 1.0), 0.0), axis=-1)
    touched_bad = ops.sum(weights * ops.cast(ops.logical_not(good), "float32"), axis=-1)
    valid = ops.logical_and(ops.logical_and(covered, touched_bad == 0), variance > 0)
    out_flux = ops.sum(weights * ops.where(good, flux, 0.0), axis=-1)
    return ops.where(valid, out_flux, 0.0), ops.where(valid, 1.0 / ops.where(valid, variance, 1.0), 0.0)
