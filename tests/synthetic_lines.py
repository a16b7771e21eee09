"""Independent synthetic line spectra for the measure/ tests.

Gaussians are sampled on a fine sub-grid and averaged over each pixel (midpoint rule),
not integrated with erf as the fitter does. Units: Å, 1e-17 erg/s/cm²(/Å).
"""

import numpy as np

C_KMS = 299792.458
REST = {"nii_6550": 6549.86, "halpha": 6564.61, "nii_6585": 6585.27,
        "sii_6718": 6718.29, "sii_6733": 6732.67}
NII_RATIO = 2.94


def euclid_edges(start=12060.0, stop=18920.0, pixel=13.7):
    """Euclid NISP red-grism-like pixel edges [Å]."""
    return np.arange(start, stop + pixel, pixel)


def g141_edges(start=10750.0, stop=17000.0, pixel=46.5):
    """HST WFC3 G141-like pixel edges [Å]."""
    return np.arange(start, stop + pixel, pixel)


def lsf_sigma_for_r(wavelength, resolving_power):
    """Gaussian LSF sigma [Å] for R = λ/FWHM."""
    return np.asarray(wavelength) / (resolving_power * 2.0 * np.sqrt(2.0 * np.log(2.0)))


def line_spectrum(edges, z, ha_flux, n2, sigma_v_kms, resolving_power,
                  continuum=0.0, continuum_slope=0.0, sii_flux=0.0, oversample=64):
    """Pixel-averaged f_λ (L,) of Hα + [NII] doublet (+ [SII] pair) + linear continuum.

    edges: (L+1,) observed [Å]; continuum in flux density at observed Hα, slope per Å.
    """
    nii = ha_flux * 10.0**n2
    lines = [("halpha", ha_flux), ("nii_6585", nii), ("nii_6550", nii / NII_RATIO),
             ("sii_6718", sii_flux), ("sii_6733", 0.75 * sii_flux)]
    frac = (np.arange(oversample) + 0.5) / oversample
    sub = edges[:-1, None] + frac[None, :] * np.diff(edges)[:, None]
    density = continuum + continuum_slope * (sub - REST["halpha"] * (1 + z))
    for name, flux in lines:
        centre = REST[name] * (1 + z)
        sigma = np.hypot(centre * sigma_v_kms / C_KMS, lsf_sigma_for_r(centre, resolving_power))
        density = density + flux * np.exp(-0.5 * ((sub - centre) / sigma) ** 2) / (
            np.sqrt(2 * np.pi) * sigma)
    return density.mean(axis=1)
