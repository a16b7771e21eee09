"""Line physics: vacuum rest wavelengths, fixed ratios and empirical scaling relations.

Wavelengths are vacuum, in Å (SDSS convention). Relations return plain numpy arrays;
units are given in each docstring. Sources are cited next to every constant.
"""

from __future__ import annotations

import numpy as np

# Vacuum rest wavelengths [Å] (SDSS line list, vacuum; see SCIENCE.md "Lines").
LINE_WAVELENGTHS = {
    "hbeta": 4862.68,
    "oiii_4960": 4960.30,
    "oiii_5008": 5008.24,
    "nii_6550": 6549.86,
    "halpha": 6564.61,
    "nii_6585": 6585.27,
    "sii_6718": 6718.29,
    "sii_6733": 6732.67,
    "siii_9071": 9071.1,
    "siii_9533": 9533.2,
}

# [NII] 6585/6550 flux ratio, fixed by the transition probabilities
# (Storey & Zeippen 2000, MNRAS 312, 813: 2.94; codes use 2.93-3.05).
NII_DOUBLET_RATIO = 2.94
# [OIII] 5008/4960 flux ratio (Storey & Zeippen 2000).
OIII_DOUBLET_RATIO = 2.98
# Case-B Balmer decrement Hα/Hβ at T=10^4 K, n_e=100 cm^-3 (Osterbrock & Ferland 2006).
BALMER_DECREMENT = 2.86

SPEED_OF_LIGHT_KMS = 299792.458
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

# Kennicutt & Evans 2012 (ARA&A 50, 531), Kroupa IMF: SFR [Msun/yr] = 5.37e-42 L(Hα) [erg/s].
KENNICUTT_HALPHA_CONVERSION = 5.37e-42

# Faisst et al. 2018 (ApJ 855, 132) Eq. 3 coefficients, h = 0.7.
_FAISST_XI_OFFSET = 0.138
_FAISST_XI_Z2 = 0.042
_FAISST_COEFFS = (3.696, 3.236, 0.729, 14.928, 0.156)
# Intrinsic N2 scatter [dex] at z = 0, 1.6, 2.3 (Faisst et al. 2018, Sect. 4).
_FAISST_SCATTER_Z = np.array([0.0, 1.6, 2.3])
_FAISST_SCATTER_DEX = np.array([0.13, 0.21, 0.22])
# Range over which Eq. 3 is inverted (the relation is monotonic in N2 here).
_FAISST_N2_GRID = np.linspace(-1.5, -0.1, 2801)

# Pettini & Pagel 2004 (MNRAS 348, L59) N2 calibration: 12+log(O/H) = 8.90 + 0.57 N2
# (unconfirmed constant in SCIENCE.md; kept as a documented parameter).
PP04_N2_INTERCEPT = 8.90
PP04_N2_SLOPE = 0.57


def faisst_log_mass(n2, z):
    """Faisst et al. 2018 Eq. 3: log10(M*/Msun) from N2 = log10([NII]6585/Hα) and redshift."""
    n2 = np.asarray(n2, dtype=np.float64)
    opz2 = (1.0 + np.asarray(z, dtype=np.float64)) ** 2
    xi = n2 + _FAISST_XI_OFFSET - _FAISST_XI_Z2 * opz2
    a, b, c, d, e = _FAISST_COEFFS
    return a * xi + b / xi + c / xi**2 + d + e * opz2


def faisst_n2(log_mass, z):
    """Mean N2 = log10([NII]6585/Hα) at stellar mass log10(M*/Msun) and redshift z.

    Inverts Faisst et al. 2018 Eq. 3 numerically on N2 in [-1.5, -0.1]; masses outside
    the grid's image clip to its ends. Valid for 0 < z < 2.7, 8.5 < log M* < 11.
    """
    log_mass, z = np.broadcast_arrays(np.asarray(log_mass, float), np.asarray(z, float))
    out = np.empty(log_mass.shape)
    for zi in np.unique(np.round(z, 3)):
        sel = np.round(z, 3) == zi
        masses = faisst_log_mass(_FAISST_N2_GRID, zi)
        order = np.argsort(masses)
        out[sel] = np.interp(log_mass[sel], masses[order], _FAISST_N2_GRID[order])
    return out


def faisst_n2_scatter(z):
    """Intrinsic scatter of N2 about the Faisst relation [dex], linear in z between anchors."""
    return np.interp(np.asarray(z, float), _FAISST_SCATTER_Z, _FAISST_SCATTER_DEX)


def n2_to_metallicity(n2):
    """12+log(O/H) from N2 with the Pettini & Pagel 2004 linear calibration."""
    return PP04_N2_INTERCEPT + PP04_N2_SLOPE * np.asarray(n2, float)


def sfr_to_halpha_luminosity(sfr):
    """Intrinsic Hα luminosity [erg/s] from SFR [Msun/yr] (Kennicutt & Evans 2012)."""
    return np.asarray(sfr, float) / KENNICUTT_HALPHA_CONVERSION


def velocity_to_sigma_angstrom(sigma_kms, wavelength):
    """Gaussian sigma [Å] of a line at `wavelength` [Å] broadened by sigma_kms [km/s]."""
    return np.asarray(wavelength, float) * np.asarray(sigma_kms, float) / SPEED_OF_LIGHT_KMS


def resolving_power_to_sigma_angstrom(resolving_power, wavelength):
    """Gaussian LSF sigma [Å] for resolving power R = λ/FWHM at `wavelength` [Å]."""
    return np.asarray(wavelength, float) / (np.asarray(resolving_power, float) * FWHM_PER_SIGMA)
