"""Line-model anomaly tests of a low-res spectrum: broad-line evidence, what a narrow-line
model cannot explain, and their combined false-positive rate.

Near the narrow lines' redshift z (e.g. from `fit_halpha_nii`), two models are linear in
their fluxes at a fixed velocity offset v and narrow dispersion σ_n: (A) narrow Hα, the [NII]
and [SII] doublets and a linear continuum; (B_f) A plus a broad Hα Gaussian of FWHM f at the
same z (all fluxes >= 0). χ²(A) is minimised over v on VELOCITY_GRID_KMS (the given z may be
a few 1e-4 off) and σ_n on NARROW_SIGMA_GRID_KMS (narrow-line regions: σ <= 250 km/s, so a
narrow fit cannot swallow a broad line); χ²(B) at A's v, over σ_n and over f on
BROAD_FWHM_GRID_KMS; Δχ² = χ²(A) − χ²(B) >= 0. Without a broad line each extra broad flux
gives ½ δ(0) + ½ χ²(1 dof) (a flux on its bound), so `broad_line_p` = min(1, n_f × ½
P(χ²₁ > Δχ²)) bounds the false-positive rate of calling a normal galaxy broad-lined at that
Δχ² (Bonferroni over the widths; measured on held-out normal galaxies in `specsr evaluate`).
A broad Hα of FWHM 1,500–6,000 km/s is resolved at R ~ 450 (Euclid), marginally at R ~ 130.

Both tests take the noise from the spectrum's ivar, inflated where the pixels scatter more
than it says: `noise_scale` = the robust pixel-to-pixel scatter of the whitened flux (second
differences at lag 2, Stoehr et al. 2008; insensitive to a smooth continuum and to a few
lines, peaks or bad pixels; 1 ± 1.4/√n over n pixels when ivar is
right, 1.25 when ivar is 1.56x too large), and the tests use ivar / max(1, noise_scale)²:
never less noise than the ivar states. A row whose scale is UNDERSTATED_SIGMAS of its own
scatter above 1 is flagged NOISE_UNDERSTATED (`anomaly_columns`): a posterior or fit that
trusts its ivar is too confident there. A pipeline that under-estimates its errors by 20 % would otherwise have the
narrow-model test flag three quarters of normal galaxies at a stated 1 % (measured on a
simulated anomaly set, benchmarks/README.md); an ivar too small only makes the tests
conservative.

`narrow_model_p` = P(χ²_dof > χ²(A)) with dof = the window's pixels − A's parameters (line
fluxes, continuum, v, σ_n): what a narrow-line galaxy cannot explain (a contaminating
spectrum, an artefact, a broad line; the data-consistent posterior explains every such
feature, so its own re-observation χ² cannot). `anomaly_fpr` = min(1, 2 min(broad_line_p,
narrow_model_p)) (Bonferroni over the two parts) bounds the share of normal galaxies
flagged at that value: rank a catalogue by it, cut at the false-positive rate you accept.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.stats import chi2 as chi2_distribution

from specsr_keras.instruments import get_instrument
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.measure.linefit import (
    CONTINUUM_MARGIN_SIGMAS,
    HALPHA,
    NII,
    SII_6718,
    SII_6733,
    LineSet,
    line_templates,
    prepare_window,
    solve_linear_nonnegative,
)
from specsr_keras.measure.redshift import lsf_sigma_rows
from specsr_keras.measure.stats import bonferroni
from specsr_keras.physics import FWHM_PER_SIGMA
from specsr_keras.spectral.noise import NOISE_SCALE_SCATTER, noise_inflation
from specsr_keras.spectral.noise import noise_scale as spectral_noise_scale

__all__ = ["ANOMALY_COLUMNS", "BROAD_FWHM_GRID_KMS", "anomaly_columns", "broad_line_test", "noise_scale",
           "noise_understated"]

# Result columns of every spectrum predictor (`anomaly_columns`).
ANOMALY_COLUMNS = ("broad_line_dchi2", "broad_line_fwhm_kms", "broad_line_p", "narrow_model_p", "anomaly_fpr",
                   "noise_scale")

BROAD_FWHM_GRID_KMS = (1000.0, 1500.0, 2500.0, 4000.0, 6000.0)
NARROW_SIGMA_GRID_KMS = (40.0, 80.0, 130.0, 190.0, 250.0)
NARROW_LINES = (HALPHA, NII, SII_6718, SII_6733)
# Velocity offsets from the given z [km/s] over which the narrow model is fitted.
VELOCITY_GRID_KMS = tuple(np.arange(-200.0, 201.0, 50.0))
# Continuum margin of the test window in units of the broadest component's sigma.
_MARGIN_SIGMAS = 3.0
# noise_scale this many of its own scatters above 1: the row is flagged NOISE_UNDERSTATED.
UNDERSTATED_SIGMAS = 4.0


def noise_scale(flux, ivar) -> np.ndarray:
    """Pixel-to-pixel scatter of each spectrum in units of its ivar's sigma (B,)
    (`spectral.noise.noise_scale`, DER_SNR): 1 ± 1.4 / √(triplets) when ivar describes the
    noise; NaN for a row with too few (< 20) usable triplets. flux, ivar: (B, L)."""
    return _scale_and_triplets(flux, ivar)[0]


def noise_understated(flux, ivar) -> np.ndarray:
    """Whether each spectrum's pixels scatter significantly more than its ivar says (B,) bool:
    noise_scale > 1 + UNDERSTATED_SIGMAS x NOISE_SCALE_SCATTER / √(triplets), i.e. 1.25 over
    500 pixels (a margin for the few per cent by which bright lines raise the median). Whatever
    trusts that ivar (a posterior, a fit's errors) is then too confident."""
    return _understated(*_scale_and_triplets(flux, ivar))


def _understated(scale, triplets) -> np.ndarray:
    limit = 1.0 + UNDERSTATED_SIGMAS * NOISE_SCALE_SCATTER / np.sqrt(np.maximum(triplets, 1))
    return np.nan_to_num(scale, nan=0.0) > limit


def _scale_and_triplets(flux, ivar) -> tuple[np.ndarray, np.ndarray]:
    """(noise_scale (B,), usable triplets per row (B,)) as numpy."""
    flux, ivar = np.atleast_2d(np.asarray(flux, np.float32)), np.atleast_2d(np.asarray(ivar, np.float32))
    scale, triplets = spectral_noise_scale(flux, ivar)
    return keras.ops.convert_to_numpy(scale).astype(np.float64), keras.ops.convert_to_numpy(triplets)


def broad_line_test(wave, flux, ivar, lsf_sigma, z, check_noise: bool = True) -> dict[str, np.ndarray]:
    """Δχ² for a broad Hα component, per spectrum.

    wave: bin edges (L+1,)/(B, L+1) or centres [Å]; flux, ivar (B, L) [1e-17 erg/s/cm²/Å];
    lsf_sigma: LSF sigma per pixel [Å]; z (B,): the narrow lines' redshift. Returns (B,)
    arrays: `broad_line_dchi2`, `broad_line_fwhm_kms` (the best width; NaN when Δχ² = 0),
    `broad_line_flux` [1e-17 erg/s/cm²], `broad_line_p`, `narrow_model_p`, `anomaly_fpr`
    (see the module doc; the p-values are 1 where no test was possible: z not finite,
    lines off the grid or too few pixels), `noise_scale` (the tests' noise is the ivar's x
    max(1, noise_scale); NaN where it could not be measured and the ivar is taken as it is).
    check_noise False: the ivar as it is whatever the scatter (to measure what the check does).
    """
    z = np.asarray(z, np.float64)
    scale, triplets = _scale_and_triplets(flux, ivar)
    understated = _understated(scale, triplets)
    if check_noise:
        inflation = keras.ops.convert_to_numpy(noise_inflation(scale)).astype(np.float64)
        ivar = np.asarray(ivar, np.float64) / inflation[:, None] ** 2
    testable = np.isfinite(z)
    broadest = max(BROAD_FWHM_GRID_KMS) / FWHM_PER_SIGMA
    window = prepare_window(wave, flux, ivar, lsf_sigma, np.where(testable, z, 1.0), NARROW_LINES,
                            max_dv_kms=max(VELOCITY_GRID_KMS),
                            sigma_v_max_kms=broadest * _MARGIN_SIGMAS / CONTINUUM_MARGIN_SIGMAS, min_pixels=12)
    slab, z_ref = window.slab, window.z_guess
    testable &= window.reason == ""
    narrow_lines, broad_lines = LineSet.from_components(NARROW_LINES), LineSet.from_components([HALPHA])
    chi2_narrow, best_dv = np.full(z.shape, np.inf), np.zeros(z.shape)
    for dv in VELOCITY_GRID_KMS:
        for sigma_n in NARROW_SIGMA_GRID_KMS:
            templates = line_templates(slab, narrow_lines, z_ref, np.full(z.shape, dv), np.full(z.shape, sigma_n))
            chi2 = solve_linear_nonnegative(slab, templates)[1]
            best_dv = np.where(chi2 < chi2_narrow, dv, best_dv)
            chi2_narrow = np.minimum(chi2_narrow, chi2)
    broad = [line_templates(slab, broad_lines, z_ref, best_dv, np.full(z.shape, fwhm / FWHM_PER_SIGMA))
             for fwhm in BROAD_FWHM_GRID_KMS]
    chi2_broad, best_fwhm, best_flux = np.full(z.shape, np.inf), np.full(z.shape, np.nan), np.zeros(z.shape)
    for sigma_n in NARROW_SIGMA_GRID_KMS:
        narrow = line_templates(slab, narrow_lines, z_ref, best_dv, np.full(z.shape, sigma_n))
        for fwhm, template in zip(BROAD_FWHM_GRID_KMS, broad, strict=True):
            coef, chi2 = solve_linear_nonnegative(slab, np.concatenate([narrow, template], axis=1))
            better = chi2 < chi2_broad
            chi2_broad = np.where(better, chi2, chi2_broad)
            best_fwhm = np.where(better, fwhm, best_fwhm)
            best_flux = np.where(better, coef[:, len(NARROW_LINES)], best_flux)
    gain = np.maximum(chi2_narrow - chi2_broad, 0.0)
    broad_p = np.where(testable, np.minimum(1.0, len(BROAD_FWHM_GRID_KMS) * 0.5 * chi2_distribution.sf(gain, 1)), 1.0)
    # Parameters of A: line fluxes, the linear continuum's two, v and σ_n.
    dof = np.sum(slab.weight > 0, axis=1) - (len(NARROW_LINES) + 4)
    narrow_p = np.where(testable & (dof > 0), chi2_distribution.sf(chi2_narrow, np.maximum(dof, 1)), 1.0)
    return {
        "broad_line_dchi2": np.where(testable, gain, np.nan),
        "broad_line_fwhm_kms": np.where(testable & (gain > 0) & (best_flux > 0), best_fwhm, np.nan),
        "broad_line_flux": np.where(testable, best_flux, np.nan),
        "broad_line_p": broad_p,
        "narrow_model_p": narrow_p,
        "anomaly_fpr": bonferroni(np.stack([broad_p, narrow_p])),
        "noise_scale": scale,
        "noise_understated": understated,
    }


def anomaly_columns(batch: dict, z, instrument: str, flags) -> dict[str, np.ndarray]:
    """ANOMALY_COLUMNS of a predictor batch (spectra on `instrument`'s grid, each row's
    own LSF from its instrument_id and source size) at the predicted redshifts z (B,), and
    "flags": the given flags (B,) with NOISE_UNDERSTATED where `noise_understated`."""
    flux = np.asarray(batch["lowres_flux"], np.float64)
    ivar = np.where(np.asarray(batch["lowres_mask"], bool), 0.0, np.asarray(batch["lowres_ivar"], np.float64))
    test = broad_line_test(get_instrument(instrument).bin_edges, flux, ivar, lsf_sigma_rows(batch, instrument), z)
    flags = np.asarray(flags)
    understated = np.where(test["noise_understated"], flags | int(QualityFlag.NOISE_UNDERSTATED), flags)
    return {**{name: test[name] for name in ANOMALY_COLUMNS}, "flags": understated.astype(flags.dtype)}
