"""Baselines that any super-resolved N2 must beat, on the same fitter.

1. `direct_lowres_fit`: fit_halpha_nii on the low-resolution spectrum itself, with the
   exact LSF, fixed [NII] doublet ratio and physical bounds (the honest baseline,
   docs/science.md prototype lesson 2).
2. `faisst_prior_n2`: N2 predicted from (log M*, z) by Faisst et al. 2018 Eq. 3, with
   the intrinsic scatter as its 1σ; `deblend_halpha_with_prior` splits a blended
   Hα + [NII] flux (G141) with it.
3. `ceiling_fit`: the fit of the true high-resolution spectrum with MOSFIRE-like noise
   drawn from its ivar: what an R~3600 observation would give.
4. `fit_times_prior`: the careful astronomer's Bayesian estimate, the direct fit's Gaussian
   N2 likelihood times a Gaussian prior (the population's two numbers `POPULATION_N2`, or
   Faisst et al. 2018 at a catalogue mass, `faisst_catalogue_prior`), Hα from the blend
   de-blended with the posterior N2.

Units: Å, flux density 1e-17 erg/s/cm²/Å, line fluxes 1e-17 erg/s/cm², N2 in dex.
"""

from __future__ import annotations

import numpy as np

from specsr_keras.measure.linefit import fit_halpha_nii, fit_target_grid
from specsr_keras.physics import N2_RANGE, NII_DOUBLET_RATIO, faisst_n2, faisst_n2_scatter

__all__ = ["POPULATION_N2", "ceiling_fit", "deblend_halpha_with_prior", "direct_lowres_fit",
           "faisst_catalogue_prior", "faisst_prior_n2", "fit_times_prior"]

# The N2 population prior (mean, sigma) [dex] of the simulated population (simulator 2.2.0,
# 20 % of star formers off the relations, the mix of the held-out sets; 22,000 galaxies: mean
# -0.672, sd 0.359). The shipped model's training mix is broader on purpose (40 %, Makefile).
POPULATION_N2 = (-0.67, 0.36)
# Step [dex] of the numerical derivative dN2/dlog M* of the Faisst relation.
_MASS_STEP_DEX = 0.05


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


def faisst_catalogue_prior(log_mstar_catalog, z, mass_error_dex):
    """Faisst et al. 2018 N2 at a *catalogue* mass (B,) and z (B,): {"n2", "n2_err"}, the error
    adding the relation's scatter and the mass error (dex) times the relation's slope."""
    mass = np.asarray(log_mstar_catalog, float)
    slope = (faisst_n2(mass + _MASS_STEP_DEX, z) - faisst_n2(mass - _MASS_STEP_DEX, z)) / (2 * _MASS_STEP_DEX)
    return {"n2": faisst_n2(mass, z), "n2_err": np.hypot(faisst_n2_scatter(z), slope * mass_error_dex)}


def fit_times_prior(fit: dict, prior_n2, prior_err) -> dict:
    """A direct fit's Gaussian N2 likelihood (n2_unclipped, n2_err) times a Gaussian prior.

    Where the fit has no finite N2 (a line at 0) or failed, the result is the prior. Hα and
    [NII]6585 come from de-blending the fit's Hα + [NII] flux with the posterior N2 (the
    blend is what a low-res spectrum measures best). Returns {q, q_err} for n2, ha_flux,
    nii_6585_flux and z (the fit's), plus "ok".
    """
    n2_fit = np.clip(np.asarray(fit["n2_unclipped"], float), *N2_RANGE)
    err_fit = np.asarray(fit["n2_err"], float)
    usable = np.isfinite(n2_fit) & np.isfinite(err_fit) & (err_fit > 0)
    prior_n2, prior_err = np.broadcast_arrays(np.asarray(prior_n2, float), np.asarray(prior_err, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = 1.0 / prior_err**2 + np.where(usable, 1.0 / err_fit**2, 0.0)
        n2 = (prior_n2 / prior_err**2 + np.where(usable, n2_fit / err_fit**2, 0.0)) / precision
    n2_err = 1.0 / np.sqrt(precision)
    blend, blend_err = np.asarray(fit["ha_nii_flux"], float), np.asarray(fit["ha_nii_flux_err"], float)
    lines = deblend_halpha_with_prior(blend, blend_err, n2, n2_err)
    nii_err = np.hypot(lines["ha_flux_err"] * 10.0**n2, lines["nii_6585_flux"] * np.log(10.0) * n2_err)
    return {"n2": n2, "n2_err": n2_err, "ha_flux": lines["ha_flux"], "ha_flux_err": lines["ha_flux_err"],
            "nii_6585_flux": lines["nii_6585_flux"], "nii_6585_flux_err": nii_err,
            "z": np.asarray(fit["z"], float), "z_err": np.asarray(fit["z_err"], float),
            "ok": np.asarray(fit["ok"], bool)}
