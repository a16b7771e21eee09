"""The one flux-conserving resampler and the one Gaussian LSF convolution of specsr.

Spectra are piecewise-constant flux densities on pixel bins. Wavelengths in Å; any flux
unit (kept); `ivar` is the inverse variance of flux, 0 for a masked pixel. Both functions
are vectorised over leading (batch) axes; no Python loop runs over spectra.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.special import ndtr

# Relative spread of the LSF width in pixels below which a row counts as constant-width
# and is convolved by FFT (the width error this allows is at most this fraction).
_CONSTANT_WIDTH_RTOL = 1e-3
# Half-width of the convolution kernel in LSF sigmas (truncated mass < 6e-7).
_KERNEL_HALF_WIDTH_SIGMAS = 5.0


def locate_bins(edges, values, side="right"):
    """Index i with edges[..., i] <= value < edges[..., i+1] (side="right", like searchsorted).

    edges (n,) or (B, n) increasing; values (..., m) with matching leading axis B when
    edges are per row. Returns integer array shaped like `values` (broadcast to B rows).
    """
    edges = np.asarray(edges, float)
    values = np.asarray(values, float)
    if edges.ndim == 1:
        return np.searchsorted(edges, values, side=side) - 1
    # Per-row edges: offset each row into its own disjoint range, search once.
    values = np.broadcast_to(values, edges.shape[:-1] + values.shape[-1:])
    low = min(edges[..., 0].min(), values.min())
    span = max(edges[..., -1].max(), values.max()) - low + 1.0
    offsets = span * np.arange(edges.shape[0])[:, None]
    flat = np.searchsorted(((edges - low) + offsets).ravel(), ((values - low) + offsets).ravel(),
                           side=side)
    return flat.reshape(values.shape) - (edges.shape[-1] * np.arange(edges.shape[0]))[:, None] - 1


def resample_flux(edges_in, flux, ivar, edges_out):
    """Flux-conserving resampling of binned spectra onto new bins.

    edges_in: (L_in+1,) or (B, L_in+1) [Å]; flux: (..., L_in) (a single batch axis when
    any edges are per row); ivar: broadcastable to flux, or None for a noiseless model;
    edges_out: (L_out+1,) or (B, L_out+1).
    Each output bin gets the overlap-weighted mean flux density of the input bins it covers
    (so the integral of flux over any union of output bins is conserved) and the variance
    sum(w_i² / ivar_i) with w_i = overlap_i / output width. An output bin not fully inside
    the input range, or touched by a masked input pixel (ivar = 0), gets flux 0, ivar 0.
    Returns (flux, ivar) of shape (..., L_out); ivar is None when ivar was None.
    """
    edges_in, flux, ivar, edges_out, batch_shape = _as_rows(edges_in, flux, ivar, edges_out)
    n_in = flux.shape[-1]
    lo, hi = edges_out[..., :-1], edges_out[..., 1:]
    first = np.clip(locate_bins(edges_in, lo, side="right"), 0, n_in - 1)  # bin holding lo
    last = np.clip(locate_bins(edges_in, hi, side="left"), 0, n_in - 1)  # bin holding hi
    width_in = np.diff(edges_in, axis=-1)
    good = None if ivar is None else ivar > 0
    clean_flux = flux if ivar is None else np.where(good, flux, 0.0)
    flux_cum = _cumulative(clean_flux * width_in)

    def integral(position, index):  # integral of flux density from edges_in[0] to position
        return (_take(flux_cum, index)
                + _take(clean_flux, index) * (position - _take(edges_in, index)))

    out_flux = (integral(hi, last) - integral(lo, first)) / (hi - lo)
    valid = (lo >= edges_in[..., :1]) & (hi <= edges_in[..., -1:])
    out_ivar = None
    if ivar is not None:
        variance = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
        var_cum = _cumulative(variance * width_in**2)
        bad_cum = _cumulative(~good)
        # Partial overlaps at both ends plus the fully covered bins in between.
        same = first == last
        head = np.where(same, hi, _take(edges_in, first + 1)) - lo
        tail = np.where(same, 0.0, hi - _take(edges_in, last))
        interior = np.where(same, 0.0,
                            _take(var_cum, last) - _take(var_cum, np.minimum(first + 1, last)))
        out_var = (head**2 * _take(variance, first) + tail**2 * _take(variance, last)
                   + interior) / (hi - lo) ** 2
        valid = valid & (_take(bad_cum, last + 1) == _take(bad_cum, first)) & (out_var > 0)
        out_ivar = np.where(valid, 1.0 / np.where(valid, out_var, 1.0), 0.0)
        out_ivar = out_ivar.reshape(batch_shape + out_ivar.shape[-1:])
    out_flux = np.where(valid, out_flux, 0.0)
    return out_flux.reshape(batch_shape + out_flux.shape[-1:]), out_ivar


def _as_rows(edges_in, flux, ivar, edges_out):
    """Arrays of resample_flux as 2-D rows (B, L), plus the batch shape to restore."""
    edges_in = np.asarray(edges_in, float)
    edges_out = np.asarray(edges_out, float)
    flux = np.asarray(flux, float)
    if flux.shape[-1] != edges_in.shape[-1] - 1:
        raise ValueError(f"flux has {flux.shape[-1]} pixels but edges_in {edges_in.shape[-1]}")
    if ivar is not None:
        ivar = np.asarray(ivar, float)
        if np.broadcast_shapes(flux.shape, ivar.shape) != flux.shape:
            raise ValueError(f"ivar {ivar.shape} does not broadcast to flux {flux.shape}")
        ivar = np.broadcast_to(ivar, flux.shape)
    n_pix = flux.shape[-1]
    if edges_in.ndim == 2 or edges_out.ndim == 2:  # per-row grids: one batch axis
        n_rows = max(flux.size // n_pix, edges_in.shape[0] if edges_in.ndim == 2 else 1,
                     edges_out.shape[0] if edges_out.ndim == 2 else 1)
        flux = np.broadcast_to(flux.reshape(-1, n_pix), (n_rows, n_pix))
        if ivar is not None:
            ivar = np.broadcast_to(ivar.reshape(-1, n_pix), (n_rows, n_pix))
        if edges_in.ndim == 2:
            edges_in = np.broadcast_to(edges_in, (n_rows, n_pix + 1))
    batch_shape = flux.shape[:-1]
    flux = flux.reshape(-1, n_pix)
    ivar = None if ivar is None else ivar.reshape(-1, n_pix)
    return edges_in, flux, ivar, edges_out, batch_shape


def _cumulative(values):
    """Running sum along the last axis with a leading 0: (..., L) -> (..., L+1)."""
    out = np.zeros(values.shape[:-1] + (values.shape[-1] + 1,))
    np.cumsum(values, axis=-1, out=out[..., 1:])
    return out


def _take(values, index):
    """values[..., index] for a shared index (m,) or per-row index (B, m)."""
    if values.ndim == 1 or index.ndim == 1:
        return values[..., index]
    return np.take_along_axis(values, np.broadcast_to(index, values.shape[:-1] + index.shape[-1:]),
                              axis=-1)


def edges_from_centres(wave):
    """Pixel edges (L+1,) [Å] from centres (L,): midpoints, ends extrapolated."""
    wave = np.asarray(wave, float)
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2 * wave[0] - mid[0]], mid, [2 * wave[-1] - mid[-1]]])


def convolve_lsf(wave, flux, sigma_angstrom):
    """Convolve binned spectra with a Gaussian LSF whose width may vary with wavelength.

    wave: (L,) pixel centres [Å], increasing; flux: (..., L) flux density;
    sigma_angstrom: LSF sigma [Å], broadcastable to flux (scalar, (L,), (B, 1), (B, L)).
    Each input pixel's flux (flux * width) is placed at its centre, spread by the Gaussian
    of that pixel's sigma and integrated over the output pixels, so the total flux is
    conserved except what spreads beyond the grid ends. Rows whose sigma is constant in
    pixel units (a linear grid with constant sigma, or a log grid with constant R) are
    done by FFT; others by a banded sum over pixel offsets. Returns (..., L).
    """
    wave = np.asarray(wave, float)
    flux = np.asarray(flux, float)
    edges = edges_from_centres(wave)
    width = np.diff(edges)
    sigma_pixels = np.asarray(sigma_angstrom, float) / width  # unbroadcast batch axes
    counts = flux * width
    row_max = sigma_pixels.max(axis=-1, keepdims=True)
    row_min = sigma_pixels.min(axis=-1, keepdims=True)
    if np.all(row_max - row_min <= _CONSTANT_WIDTH_RTOL * row_max):
        out = _convolve_constant_width(counts, 0.5 * (row_max + row_min))
    else:
        out = _convolve_banded(counts, edges, wave, np.asarray(sigma_angstrom, float))
    return out / width


def _gaussian_pixel_weights(offset, sigma_pixels):
    """Fraction of a Gaussian centred on a pixel that lands in the pixel `offset` away."""
    sigma = np.maximum(sigma_pixels, 1e-6)
    return ndtr((offset + 0.5) / sigma) - ndtr((offset - 0.5) / sigma)


def _convolve_constant_width(counts, sigma_pixels):
    """FFT convolution of counts (..., L) with a per-row kernel of width sigma_pixels (..., 1)."""
    n_pixels = counts.shape[-1]
    half = int(np.ceil(_KERNEL_HALF_WIDTH_SIGMAS * sigma_pixels.max())) + 1
    n_fft = scipy.fft.next_fast_len(n_pixels + 2 * half, real=True)
    offsets = np.arange(-half, half + 1)
    kernel = _gaussian_pixel_weights(offsets, sigma_pixels)  # (..., 2 half + 1)
    kernel = np.roll(np.concatenate(
        [kernel, np.zeros(kernel.shape[:-1] + (n_fft - kernel.shape[-1],))], axis=-1), -half,
        axis=-1)
    spectrum = scipy.fft.rfft(counts, n=n_fft, axis=-1) * scipy.fft.rfft(kernel, axis=-1)
    return scipy.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n_pixels]


def _convolve_banded(counts, edges, wave, sigma_angstrom):
    """Direct convolution: sum over pixel offsets of per-source-pixel erf weights."""
    sigma = np.maximum(np.broadcast_to(sigma_angstrom, counts.shape), 1e-9)
    n_pixels = counts.shape[-1]
    sigma_pixels = sigma / np.diff(edges)
    half = min(int(np.ceil(_KERNEL_HALF_WIDTH_SIGMAS * sigma_pixels.max())) + 1, n_pixels - 1)
    out = np.zeros(counts.shape)
    for offset in range(-half, half + 1):
        source = slice(max(0, -offset), n_pixels - max(0, offset))
        target = slice(max(0, offset), n_pixels - max(0, -offset))
        lo = edges[target.start:target.stop]
        hi = edges[target.start + 1:target.stop + 1]
        centre, s = wave[source], sigma[..., source]
        weights = ndtr((hi - centre) / s) - ndtr((lo - centre) / s)
        out[..., target] += counts[..., source] * weights
    return out
