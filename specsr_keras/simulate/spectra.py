"""Spectra of a simulated population: the low-res instrument spectrum and the R=3600 target.

The model is built at high resolution in the observed frame: continuum (power laws with a
4000 Å break, Calzetti dust) plus Gaussian lines integrated exactly over fine pixels.
Low-res: the LSF (with source-size broadening) on a fine model grid, exact for the binned
model (`spectral.band.convolve_uniform`: the kernel of the instrument's forward operator),
a neighbour's contamination, rebinning onto the instrument grid (`spectral.band.resample`),
noise from the instrument's model, cosmics. Simulated low-res instruments are slitless
(one LSF sigma per galaxy, constant in wavelength). Target: the same noiseless model
without contamination, convolved to R = 3600 and resampled onto TARGET_GRID.bin_edges *
(1+z) per object (docs/contracts.md), computed in the equivalent rest-frame form (see
`hires_spectra`).
Units: Å; flux density 1e-17 erg s^-1 cm^-2 Å^-1; line fluxes 1e-17 erg s^-1 cm^-2.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from scipy.special import expit, ndtr

from specsr_keras import physics
from specsr_keras.instruments import TARGET_GRID, Instrument
from specsr_keras.simulate import population
from specsr_keras.spectral.band import band_geometry, blur_rebin, convolve_uniform, locate_bins, resample

# Model pixels per instrument pixel (the model grid samples the instrument LSF with >= 2.4
# model pixels per sigma).
MODEL_OVERSAMPLING = 3
# Model pixel of the target spectrum [rest Å] (the R=3600 LSF sigma is 0.77 Å at Hα).
HIRES_MODEL_STEP_REST = 0.4
# Rest-frame margin of the target model grid beyond TARGET_GRID [Å] (> 6 LSF sigmas).
HIRES_MODEL_MARGIN_REST = 8.0
# Gaussian lines are rendered out to this many sigma (the rest is < 2e-9 of the flux).
LINE_HALF_WIDTH_SIGMAS = 6.0
# The smooth continuum is evaluated on every CONTINUUM_STRIDE-th model pixel and
# interpolated linearly in between (error < 1 %, largest at the 4000 Å break).
CONTINUUM_STRIDE = 8
# Half-width of the smooth edges of a first-order contamination continuum [Å].
FIRST_ORDER_EDGE_A = 50.0
# Cosmic rays / hot pixels: amplitude in units of the pixel noise.
COSMIC_AMPLITUDE_SIGMAS = (5.0, 50.0)
_BREAK_REST_A = 4000.0
_BREAK_WIDTH_A = 50.0
_HALPHA = physics.LINE_WAVELENGTHS["halpha"]


def continuum_flux(pop, wave_obs):
    """Continuum f_λ (n, L) [1e-17 erg/s/cm²/Å] at observed wavelengths (L,) or (n, L) [Å].

    Optical power law λ^β normalised at observed Hα, below the 4000 Å break a dust-free
    UV slope lower by the break strength D4000, all attenuated by Calzetti et al. 2000.
    """
    opz = 1.0 + pop["z"][:, None]
    rest = np.asarray(wave_obs, float) / opz
    beta = pop["beta_optical"][:, None]
    red = (rest / _HALPHA) ** beta
    blue = ((_BREAK_REST_A / _HALPHA) ** beta / pop["d4000"][:, None]
            * (rest / _BREAK_REST_A) ** population.BETA_UV_DUST_FREE)
    step = expit((rest - _BREAK_REST_A) / _BREAK_WIDTH_A)
    dust = 10.0 ** (-0.4 * pop["av_stellar"][:, None]
                    * (physics.calzetti_extinction(rest) - physics.calzetti_extinction(_HALPHA)))
    return pop["continuum_at_ha"][:, None] * (step * red + (1.0 - step) * blue) * dust


def continuum_on_grid(pop, wave_obs, stride=CONTINUUM_STRIDE):
    """`continuum_flux` on a fine grid (L,) or (n, L) [Å], evaluated every `stride` pixels."""
    n_pix = wave_obs.shape[-1]
    nodes = np.unique(np.append(np.arange(0, n_pix, stride), n_pix - 1))
    coarse = continuum_flux(pop, wave_obs[..., nodes])
    left = np.clip(np.searchsorted(nodes, np.arange(n_pix), side="right") - 1, 0, nodes.size - 2)
    frac = (np.arange(n_pix) - nodes[left]) / (nodes[left + 1] - nodes[left])
    return coarse[:, left] * (1.0 - frac) + coarse[:, left + 1] * frac


def line_components(pop):
    """Gaussian components (n, K): observed centre [Å], sigma [Å], flux (negative = absorption).

    Narrow lines share sigma_v; broad components (AGN or outflow) have their own width and
    velocity; stellar Balmer absorption has EW_rest * continuum and a rest-frame width.
    """
    lines = physics.LINE_WAVELENGTHS
    z = pop["z"]
    zero = np.zeros_like(z)
    narrow = {
        "hbeta": pop["hb_flux"],
        "oiii_4960": pop["oiii_5008_flux"] / physics.OIII_DOUBLET_RATIO,
        "oiii_5008": pop["oiii_5008_flux"],
        "nii_6550": pop["nii_6550_flux"],
        "halpha": pop["ha_flux"],
        "nii_6585": pop["nii_6585_flux"],
        "sii_6718": pop["sii_6718_flux"],
        "sii_6733": pop["sii_6733_flux"],
        "siii_9533": population.SIII_9533_TO_HALPHA * pop["ha_flux"],
        "siii_9071": population.SIII_9533_TO_HALPHA * pop["ha_flux"]
        / population.SIII_DOUBLET_RATIO,
    }
    broad = {
        "halpha": pop["broad_ha_flux"],
        "hbeta": pop["broad_hb_flux"],
        "nii_6585": pop["broad_nii_6585_flux"],
        "nii_6550": pop["broad_nii_6585_flux"] / physics.NII_DOUBLET_RATIO,
    }
    rest, sigma_kms, velocity_kms, flux = [], [], [], []
    for name, line_flux in narrow.items():
        rest.append(lines[name]), sigma_kms.append(pop["sigma_v_kms"])
        velocity_kms.append(zero), flux.append(line_flux)
    for name, line_flux in broad.items():
        rest.append(lines[name]), sigma_kms.append(pop["broad_sigma_kms"])
        velocity_kms.append(pop["broad_velocity_kms"]), flux.append(line_flux)
    for name, ew_scale in (("halpha", 1.0), ("hbeta", population.ABSORPTION_HB_TO_HA)):
        centre = lines[name] * (1.0 + z)
        continuum = continuum_flux(pop, centre[:, None])[:, 0]
        rest.append(lines[name])
        sigma_kms.append(pop["absorption_sigma_rest"] / lines[name] * physics.SPEED_OF_LIGHT_KMS)
        velocity_kms.append(zero)
        flux.append(-ew_scale * pop["absorption_ew_ha"] * (1.0 + z) * continuum)
    rest = np.array(rest)[None, :]
    doppler = 1.0 + np.stack(velocity_kms, axis=1) / physics.SPEED_OF_LIGHT_KMS
    centres = rest * (1.0 + z[:, None]) * doppler
    sigmas = centres * np.stack(sigma_kms, axis=1) / physics.SPEED_OF_LIGHT_KMS
    return centres, sigmas, np.stack(flux, axis=1)


def render_lines(edges, centres, sigmas, fluxes):
    """Bin-averaged flux density (n, L) of Gaussian lines, integrated exactly over each bin.

    edges (L+1,) or (n, L+1) [Å]; centres, sigmas [Å] and fluxes (n, K). Each component
    is evaluated only on a window of +-LINE_HALF_WIDTH_SIGMAS around its centre.
    """
    edges = np.asarray(edges, float)
    n, n_pix = centres.shape[0], edges.shape[-1] - 1
    out = np.zeros((n, n_pix))
    min_width = np.diff(edges, axis=-1).min()
    for k in range(centres.shape[1]):
        mu, s, flux = centres[:, k], sigmas[:, k], fluxes[:, k]
        reach = LINE_HALF_WIDTH_SIGMAS * s
        rows = np.flatnonzero((flux != 0) & (mu + reach > edges[..., 0])
                              & (mu - reach < edges[..., -1]))
        if rows.size == 0:
            continue
        width = min(int(np.ceil(2 * reach[rows].max() / min_width)) + 2, n_pix)
        row_edges = edges[rows] if edges.ndim == 2 else edges
        centre_bin = locate_bins(row_edges, mu[rows, None])[:, 0]
        start = np.clip(centre_bin - width // 2, 0, n_pix - width)
        cols = start[:, None] + np.arange(width)
        window_edges = np.take_along_axis(np.broadcast_to(row_edges, (rows.size, n_pix + 1)),
                                          start[:, None] + np.arange(width + 1), axis=-1)
        cdf = ndtr((window_edges - mu[rows, None]) / s[rows, None])
        out[rows[:, None], cols] += flux[rows, None] * np.diff(cdf) / np.diff(window_edges)
    return out


def add_contamination(pop, wave, flux):
    """Add in place a neighbour's zeroth-order peak or first-order continuum to flux (n, L)."""
    rows = np.flatnonzero(pop["contamination_kind"] > 0)
    kind = pop["contamination_kind"][rows, None]
    centre = pop["contamination_centre"][rows, None]
    amplitude = pop["contamination_flux"][rows, None]
    sigma = pop["contamination_sigma"][rows, None]
    peak = np.exp(-0.5 * ((wave - centre) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    half = 0.5 * pop["contamination_length"][rows, None]
    plateau = expit((wave - centre + half) / FIRST_ORDER_EDGE_A) * expit(
        (centre + half - wave) / FIRST_ORDER_EDGE_A)
    flux[rows] += amplitude * np.where(kind == 1, peak, plateau)


def add_artefacts(pop, instrument: Instrument, flux, ivar):
    """Add in place the unmasked artefacts of `population.draw_artefacts` to the low-res
    flux (n, L): each offset pixel by artefact_sigmas x its noise sigma (from ivar; masked
    pixels are left alone). Returns flux."""
    rows = np.flatnonzero(pop["artefact_pixels"] > 0)
    first = np.clip(np.searchsorted(instrument.bin_edges, pop["artefact_centre"][rows]) - 1, 0, flux.shape[1] - 1)
    for row, start in zip(rows, first, strict=True):
        cols = slice(start, min(start + int(pop["artefact_pixels"][row]), flux.shape[1]))
        good = ivar[row, cols] > 0
        sigma = 1.0 / np.sqrt(np.where(good, ivar[row, cols], 1.0))
        flux[row, cols] += np.where(good, pop["artefact_sigmas"][row] * sigma, 0.0).astype(flux.dtype)
    return flux


def model_lsf_sigma(sigma, step):
    """LSF sigma [Å] to apply to a model binned on pixels of `step` [Å].

    Lines rendered as bin averages and then treated as piecewise constant are widened by
    two one-pixel boxes (step²/6 in variance), taken out here so the total is `sigma`.
    """
    return np.sqrt(np.maximum(sigma**2 - step**2 / 6.0, 0.0))


def _widest_lsf(instrument: Instrument) -> float:
    """The largest LSF sigma [Å] of a simulated source on `instrument`."""
    return float(np.max(instrument.lsf_sigma(instrument.bin_edges[[0, -1]], population.R_EFF_RANGE_ARCSEC[1])))


@functools.lru_cache(maxsize=8)
def _lowres_model_edges(instrument: Instrument) -> np.ndarray:
    """Fine observed-frame model grid [Å] covering the instrument plus the widest LSF; its
    edges include every instrument pixel edge (MODEL_OVERSAMPLING per pixel)."""
    step = instrument.dispersion / MODEL_OVERSAMPLING
    pad = int(np.ceil((LINE_HALF_WIDTH_SIGMAS * _widest_lsf(instrument) + 4 * instrument.dispersion) / step))
    return instrument.wave_min + step * np.arange(-pad, instrument.grid.n_pixels * MODEL_OVERSAMPLING + pad + 1)


@functools.lru_cache(maxsize=8)
def _lowres_band(instrument: Instrument):
    """Band geometry from the fine model grid onto the instrument's pixels (plain rebinning)."""
    return band_geometry(_lowres_model_edges(instrument), instrument.bin_edges)


@functools.lru_cache(maxsize=1)
def _hires_model_rest_edges() -> np.ndarray:
    """Log-uniform rest-frame model grid [Å] around TARGET_GRID, HIRES_MODEL_STEP_REST wide."""
    lo = TARGET_GRID.bin_edges[0] - HIRES_MODEL_MARGIN_REST
    hi = TARGET_GRID.bin_edges[-1] + HIRES_MODEL_MARGIN_REST
    n_pix = int(np.ceil(np.log(hi / lo) / np.log1p(HIRES_MODEL_STEP_REST / lo)))
    return np.geomspace(lo, hi, n_pix + 1)


@functools.lru_cache(maxsize=1)
def _hires_band():
    """Band geometry and LSF sigma (1, 320) [Å] from the rest model grid onto TARGET_GRID at R = 3600."""
    edges = _hires_model_rest_edges()
    sigma = model_lsf_sigma(TARGET_GRID.lsf_sigma(TARGET_GRID.wavelength), HIRES_MODEL_STEP_REST)
    return band_geometry(edges, TARGET_GRID.bin_edges, LINE_HALF_WIDTH_SIGMAS * sigma.max()), sigma[None, :]


def _numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


# Galaxies per call of the band kernels (bounds their (rows, pixels, band) temporaries).
_KERNEL_ROWS = 128


def _in_row_chunks(function, *arrays):
    """function(*row_slices) over chunks of _KERNEL_ROWS rows, concatenated (numpy); the last
    chunk is padded by repeating its last row, so every call has the same shapes."""
    n = len(arrays[0])
    padded = [np.concatenate([a, np.repeat(a[-1:], -n % _KERNEL_ROWS, axis=0)]) for a in arrays]
    return np.concatenate([_numpy(function(*(a[i : i + _KERNEL_ROWS] for a in padded)))
                           for i in range(0, n, _KERNEL_ROWS)])[:n]


def lowres_spectra(pop, lines, instrument: Instrument, rng: np.random.Generator,
                   cosmic_rate: float, noise_scale: float = 1.0):
    """Noisy low-res spectra on the instrument grid: flux, ivar (n, L) float32, mask bool.

    lines: `line_components(pop)`; noise_scale multiplies the instrument's noise sigma.
    """
    edges = _lowres_model_edges(instrument)
    wave = 0.5 * (edges[1:] + edges[:-1])
    step = edges[1] - edges[0]
    size = pop["dispersion_sigma_arcsec"][:, None]
    model = continuum_on_grid(pop, wave) + render_lines(edges, *lines)
    # Slitless LSF: one sigma per galaxy (constant in wavelength), exact for the binned model.
    lsf = model_lsf_sigma(instrument.lsf_sigma(np.ones(1), size[:, 0]), step)
    model = _in_row_chunks(lambda m, s: convolve_uniform(m, step, s, _widest_lsf(instrument)), model, lsf)
    add_contamination(pop, wave, model)
    model = _in_row_chunks(lambda m: resample(_lowres_band(instrument), m)[0], model)
    sigma = instrument.noise_sigma(model, size) * noise_scale
    flux = model + sigma * rng.standard_normal(model.shape)
    ivar = 1.0 / sigma**2
    # Cosmic rays and hot pixels: a Poisson number per spectrum at random pixels, masked.
    hits = rng.poisson(cosmic_rate, model.shape[0])
    rows = np.repeat(np.arange(model.shape[0]), hits)
    cols = rng.integers(0, model.shape[1], rows.size)
    np.add.at(flux, (rows, cols), rng.uniform(*COSMIC_AMPLITUDE_SIGMAS, rows.size)
              * sigma[rows, cols])
    ivar[rows, cols] = 0.0
    return {"lowres_flux": flux.astype(np.float32), "lowres_ivar": ivar.astype(np.float32),
            "lowres_mask": ivar == 0}


def hires_spectra(pop, lines, snr_factor: float):
    """Noiseless R=3600 target spectra (n, 320) and the ivar of a MOSFIRE-like observation.

    lines: `line_components(pop)`. hires_ivar is constant per object, set so the
    matched-filter narrow-Hα S/N equals `snr_factor` x `pop["narrow_ha_snr"]` (the grism's).
    """
    # Integrating f_obs over the observed bins TARGET_GRID.bin_edges (1+z) and dividing by
    # their width equals doing it for g(λ) = f_obs(λ (1+z)) over the rest bins; g has the
    # lines at rest wavelengths with rest widths and fluxes F/(1+z), and R is unchanged.
    # So the model is built on one rest-frame grid shared by all galaxies.
    rest_edges = _hires_model_rest_edges()
    rest_wave = 0.5 * (rest_edges[1:] + rest_edges[:-1])
    opz = 1.0 + pop["z"][:, None]
    centres, sigmas, fluxes = lines
    model = (continuum_on_grid(pop, rest_wave * opz)
             + render_lines(rest_edges, centres / opz, sigmas / opz, fluxes / opz))
    band, lsf = _hires_band()
    flux = _in_row_chunks(lambda m: blur_rebin(band, m, np.broadcast_to(lsf, (len(m), lsf.shape[1]))), model)
    # Hα in target units integrates to F/(1+z) over rest Å; its width adds the R=3600 LSF;
    # matched-filter S/N = F' / (noise sqrt(2 sqrt(pi) sigma * 1 Å bin)).
    line_sigma = np.hypot(physics.velocity_to_sigma_angstrom(pop["sigma_v_kms"], _HALPHA),
                          TARGET_GRID.lsf_sigma(_HALPHA))
    snr = snr_factor * pop["narrow_ha_snr"]
    noise = pop["ha_flux"] / (1.0 + pop["z"]) / (snr * np.sqrt(2 * np.sqrt(np.pi) * line_sigma))
    ivar = np.broadcast_to(1.0 / noise[:, None] ** 2, flux.shape)
    return {"hires_flux": flux.astype(np.float32), "hires_ivar": ivar.astype(np.float32),
            "hires_mask": np.zeros(flux.shape, bool)}
