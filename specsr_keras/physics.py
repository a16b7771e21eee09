"""Line physics: vacuum rest wavelengths, fixed ratios and empirical scaling relations.

Wavelengths are vacuum, in Å (SDSS convention). Relations return plain numpy arrays;
units are given in each docstring. Sources are cited next to every constant.
"""

from __future__ import annotations

import functools

import numpy as np

# Vacuum rest wavelengths [Å] (SDSS line list, vacuum; see docs/science.md "Lines").
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
# Rest wavelengths [Å, vacuum] spanning the Hα + [NII] blend: a spectrum without a usable
# pixel here has no data on the lines (flag LINE_NOT_COVERED).
LINE_REGION_A = (6540.0, 6595.0)

# N2 = log10([NII]6585/Hα) range of every measurement [dex]: the Faisst et al. 2018 grid
# (-1.5 ... -0.1) plus headroom for low-metallicity galaxies and AGN; estimates are clipped
# to it and a value at either end is flagged N2_AT_BOUND.
N2_RANGE = (-2.0, 0.5)
# Physical bounds on a fitted gas velocity dispersion [km/s].
SIGMA_V_BOUNDS_KMS = (20.0, 500.0)
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
# (unconfirmed constant in docs/science.md; kept as a documented parameter).
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


# ---------------------------------------------------------------------------------------
# Dust, star formation, sizes, BPT and cosmology (used by the simulator).
# ---------------------------------------------------------------------------------------

# Cardelli, Clayton & Mathis 1989 (ApJ 345, 245) Milky-Way law, R_V = 3.1: for nebular lines.
CARDELLI_RV = 3.1
# Calzetti et al. 2000 (ApJ 533, 682) starburst law, R_V = 4.05: for the stellar continuum;
# E(B-V)_star = 0.44 E(B-V)_gas (Calzetti 2000, Eq. 3).
CALZETTI_RV = 4.05
CALZETTI_STELLAR_TO_GAS_EBV = 0.44

# Cosmology used everywhere: flat ΛCDM, H0 = 70, Ωm = 0.3 (h = 0.7 as in Faisst et al. 2018
# and Speagle et al. 2014).
COSMOLOGY_H0 = 70.0
COSMOLOGY_OM0 = 0.3
_COSMO_Z_GRID = np.linspace(0.0, 6.0, 1201)
_MPC_CM = 3.0856775814913673e24


def cardelli_extinction(wavelength):
    """A_λ / A_V of Cardelli et al. 1989 (R_V = 3.1), optical + near-IR branch (0.30-3.3 µm)."""
    x = 1e4 / np.asarray(wavelength, float)  # inverse microns
    y = x - 1.82
    a_opt = np.polyval([0.32999, -0.77530, 0.01979, 0.72085, -0.02427, -0.50447, 0.17699, 1.0], y)
    b_opt = np.polyval([-2.09002, 5.30260, -0.62251, -5.38434, 1.07233, 2.28305, 1.41338, 0.0], y)
    a = np.where(x < 1.1, 0.574 * x**1.61, a_opt)
    b = np.where(x < 1.1, -0.527 * x**1.61, b_opt)
    return a + b / CARDELLI_RV


def calzetti_extinction(wavelength):
    """A_λ / A_V of the Calzetti et al. 2000 law (R_V = 4.05), 0.12-2.2 µm (extrapolated beyond)."""
    lam = np.asarray(wavelength, float) / 1e4  # microns
    k_red = 2.659 * (-1.857 + 1.040 / lam) + CALZETTI_RV
    k_blue = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam**2 + 0.011 / lam**3) + CALZETTI_RV
    return np.maximum(np.where(lam >= 0.63, k_red, k_blue), 0.0) / CALZETTI_RV


def speagle_log_sfr(log_mass, age_gyr):
    """Star-forming main sequence log10(SFR / Msun/yr) (Speagle et al. 2014, ApJS 214, 15, Eq. 28).

    Kroupa IMF; `age_gyr` is the age of the Universe at the galaxy's redshift [Gyr].
    Intrinsic scatter ≈ 0.2 dex (their Sect. 5).
    """
    t = np.asarray(age_gyr, float)
    return (0.84 - 0.026 * t) * np.asarray(log_mass, float) - (6.51 - 0.11 * t)


def garn_best_halpha_attenuation(log_mass):
    """Hα attenuation A_Hα [mag] vs stellar mass (Garn & Best 2010, MNRAS 409, 421, Eq. 5).

    Scatter about the relation ≈ 0.28 mag; calibrated for 8.5 < log M* < 11.5.
    """
    x = np.asarray(log_mass, float) - 10.0
    return 0.91 + 0.77 * x + 0.11 * x**2 - 0.09 * x**3


# van der Wel et al. 2014 (ApJ 788, 28) Table 1, late-type galaxies: R_eff = A (M*/5e10)^α
# [kpc, semi-major axis, rest-frame 5000 Å], with intrinsic scatter σ(log R_eff).
_VDW14_Z = np.array([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
_VDW14_LOG_A = np.array([0.86, 0.78, 0.70, 0.65, 0.55, 0.51])
_VDW14_ALPHA = np.array([0.25, 0.22, 0.22, 0.23, 0.22, 0.18])
_VDW14_SCATTER = np.array([0.16, 0.16, 0.17, 0.18, 0.19, 0.19])


def van_der_wel_log_reff_kpc(log_mass, z):
    """Mean log10(R_eff / kpc) of star-forming galaxies (van der Wel et al. 2014), linear in z."""
    z = np.asarray(z, float)
    log_a = np.interp(z, _VDW14_Z, _VDW14_LOG_A)
    alpha = np.interp(z, _VDW14_Z, _VDW14_ALPHA)
    return log_a + alpha * (np.asarray(log_mass, float) - np.log10(5e10))


def van_der_wel_scatter(z):
    """Intrinsic scatter of log10(R_eff) about the size-mass relation [dex]."""
    return np.interp(np.asarray(z, float), _VDW14_Z, _VDW14_SCATTER)


def kewley13_classification_o3hb(n2, z):
    """log10([OIII]5008/Hβ) of the redshift-dependent star-forming/AGN classification line.

    Kewley et al. 2013 (ApJL 774, L10), Eq. 1; defined for N2 below the asymptote
    0.02 + 0.1833 z.
    """
    z = np.asarray(z, float)
    return 0.61 / (np.asarray(n2, float) - 0.02 - 0.1833 * z) + 1.2 + 0.03 * z


@functools.lru_cache(maxsize=1)
def _cosmology_tables():
    """(luminosity distance [cm], kpc per arcsec, age [Gyr]) tabulated on _COSMO_Z_GRID."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=COSMOLOGY_H0, Om0=COSMOLOGY_OM0)
    return (
        cosmo.luminosity_distance(_COSMO_Z_GRID).value * _MPC_CM,
        cosmo.kpc_proper_per_arcmin(_COSMO_Z_GRID).value / 60.0,
        cosmo.age(_COSMO_Z_GRID).value,
    )


def luminosity_distance_cm(z):
    """Luminosity distance [cm] in the flat ΛCDM (H0=70, Ωm=0.3) cosmology, 0 <= z <= 6."""
    return np.interp(np.asarray(z, float), _COSMO_Z_GRID, _cosmology_tables()[0])


def kpc_per_arcsec(z):
    """Proper transverse scale [kpc / arcsec] at redshift z (same cosmology)."""
    return np.interp(np.asarray(z, float), _COSMO_Z_GRID, _cosmology_tables()[1])


def age_of_universe_gyr(z):
    """Age of the Universe [Gyr] at redshift z (same cosmology)."""
    return np.interp(np.asarray(z, float), _COSMO_Z_GRID, _cosmology_tables()[2])
