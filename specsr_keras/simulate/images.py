"""Image cutouts of a simulated population: 64x64 pixels of 0.06", 4 HST-like bands.

Each galaxy is a Sérsic profile (the same r_eff, n, b/a and angle as its spectrum's
source-size LSF) sampled at pixel centres and normalised to its band flux; band fluxes
come from the spectrum's own continuum model at each band's pivot wavelength plus the
emission lines inside the band, so colours follow redshift, SFR (EW, slopes) and dust.
AGN add a point source. Each band is blurred to its Gaussian-like PSF and gets Gaussian
sky noise. Pixel values in nJy.

PSF: bands are blurred in order of increasing PSF width, each from the previous band's
image by 3-tap kernels [a, 1-2a, a] per axis whose variances (2a each) add up to the
band's PSF variance, i.e. a discrete Gaussian approximation that costs a few array passes
instead of a full convolution per band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

from specsr_keras.physics import FWHM_PER_SIGMA
from specsr_keras.simulate.spectra import continuum_flux

IMAGE_SIZE = 64
PIXEL_SCALE_ARCSEC = 0.06
# f_ν [nJy] = f_λ [1e-17 erg/s/cm²/Å] λ² [Å²] * 1e-17 / c [Å/s] / 1e-32.
_NJY_PER_FLAMBDA_A2 = 1e15 / 2.99792458e18
_AB_ZEROPOINT_NJY = 31.4
# 5-sigma depths are quoted in a circular aperture of this radius [arcsec].
_DEPTH_APERTURE_RADIUS_ARCSEC = 0.2
# Largest variance [pixel²] of one 3-tap blur pass (a = 0.25 keeps the kernel unimodal).
_MAX_PASS_VARIANCE = 0.5
# AGN point source: fraction of the host's F160W-like flux, colour f_ν ∝ λ^0.5.
AGN_POINT_FRACTION = (0.2, 1.0)
AGN_POINT_COLOUR_INDEX = 0.5


@dataclass(frozen=True)
class Band:
    """A top-hat band: pivot and width [Å], Gaussian PSF FWHM [arcsec], 5-sigma depth [AB]."""

    name: str
    pivot: float
    width: float
    psf_fwhm_arcsec: float
    depth_ab: float

    @property
    def pixel_noise_njy(self) -> float:
        """Sky noise per pixel [nJy] from the 5-sigma aperture depth (uncorrelated pixels)."""
        aperture_pixels = np.pi * (_DEPTH_APERTURE_RADIUS_ARCSEC / PIXEL_SCALE_ARCSEC) ** 2
        return 10.0 ** (-0.4 * (self.depth_ab - _AB_ZEROPOINT_NJY)) / 5.0 / np.sqrt(aperture_pixels)


# CANDELS/3D-HST-like filters (Grogin et al. 2011; Skelton et al. 2014): pivots and widths of
# HST F606W, F814W, F125W, F160W; PSF FWHM and depths are round, unconfirmed values.
BANDS = (
    Band("F606W", 5921.0, 2250.0, 0.08, 27.2),
    Band("F814W", 8057.0, 2350.0, 0.09, 27.0),
    Band("F125W", 12486.0, 3000.0, 0.12, 26.7),
    Band("F160W", 15370.0, 2750.0, 0.17, 26.5),
)


def band_fluxes(pop, lines) -> np.ndarray:
    """Total flux density (n, bands) [nJy]: continuum at the pivot + lines in the band.

    lines: `spectra.line_components(pop)`.
    """
    pivots = np.array([band.pivot for band in BANDS])
    widths = np.array([band.width for band in BANDS])
    f_lambda = continuum_flux(pop, pivots)  # (n, bands), 1e-17 erg/s/cm²/Å
    centres, _, fluxes = lines
    inside = np.abs(centres[:, :, None] - pivots) < 0.5 * widths  # (n, K, bands)
    f_lambda = f_lambda + np.einsum("nk,nkb->nb", fluxes, inside) / widths
    return np.maximum(f_lambda, 0.0) * pivots**2 * _NJY_PER_FLAMBDA_A2


def sersic_b(n):
    """b_n with L(<r_eff) = L/2 (Ciotti & Bertin 1999, A&A 352, 447, asymptotic series)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def sersic_profiles(pop, centre_x, centre_y) -> np.ndarray:
    """Unit-sum Sérsic images (n, 64, 64) float32 sampled at pixel centres."""
    pixels = np.arange(IMAGE_SIZE, dtype=np.float32)
    dx = pixels[None, None, :] - centre_x[:, None, None].astype(np.float32)
    dy = pixels[None, :, None] - centre_y[:, None, None].astype(np.float32)
    cos = np.cos(pop["position_angle"]).astype(np.float32)[:, None, None]
    sin = np.sin(pop["position_angle"]).astype(np.float32)[:, None, None]
    q = pop["axis_ratio"].astype(np.float32)[:, None, None]
    r_eff = (pop["r_eff_arcsec"] / PIXEL_SCALE_ARCSEC).astype(np.float32)[:, None, None]
    n = pop["sersic_n"].astype(np.float32)[:, None, None]
    major, minor = dx * cos + dy * sin, dy * cos - dx * sin
    radius = np.sqrt(major**2 + (minor / q) ** 2) / r_eff
    profile = np.exp(-sersic_b(n) * (radius ** (1.0 / n) - 1.0))
    return profile / profile.sum(axis=(1, 2), keepdims=True)


def _psf_variance_steps() -> list[list[float]]:
    """Per band, the 3-tap pass variances [pixel²] taking the previous band's PSF to its own."""
    widths = [(band.psf_fwhm_arcsec / FWHM_PER_SIGMA / PIXEL_SCALE_ARCSEC) ** 2 for band in BANDS]
    if widths != sorted(widths):
        raise ValueError("BANDS must be ordered by increasing PSF width")
    steps, previous = [], 0.0
    for variance in widths:
        increment = variance - previous
        passes = int(np.ceil(increment / _MAX_PASS_VARIANCE))
        steps.append([increment / passes] * passes)
        previous = variance
    return steps


def _blur(images: np.ndarray, variance: float) -> np.ndarray:
    """Blur (n, H, W) images along both axes with the 3-tap kernel of `variance` [pixel²]."""
    a = 0.5 * variance
    kernel = np.array([a, 1.0 - 2.0 * a, a], np.float32)
    for axis in (1, 2):
        images = correlate1d(images, kernel, axis=axis, mode="constant")
    return images


def _point_sources(centre_x, centre_y) -> np.ndarray:
    """Unit point sources (n, 64, 64) at sub-pixel positions, split bilinearly."""
    n = centre_x.size
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    x0, y0 = np.floor(centre_x).astype(int), np.floor(centre_y).astype(int)
    fx, fy = centre_x - x0, centre_y - y0
    rows = np.arange(n)
    for ddx, ddy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                             (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        images[rows, y0 + ddy, x0 + ddx] += weight
    return images


def render_images(pop, lines, rng: np.random.Generator) -> np.ndarray:
    """Noisy PSF-convolved cutouts (n, 64, 64, 4) float32 [nJy per pixel]."""
    n = pop["z"].size
    centre_x = IMAGE_SIZE / 2 - 0.5 + rng.uniform(-0.5, 0.5, n)
    centre_y = IMAGE_SIZE / 2 - 0.5 + rng.uniform(-0.5, 0.5, n)
    galaxy = sersic_profiles(pop, centre_x, centre_y)
    fluxes = band_fluxes(pop, lines).astype(np.float32)
    # AGN: a point source with a fraction of the host's F160W-like flux.
    agn = np.flatnonzero(pop["is_agn"])
    pivots = np.array([band.pivot for band in BANDS])
    point_flux = (rng.uniform(*AGN_POINT_FRACTION, n)[agn, None] * fluxes[agn, -1:]
                  * (pivots / BANDS[-1].pivot) ** AGN_POINT_COLOUR_INDEX).astype(np.float32)
    # Blur the unit galaxy and point-source images band after band, then scale by the fluxes.
    scene = np.concatenate([galaxy, _point_sources(centre_x[agn], centre_y[agn])])
    # Sky noise first, drawn straight into the output, then the blurred scene added per band.
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), np.float32)
    rng.standard_normal(dtype=np.float32, out=images)
    images *= np.array([band.pixel_noise_njy for band in BANDS], np.float32)
    for b, steps in enumerate(_psf_variance_steps()):
        for variance in steps:
            scene = _blur(scene, variance)
        images[..., b] += scene[:n] * fluxes[:, b, None, None]
        images[agn, :, :, b] += scene[n:] * point_flux[:, b, None, None]
    return images
