"""Resampling and LSF convolution between fixed pixel grids: band geometry (numpy, float64)
plus the one kernel (`spectral.kernel`, keras.ops).

`band_geometry(edges_in, edges_out, reach)` finds, for every output pixel, the K input bins
within `reach` Å of it and their edges *relative to the output pixel's left edge*, in
float64, then stores them as float32 (small numbers: exact to ~1e-6 Å). Everything after
that runs in keras.ops on any backend: `resample` (flux-conserving, ivar propagated, masks
respected) and `blur_rebin` (Gaussian LSF + rebinning in one step, exact for
piecewise-constant input). `resample_flux` is the numpy-facing convenience for callers
holding numpy arrays (readers, catalogues, the serving client, the simulator).

Wavelengths in Å (any frame, as long as input and output agree); flux in any unit (kept);
ivar its inverse variance, 0 = masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from specsr_keras.spectral.kernel import box_gaussian_mean, weighted_rebin

# Relative position of unused band slots [Å]: far from every pixel, so their weight is 0.
_FAR = 1.0e9


@dataclass(frozen=True)
class Band:
    """Input bins near each output pixel; arrays (..., L_out, K) unless noted.

    index: input bin index (int32, clipped to the grid); lo, hi: the bin's edges minus the
    output pixel's left edge [Å] (float32; unused slots far away); width (..., L_out):
    output pixel width [Å]; inside (..., L_out): the pixel lies within the input range.
    """

    index: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    width: np.ndarray
    inside: np.ndarray

    def weights(self, sigma=None):
        """Kernel weights (..., L_out, K); sigma None or broadcastable to (..., L_out) [Å]."""
        if sigma is not None:
            sigma = ops.cast(sigma, "float32")
            sigma = ops.reshape(sigma, (-1, 1, 1)) if len(sigma.shape) == 1 else ops.expand_dims(sigma, -1)
        return box_gaussian_mean(0.0, self.width[..., None], self.lo, self.hi, sigma)


def locate_bins(edges, values, side="right"):
    """Index i with edges[..., i] <= value < edges[..., i+1] (numpy, like searchsorted - 1).

    edges (n,) or (B, n) increasing; values (..., m), with leading axis B for per-row edges.
    """
    edges = np.asarray(edges, float)
    values = np.asarray(values, float)
    if edges.ndim == 1:
        return np.searchsorted(edges, values, side=side) - 1
    values = np.broadcast_to(values, edges.shape[:-1] + values.shape[-1:])
    low = min(edges[..., 0].min(), values.min())
    span = max(edges[..., -1].max(), values.max()) - low + 1.0
    offsets = span * np.arange(edges.shape[0])[:, None]
    flat = np.searchsorted(((edges - low) + offsets).ravel(), ((values - low) + offsets).ravel(),
                           side=side)
    return flat.reshape(values.shape) - (edges.shape[-1] * np.arange(edges.shape[0]))[:, None] - 1


def band_geometry(edges_in, edges_out, reach: float = 0.0) -> Band:
    """Band of input bins within `reach` [Å] of each output pixel (numpy float64 geometry).

    edges_in (L_in+1,) or (B, L_in+1); edges_out (L_out+1,) or (B, L_out+1), increasing [Å].
    reach: how far a bin may lie outside the pixel and still contribute (e.g. 6 LSF sigmas;
    0 for plain rebinning).
    """
    edges_in = np.asarray(edges_in, np.float64)
    edges_out = np.asarray(edges_out, np.float64)
    if edges_in.ndim == 2 and edges_out.ndim == 1:
        edges_out = np.broadcast_to(edges_out, (edges_in.shape[0], edges_out.size))
    n_in = edges_in.shape[-1] - 1
    p, q = edges_out[..., :-1], edges_out[..., 1:]
    first = np.clip(locate_bins(edges_in, p - reach, "right"), 0, n_in - 1)
    last = np.clip(locate_bins(edges_in, q + reach, "left"), 0, n_in - 1)
    k = max(int((last - first).max(initial=0)) + 1, 1)
    index = first[..., None] + np.arange(k)
    used = index <= last[..., None]
    index = np.minimum(index, n_in - 1)
    if edges_in.ndim == 1:
        lo, hi = edges_in[index], edges_in[index + 1]
    else:
        rows = np.arange(edges_in.shape[0]).reshape((-1,) + (1,) * (index.ndim - 1))
        lo, hi = edges_in[rows, index], edges_in[rows, index + 1]
    return Band(
        index=index.astype(np.int32),
        lo=np.where(used, lo - p[..., None], _FAR).astype(np.float32),
        hi=np.where(used, hi - p[..., None], _FAR).astype(np.float32),
        width=(q - p).astype(np.float32),
        inside=(p >= edges_in[..., :1]) & (q <= edges_in[..., -1:]),
    )


def _gather(values, index):
    """values (B, L_in) at index (L_out, K) shared or (B, L_out, K) per row -> (B, L_out, K)."""
    if len(index.shape) == 2:
        return ops.take(values, index, axis=1)
    batch = ops.shape(values)[0]
    flat = ops.reshape(index, (batch, -1))
    return ops.reshape(ops.take_along_axis(values, flat, axis=1), ops.shape(index))


def convolve_uniform(flux, step: float, sigma, max_sigma: float | None = None, reach_sigmas: float = 6.0):
    """Exact Gaussian blur of piecewise-constant rows (B, L) on a uniform grid of `step` [Å],
    back onto the same grid: sigma (B,) [Å] per row, by FFT with the kernel's weights.
    max_sigma: a bound on sigma [Å] fixing the kernel's length (static shapes; default max).

    Pixel j gets sum_k w(k) x_{j-k} with w(k) = `box_gaussian_mean` of a source bin k pixels
    away, so blurring onto the fine grid and then rebinning (`resample`) onto coarser pixels
    whose edges fall on the grid's edges equals `blur_rebin` onto them. Zero beyond the ends.
    """
    flux = ops.cast(flux, "float32")
    sigma = ops.cast(sigma, "float32")
    length = flux.shape[-1]
    max_sigma = float(ops.max(sigma)) if max_sigma is None else max_sigma
    half = int(np.ceil(reach_sigmas * max_sigma / step)) + 1
    # c_m: weight of the source bin m pixels to the left (m = -half..half): out = c * x.
    left_edge = -np.arange(-half, half + 1, dtype=np.float32) * np.float32(step)
    kernel = box_gaussian_mean(0.0, step, left_edge[None, :], left_edge[None, :] + np.float32(step),
                               ops.reshape(sigma, (-1, 1)))  # (B, 2 half + 1)
    n_fft = int(2 ** np.ceil(np.log2(length + 2 * half + 1)))
    wrapped = ops.concatenate([kernel[:, half:], ops.zeros((ops.shape(kernel)[0], n_fft - 2 * half - 1)),
                               kernel[:, :half]], axis=1)  # m >= 0 first, negative m wrapped to the end
    flux_re, flux_im = ops.rfft(ops.pad(flux, ((0, 0), (0, n_fft - length))))
    kern_re, kern_im = ops.rfft(wrapped)
    product = (flux_re * kern_re - flux_im * kern_im, flux_re * kern_im + flux_im * kern_re)
    return ops.irfft(product, fft_length=n_fft)[:, :length]


def blur_rebin(band: Band, flux, sigma=None):
    """Flux (B, L_in) blurred by a Gaussian of `sigma` [Å] ((B,), (B, L_out) or None) and
    averaged over the output pixels: (B, L_out) float32 (keras tensor)."""
    weights = band.weights(sigma)
    return ops.sum(weights * _gather(ops.cast(flux, "float32"), band.index), axis=-1)


def resample(band: Band, flux, ivar=None):
    """Flux-conserving rebinning of (B, L_in) rows; returns (flux, ivar) (B, L_out) tensors.

    Each output pixel gets the overlap-weighted mean of the input bins it covers and the
    variance sum(w_i² / ivar_i). A pixel not fully inside the input range, or touched by a
    masked input (ivar = 0), gets flux 0 and ivar 0 (`kernel.weighted_rebin`). ivar None:
    a noiseless model (ivar None out; only the coverage applies).
    """
    weights = band.weights() * ops.expand_dims(ops.cast(band.inside, "float32"), -1)
    gathered_ivar = None if ivar is None else _gather(ops.cast(ivar, "float32"), band.index)
    return weighted_rebin(weights, _gather(ops.cast(flux, "float32"), band.index), gathered_ivar)


def resample_flux(edges_in, flux, ivar, edges_out):
    """numpy in, numpy out: `resample` between grids given as edges (shared or per row).

    edges_in (L_in+1,) or (B, L_in+1); flux (..., L_in) (one batch axis B with per-row
    edges); ivar broadcastable to flux, or None; edges_out (L_out+1,) or (B, L_out+1).
    Returns (flux, ivar) float64 arrays of shape (..., L_out) (ivar None when None).
    """
    edges_in = np.asarray(edges_in, np.float64)
    edges_out = np.asarray(edges_out, np.float64)
    flux = np.asarray(flux, np.float64)
    n_in = flux.shape[-1]
    if n_in != edges_in.shape[-1] - 1:
        raise ValueError(f"flux has {n_in} pixels but edges_in {edges_in.shape[-1]}")
    if edges_in.ndim == 2 or edges_out.ndim == 2:
        rows = max([flux.size // n_in] + [e.shape[0] for e in (edges_in, edges_out) if e.ndim == 2])
        out_shape = (rows,)
    else:
        rows, out_shape = flux.size // n_in, flux.shape[:-1]
    flux2 = np.broadcast_to(flux.reshape(-1, n_in), (rows, n_in))
    ivar2 = None
    if ivar is not None:
        ivar2 = np.broadcast_to(np.broadcast_to(np.asarray(ivar, np.float64), flux.shape).reshape(-1, n_in),
                                (rows, n_in))
    out_flux, out_ivar = resample(band_geometry(edges_in, edges_out), flux2, ivar2)
    shape = out_shape + (edges_out.shape[-1] - 1,)
    out_flux = np.asarray(keras.ops.convert_to_numpy(out_flux), np.float64).reshape(shape)
    if out_ivar is None:
        return out_flux, None
    return out_flux, np.asarray(keras.ops.convert_to_numpy(out_ivar), np.float64).reshape(shape)


def finer_grid_ivar_factor(edges_in, edges_out) -> np.ndarray:
    """min(1, Δλ_out / Δλ_in) at each output pixel, (L_out,) or (B, L_out).

    Resampling onto a finer grid copies one input pixel's value into several output pixels,
    whose errors are then fully correlated; treating them as independent would multiply the
    information by Δλ_in / Δλ_out. Scaling each output pixel's ivar by this factor keeps the
    total information of the input (a diagonal stand-in for the correlated covariance), so
    intervals stay calibrated on any grid. Onto a coarser grid the factor is 1.
    """
    edges_in, edges_out = np.asarray(edges_in, float), np.asarray(edges_out, float)
    centres_out, width_out = 0.5 * (edges_out[1:] + edges_out[:-1]), np.diff(edges_out)
    rows = np.atleast_2d(edges_in)
    width_in = np.stack([np.interp(centres_out, 0.5 * (row[1:] + row[:-1]), np.diff(row)) for row in rows])
    factor = np.minimum(1.0, width_out / width_in)
    return factor if edges_in.ndim == 2 else factor[0]


def edges_from_centres(wave):
    """Pixel edges (..., L+1) [Å] from centres (..., L): midpoints, ends extrapolated."""
    wave = np.asarray(wave, float)
    mid = 0.5 * (wave[..., 1:] + wave[..., :-1])
    return np.concatenate([2 * wave[..., :1] - mid[..., :1], mid, 2 * wave[..., -1:] - mid[..., -1:]],
                          axis=-1)
