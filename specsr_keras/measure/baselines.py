"""Baselines that any super-resolved N2 must beat, on the same fitter.

1. `direct_lowres_fit`: fit_halpha_nii on the low-resolution spectrum itself, with the
   exact LSF, fixed [NII] doublet ratio and physical bounds (the honest baseline,
   SCIENCE.md prototype lesson 2).
2. `faisst_prior_n2`: N2 predicted from (log M*, z) by Faisst et al. 2018 Eq. 3, with
   the intrinsic scatter as its 1σ; `deblend_halpha_with_prior` splits a blended
   Hα + [NII] flux (G141) with it.
3. `ceiling_fit`: the fit of the true high-resolution spectrum with MOSFIRE-like noise
   drawn from its ivar: what an R~3600 observation would give.

Units: Å, flux density 1e-17 erg/s/cm²/Å, line fluxes 1e-17 erg/s/cm², N2 in dex.
"""

from __future__ import annotations

import numpy as np

from specsr_keras.measure.linefit import fit_halpha_nii, fit_target_grid
from specsr_keras.physics import NII_DOUBLET_RATIO, faisst_n2, faisst_n2_scatter

__all__ = ["direct_lowres_fit", "faisst_prior_n2", "deblend_halpha_with_prior", "ceiling_fit"]


def direct_lowres_fit(wave, flux, ivar, lsf_sigma, z_guess, **fit_options):
    """Direct Hα + [NII] fit of low-res spectra (B, L); see fit_halpha_nii for all I/O."""
    return fit_halpha_nii(wave, flux, ivar, lsf_sigma, z_guess, **fit_options)


def faisst_prior_n2(log_mstar, z):
    """Faisst et al. 2018 N2 at log10(M*/Msun) and z, (B,) each.

    Returns {"n2", "n2_err"}: the relation's mean N2 [dex] and its intrinsic scatter
    (0.13 dex at z=0 to 0.22 at z=2.3) as the 1σ uncertainty.
    """
    return {"n2": faisst_n2(log_mstar, z), "n2_err": faisst_n2_scatter(z)}


def deblend_halpha_with_prior(ha_nii_flux, ha_nii_flux_err, n2, n2_err):
    """Hα flux from a blended Hα + [NII] 6550 + 6585 flux and an N2 estimate, (B,) each.

    Hα = blend / (1 + ρ), ρ = 10**N2 (1 + 1/NII_DOUBLET_RATIO); errors of the blend and
    of N2 are propagated linearly. Returns {"ha_flux", "ha_flux_err", "nii_6585_flux"}.
    """
    blend, n2 = np.asarray(ha_nii_flux, float), np.asarray(n2, float)
    rho = 10.0**n2 * (1.0 + 1.0 / NII_DOUBLET_RATIO)
    ha = blend / (1.0 + rho)
    d_ha_d_n2 = -blend * rho * np.log(10.0) / (1.0 + rho) ** 2
    ha_err = np.hypot(np.asarray(ha_nii_flux_err, float) / (1.0 + rho), d_ha_d_n2 * n2_err)
    return {"ha_flux": ha, "ha_flux_err": ha_err, "nii_6585_flux": ha * 10.0**n2}


def ceiling_fit(hires_flux, hires_ivar, z, rest_edges, lsf_sigma_rest, seed, **fit_options):
    """Fit noiseless high-res spectra after adding Gaussian noise drawn from their ivar.

    hires_flux, hires_ivar: (B, L) on the rest-frame grid `rest_edges` (L+1,) [Å]
    (e.g. TARGET_GRID), z: (B,), lsf_sigma_rest: rest-frame LSF sigma [Å]; pixels with
    ivar = 0 stay masked. `seed` fixes the noise. Returns fit_target_grid's dict.
    """
    flux = np.atleast_2d(np.asarray(hires_flux, dtype=np.float64))
    ivar = np.broadcast_to(np.asarray(hires_ivar, dtype=np.float64), flux.shape)
    observed = ivar > 0
    sigma = np.where(observed, 1.0 / np.sqrt(np.where(observed, ivar, 1.0)), 0.0)
    noisy = flux + sigma * np.random.default_rng(seed).standard_normal(flux.shape)
    return fit_target_grid(noisy, ivar, z, rest_edges, lsf_sigma_rest, **fit_options)
