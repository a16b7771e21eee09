"""The hi-res window on an instrument's pixels: placement, resampling and the forward operator.

The hi-res target is TARGET_GRID (rest frame, 320 bins of 1 Å from 6460 Å) placed at a
redshift z: bin i covers observed [(6460 + i)(1 + z), (6461 + i)(1 + z)] Å. Everything here
works in *window coordinates* t = λ_obs / (1 + z) - 6460 [rest Å], in which the window's
bin i is [i, i + 1], and on the M instrument pixels that can touch the window
(`WindowPixels`, M fixed per instrument).

Precision: observed wavelengths ~1.5e4 Å carry only ~1e-3 Å in float32, so the pixel
edges are never formed in observed Å. With a linear instrument grid e_j = e_0 + j d,
t_j = (e_0 - 6460 + j d - 6460 z) / (1 + z); the large terms cancel exactly using a
float64 table of e_0 - 6460 + k d split into two float32 parts and z split so that
6460 z_hi is exact in float32. Window coordinates are then good to ~1e-5 Å on every
backend (tested against a float64 reference).

The forward operator (`forward_operator`): a hi-res window x (B, 320) (piecewise constant,
already at R = 3600) blurred to the instrument's LSF (Gaussian of width
sqrt(σ_inst² - σ_3600² - w²/6), w the 1 Å bin: the bins' own width counts) and averaged
over each instrument pixel: y = A x, A (B, M, 320), with the first and last window bins
extended as constants beyond the window. Only pixels fully inside the window are
observations of it (`Observation`); the same A serves the re-observation chi2, the
sampler's data-consistency step and serving.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from keras import ops

from specsr_keras.instruments import TARGET_GRID, Instrument
from specsr_keras.physics import FWHM_PER_SIGMA
from specsr_keras.spectral.kernel import rebin_weights, weighted_rebin

WINDOW_START = float(TARGET_GRID.bin_edges[0])  # 6460 Å (rest)
WINDOW_BINS = TARGET_GRID.n_pixels  # 320
# z is split as z_hi + z_lo with z_hi a multiple of 2**-_Z_SPLIT_BITS, so that
# WINDOW_START * z_hi is exact in float32 (6460 = 4 x 1615, an 11-bit odd part).
_Z_SPLIT = 2.0**11
# Redshift placed when a row has none (NaN) or an unphysical one: the window at the band centre.
MIN_VALID_Z = -0.5


def window_edges_rest() -> np.ndarray:
    """The window's bin edges in window coordinates (321,): 0, 1, ..., 320."""
    return TARGET_GRID.bin_edges - WINDOW_START


@functools.lru_cache(maxsize=16)
def observed_pixels(instrument: Instrument) -> int:
    """M: how many of `instrument`'s pixels `window_pixels` returns per row (static)."""
    return _instrument_tables(instrument)[0]


def _instrument_tables(instrument: Instrument):
    """Static tables of `instrument`: M, and e_0 - 6460 + k d (split hi/lo float32) for k in
    [-M, L + M], and m d for m in [0, M]."""
    edges = instrument.bin_edges
    step = float(np.diff(edges).mean())
    if not np.allclose(np.diff(edges), step, rtol=1e-9, atol=0):
        raise ValueError(f"{instrument.name}: the window geometry needs a linear pixel grid")
    z_max = edges[-1] / WINDOW_START - 1.0
    n_window = int(math.ceil(WINDOW_BINS * (1.0 + z_max) / step)) + 3
    n_pix = edges.size - 1
    k = np.arange(-n_window, n_pix + n_window + 1)
    start = edges[0] - WINDOW_START + k * step
    start_hi = start.astype(np.float32)
    start_lo = (start - start_hi.astype(np.float64)).astype(np.float32)
    offsets = (np.arange(n_window + 1) * step).astype(np.float32)
    return n_window, n_pix, step, start_hi, start_lo, offsets


def placement_redshift(z, instrument: Instrument):
    """z (B,) float32 with NaN or z < MIN_VALID_Z replaced by the band-centre placement."""
    z = ops.cast(z, "float32")
    centre = 0.5 * (instrument.bin_edges[0] + instrument.bin_edges[-1])
    fallback = float(centre / TARGET_GRID.wavelength.mean() - 1.0)
    ok = ops.logical_and(ops.isfinite(z), z >= MIN_VALID_Z)
    return ops.where(ok, z, fallback)


@dataclass(frozen=True)
class WindowPixels:
    """The M instrument pixels around the window of each row (tensors).

    index (B, M) int32: pixel index on the instrument grid (clipped); on_grid (B, M): the
    pixel exists; edges (B, M+1) float32: pixel edges in window coordinates [rest Å];
    z (B,) float32: the placement redshift.
    """

    index: object
    on_grid: object
    edges: object
    z: object

    @property
    def inside_window(self):
        """(B, M) bool: the pixel lies fully inside the window (and on the grid)."""
        inside = ops.logical_and(self.edges[:, :-1] >= 0.0, self.edges[:, 1:] <= float(WINDOW_BINS))
        return ops.logical_and(inside, self.on_grid)


def window_pixels(instrument: Instrument, z) -> WindowPixels:
    """The instrument pixels around the window placed at z (B,) (already valid, see
    `placement_redshift`), with their edges in window coordinates (see module docstring)."""
    n_window, n_pix, step, start_hi, start_lo, offsets = _instrument_tables(instrument)
    z = ops.cast(z, "float32")
    one_plus_z = 1.0 + z
    # First pixel: the one holding the window's blue edge, minus one for safety.
    first = ops.cast(ops.floor((WINDOW_START * one_plus_z - float(instrument.bin_edges[0])) / step), "int32") - 1
    first = ops.clip(first, -n_window, n_pix - 1)
    table = first + n_window
    z_hi = ops.round(z * _Z_SPLIT) / _Z_SPLIT
    z_lo = z - z_hi
    base = (ops.take(ops.convert_to_tensor(start_hi), table) - WINDOW_START * z_hi) + (
        ops.take(ops.convert_to_tensor(start_lo), table) - WINDOW_START * z_lo)
    numerator = ops.expand_dims(base, -1) + ops.expand_dims(ops.convert_to_tensor(offsets), 0)
    edges = numerator / ops.expand_dims(one_plus_z, -1)
    index = ops.expand_dims(first, -1) + ops.expand_dims(ops.arange(n_window, dtype="int32"), 0)
    on_grid = ops.logical_and(index >= 0, index < n_pix)
    return WindowPixels(ops.clip(index, 0, n_pix - 1), on_grid, edges, z)


def gather_pixels(values, pixels: WindowPixels):
    """values (B, L) on the instrument grid -> (B, M) at the window's pixels (0 off the grid)."""
    picked = ops.take_along_axis(ops.cast(values, "float32"), pixels.index, axis=1)
    return ops.where(pixels.on_grid, picked, 0.0)


def to_window(flux, ivar, pixels: WindowPixels):
    """Instrument spectra (B, L) resampled onto the window bins: (flux, ivar) (B, 320).

    Flux-conserving (`kernel.weighted_rebin`): a bin not fully covered by pixels on the
    grid, or touched by a masked pixel (ivar 0), gets flux 0 and ivar 0.
    """
    weights = rebin_weights(ops.convert_to_tensor(window_edges_rest()[None, :]), pixels.edges)  # (B, 320, M)
    flux = ops.expand_dims(gather_pixels(flux, pixels), 1)
    ivar = ops.expand_dims(gather_pixels(ivar, pixels), 1)  # 0 off the grid
    return weighted_rebin(weights, flux, ivar)


def lsf_sigma(instrument: Instrument, wave, source_sigma_arcsec=None):
    """The instrument's Gaussian LSF sigma [Å] at observed `wave` (B,) for sources of Gaussian
    sigma `source_sigma_arcsec` (B,) along the dispersion (NaN / None: the instrument's
    reference size), as `Instrument.lsf_sigma` in keras.ops."""
    wave = ops.cast(wave, "float32")
    if instrument.kind == "slit":
        return wave / float(FWHM_PER_SIGMA * instrument.resolving_power_ref)
    reference = float(instrument.resolving_power_source_sigma)
    if source_sigma_arcsec is None:
        size = ops.full(ops.shape(wave), reference)
    else:
        size = ops.cast(source_sigma_arcsec, "float32")
        size = ops.where(ops.logical_and(ops.isfinite(size), size >= 0), size, reference)
    psf = float(instrument.lsf_sigma(np.array([1.0]), 0.0)[0])
    size_angstrom = size / float(instrument.pixel_scale_arcsec) * float(instrument.dispersion)
    return ops.sqrt(psf**2 + ops.square(size_angstrom))


def blur_sigma_rest(instrument: Instrument, z, source_sigma_arcsec=None):
    """Width [rest Å] of the Gaussian taking the R=3600 window to the instrument's LSF at the
    window centre: sqrt(σ_inst² - σ_3600² - w²/6) / (1 + z), w = (1 + z) Å the bin width."""
    z = ops.cast(z, "float32")
    centre = float(TARGET_GRID.wavelength.mean()) * (1.0 + z)
    sigma_inst = lsf_sigma(instrument, centre, source_sigma_arcsec)
    sigma_target = centre / float(FWHM_PER_SIGMA * TARGET_GRID.resolving_power)
    variance = ops.square(sigma_inst) - ops.square(sigma_target) - ops.square(1.0 + z) / 6.0
    return ops.sqrt(ops.maximum(variance, 1e-6)) / (1.0 + z)


def forward_operator(pixels: WindowPixels, sigma_rest):
    """A (B, M, 320): the window seen through the instrument, y = A x (module docstring).

    sigma_rest (B,): `blur_sigma_rest`. Rows of pixels off the grid are 0.
    """
    sigma = ops.reshape(ops.cast(sigma_rest, "float32"), (-1, 1, 1))
    window = ops.convert_to_tensor(window_edges_rest()[None, :].astype(np.float32))
    operator = rebin_weights(pixels.edges, window, sigma, extend_ends=True)
    return operator * ops.expand_dims(ops.cast(pixels.on_grid, "float32"), -1)


@dataclass(frozen=True)
class Observation:
    """The low-res pixels that observe the window, and the operator that predicts them.

    operator (B, M, 320); flux, ivar (B, M): the data at those pixels, ivar 0 where the
    pixel is masked, off the grid or not fully inside the window (not an observation);
    edges (B, M+1): the pixels' edges in window coordinates [rest Å]; instrument_id: the
    observing instrument's `Instrument.instrument_id` (static).
    """

    operator: object
    flux: object
    ivar: object
    edges: object
    instrument_id: int

    def count_between(self, lo: float, hi: float):
        """(B,) observing pixels overlapping [lo, hi] rest Å (absolute rest wavelengths)."""
        start, stop = lo - WINDOW_START, hi - WINDOW_START
        overlaps = ops.logical_and(self.edges[:, 1:] > start, self.edges[:, :-1] < stop)
        return ops.sum(ops.cast(ops.logical_and(overlaps, self.ivar > 0), "float32"), axis=-1)

    def predict(self, window):
        """A x: (B, 320) or (B, K, 320) windows -> (B, M) or (B, K, M) model pixels."""
        if len(window.shape) == 3:
            return ops.einsum("bmi,bki->bkm", self.operator, window)
        return ops.einsum("bmi,bi->bm", self.operator, window)

    @property
    def count(self):
        """(B,) number of observing pixels."""
        return ops.sum(ops.cast(self.ivar > 0, "float32"), axis=-1)

    def chi2(self, window):
        """(B,) or (B, K): sum over observing pixels of ivar (y - A x)²."""
        model = self.predict(window)
        flux, ivar = (self.flux, self.ivar) if len(window.shape) == 2 else (self.flux[:, None], self.ivar[:, None])
        return ops.sum(ivar * ops.square(flux - model), axis=-1)


def observe(instrument: Instrument, flux, ivar, z, source_sigma_arcsec=None) -> Observation:
    """The `Observation` of the window at z (B,) by cleaned instrument spectra flux, ivar (B, L)."""
    pixels = window_pixels(instrument, z)
    operator = forward_operator(pixels, blur_sigma_rest(instrument, z, source_sigma_arcsec))
    observed = ops.logical_and(pixels.inside_window, gather_pixels(ivar, pixels) > 0)
    return Observation(operator, ops.where(observed, gather_pixels(flux, pixels), 0.0),
                       ops.where(observed, gather_pixels(ivar, pixels), 0.0), pixels.edges, instrument.instrument_id)


def shift_window(window, ivar, z_from, z_to):
    """Windows (B, 320) placed at z_from moved onto the window at z_to, flux-conserving.

    Bin i at z_from covers t in [(6460 + i) δ + i, (6461 + i) δ + i + 1] of the window at
    z_to, δ = (z_from - z_to) / (1 + z_to) (from the difference of redshifts: exact in
    float32). ivar (B, 320) is propagated as in `to_window`. Returns (window, ivar) (B, 320).
    """
    z_from, z_to = ops.cast(z_from, "float32"), ops.cast(z_to, "float32")
    delta = ops.expand_dims((z_from - z_to) / (1.0 + z_to), -1)
    rest = ops.convert_to_tensor(TARGET_GRID.bin_edges.astype(np.float32)[None, :])
    target = ops.convert_to_tensor(window_edges_rest().astype(np.float32)[None, :])
    weights = rebin_weights(target, rest * delta + target)  # (B, 320, 320)
    return weighted_rebin(weights, ops.expand_dims(window, 1), ops.expand_dims(ivar, 1))
