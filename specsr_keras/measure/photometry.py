"""Aperture photometry of galaxy cutouts: the simple image baseline the shared space is judged
against ("what the fluxes alone say about z and M*").

Each band's flux is summed in a central circular aperture; the background noise per pixel is
the robust spread (1.4826 MAD) of the pixels outside OUTER_RADIUS_FRACTION of the half-size,
whose median (the residual sky) is subtracted from the aperture sum. Asinh magnitudes (Lupton,
Gunn & Szalay 1999) arcsinh(F / 2b) use one softening b per band for the whole set, the median
noise of an aperture sum: ~ ln(F / b) for bright sources, linear (and finite) through zero for
faint or negative ones, so no row is lost and equal fluxes get equal magnitudes.
"""

from __future__ import annotations

import warnings

import numpy as np

from specsr_keras.measure.stats import MAD_TO_SIGMA

__all__ = ["APERTURE_RADIUS_FRACTION", "aperture_asinh_magnitudes", "aperture_fluxes"]

# Aperture radius and inner edge of the background ring, as fractions of the cutout's half-size.
APERTURE_RADIUS_FRACTION = 0.5
OUTER_RADIUS_FRACTION = 0.75


def aperture_fluxes(images) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, bands) cutouts [flux unit per pixel] -> (flux, noise) (N, bands) each: the
    sky-subtracted aperture sum and its noise (background sigma x sqrt(aperture pixels)), in the
    cutouts' unit. Non-finite pixels count as 0 flux and are left out of the background; a band
    without finite background pixels has sky 0 and noise NaN."""
    images = np.asarray(images, np.float64)
    if images.ndim != 4:
        raise ValueError(f"cutouts must be (N, H, W, bands), got shape {images.shape}")
    height, width = images.shape[1:3]
    y, x = np.mgrid[:height, :width]
    radius = np.hypot(y - (height - 1) / 2, x - (width - 1) / 2) / (min(height, width) / 2)
    aperture, background = radius <= APERTURE_RADIUS_FRACTION, radius >= OUTER_RADIUS_FRACTION
    finite = np.isfinite(images)
    ring = np.where(finite[:, background], images[:, background], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN ring: no sky, no noise
        sky = np.nanmedian(ring, axis=1, keepdims=True)
        noise = MAD_TO_SIGMA * np.nanmedian(np.abs(ring - sky), axis=1)
    flux = np.sum(np.where(finite, images, 0.0)[:, aperture], axis=1) - np.nan_to_num(sky[:, 0]) * aperture.sum()
    return flux, noise * np.sqrt(aperture.sum())


def aperture_asinh_magnitudes(images) -> np.ndarray:
    """(N, H, W, bands) cutouts -> (N, bands) asinh magnitudes arcsinh(F / 2b), b per band the
    set's median aperture noise (see the module doc; floored at 1e-12 of the cutouts' unit)."""
    flux, noise = aperture_fluxes(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        softening = np.nan_to_num(np.nanmedian(noise, axis=0), nan=0.0)
    return np.arcsinh(flux / (2.0 * np.maximum(softening, 1e-12)))
