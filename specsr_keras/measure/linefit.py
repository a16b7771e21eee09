"""Hα + [NII] 6550/6585 (+ [SII] 6718/6733) fitter for binned spectra at any resolution.

One model for every instrument, batched over B spectra (numpy):

    f(λ) = Σ_lines F_k N(λ; λ_k (1+z), s_k) + c0 + c1 (λ - λ_Hα (1+z_guess)) / 100 Å
    s_k² = (λ_k (1+z) σ_v / c)² + σ_LSF(λ_k (1+z))²

Each Gaussian is integrated exactly over the pixel bin edges (erf) and divided by the
bin width, so coarse grism pixels (G141: 46.5 Å for line sigmas of a few Å) are exact.
[NII] 6550 = [NII] 6585 / NII_DOUBLET_RATIO; all lines share z and σ_v.

Strategy: for fixed (z, σ_v) the fluxes and continuum are linear, so a coarse grid in
z (at a nominal σ_v) and then in (z, σ_v) is searched with weighted non-negative linear
least squares per spectrum; the best grid point starts a projected Levenberg-Marquardt
fit of all parameters with analytic derivatives, under the bounds fluxes >= 0,
σ_v in [20, 500] km/s and |Δv| <= max_dv_kms around z_guess. Errors come from the
inverse Fisher matrix at the solution; a parameter held at a bound gets its conditional
error 1/sqrt(F_ii) and no covariance.

Units: wavelengths in Å (observed frame, vacuum), flux density in 1e-17 erg/s/cm²/Å,
ivar in its inverse square, line fluxes in 1e-17 erg/s/cm². Not modelled: stellar Hα
absorption, broad components, continuum curvature within the fit window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from specsr_keras.physics import (
    LINE_WAVELENGTHS,
    N2_RANGE,
    NII_DOUBLET_RATIO,
    SIGMA_V_BOUNDS_KMS,
    SPEED_OF_LIGHT_KMS,
)
from specsr_keras.spectral.band import edges_from_centres

__all__ = [
    "HALPHA",
    "NII",
    "SII_6718",
    "SII_6733",
    "N2_PRIOR_RANGE",
    "LineComponent",
    "fit_halpha_nii",
    "fit_target_grid",
]

# N2 range (`physics.N2_RANGE`): `n2` is clipped to it, `n2_unclipped` is not.
N2_PRIOR_RANGE = N2_RANGE
# Minimum continuum margin on each side of the outermost line [Å, rest frame].
CONTINUUM_MARGIN_REST_A = 30.0
# Continuum margin in units of the broadest allowed line sigma.
CONTINUUM_MARGIN_SIGMAS = 5.0
# Continuum slope coordinate scale [Å]: c1 is the change per 100 Å.
_SLOPE_SCALE_A = 100.0
# z-scan step as a fraction of the line's total sigma (in velocity).
_SCAN_STEP_SIGMAS = 0.4
_SCAN_SIGMA_V_KMS = 150.0
_SIGMA_V_GRID_KMS = np.array([20.0, 35.0, 60.0, 100.0, 170.0, 290.0, 500.0])
_MAX_SCAN_POINTS = 201


@dataclass(frozen=True)
class LineComponent:
    """A set of lines with fixed flux ratios sharing one free flux (that of the first)."""

    name: str
    rest_wavelengths: tuple[float, ...]  # [Å, vacuum]
    relative_fluxes: tuple[float, ...]


HALPHA = LineComponent("ha", (LINE_WAVELENGTHS["halpha"],), (1.0,))
NII = LineComponent(
    "nii_6585",
    (LINE_WAVELENGTHS["nii_6585"], LINE_WAVELENGTHS["nii_6550"]),
    (1.0, 1.0 / NII_DOUBLET_RATIO),
)
SII_6718 = LineComponent("sii_6718", (LINE_WAVELENGTHS["sii_6718"],), (1.0,))
SII_6733 = LineComponent("sii_6733", (LINE_WAVELENGTHS["sii_6733"],), (1.0,))


@dataclass
class Slab:
    """The pixels of each spectrum inside its fit window, gathered to a common width W.

    Arrays are (B, W) except `edges`; `weight` is ivar, 0 for masked pixels and padding.
    """

    edges: np.ndarray  # bin edges [Å], (B, W+1)
    centre: np.ndarray  # bin centres [Å]
    flux: np.ndarray
    weight: np.ndarray
    lsf_sigma: np.ndarray  # [Å]
    slope_coord: np.ndarray  # (λ - λ_ref) / 100 Å

    @property
    def n_pix(self) -> np.ndarray:
        """Number of weighted pixels per spectrum, (B,)."""
        return (self.weight > 0).sum(axis=1)


@dataclass
class LineSet:
    """Gaussians of the fitted components: rest wavelengths (N,), flux matrix (N, K)."""

    rest: np.ndarray
    to_component: np.ndarray

    @classmethod
    def from_components(cls, components):
        rest = np.array([w for c in components for w in c.rest_wavelengths])
        matrix = np.zeros((rest.size, len(components)))
        row = 0
        for k, comp in enumerate(components):
            for ratio in comp.relative_fluxes:
                matrix[row, k] = ratio
                row += 1
        return cls(rest, matrix)


def as_batch(wave, flux, ivar, lsf_sigma):
    """Normalise inputs to float64 batches.

    wave: bin edges (L+1,) / (B, L+1) or pixel centres (L,) / (B, L) [Å];
    flux, ivar: (B, L) or (L,); lsf_sigma: scalar, (L,) or (B, L) [Å].
    Returns edges (B, L+1), flux (B, L), weight (B, L) with non-finite or negative
    entries masked (weight 0, flux 0), lsf (B, L).
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    n_spec, n_pix = flux.shape
    ivar = np.broadcast_to(np.asarray(ivar, dtype=np.float64), flux.shape)
    wave = np.asarray(wave, dtype=np.float64)
    if wave.shape[-1] == n_pix + 1:
        edges = wave
    elif wave.shape[-1] == n_pix:
        edges = edges_from_centres(wave)
    else:
        raise ValueError(f"wave has {wave.shape[-1]} values for {n_pix} pixels")
    if np.any(np.diff(edges, axis=-1) <= 0):
        raise ValueError("wavelengths must increase strictly along the last axis")
    edges = np.broadcast_to(edges, (n_spec, n_pix + 1))
    lsf = np.broadcast_to(np.asarray(lsf_sigma, dtype=np.float64), flux.shape)
    good_lsf = np.isfinite(lsf) & (lsf > 0)
    if not good_lsf.all():  # bad LSF pixels are masked; the row's widest LSF fills them
        widest = np.max(np.where(good_lsf, lsf, 0.0), axis=1, keepdims=True)
        lsf = np.where(good_lsf, lsf, np.where(widest > 0, widest, 1.0))
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & good_lsf
    return edges, np.where(good, flux, 0.0), np.where(good, ivar, 0.0), lsf


def window_slab(edges, flux, weight, lsf, window_lo, window_hi, reference):
    """Gather the pixels with centres in [window_lo, window_hi] (B,) [Å] into a Slab.

    edges (B, L+1), flux, weight, lsf (B, L) as returned by as_batch; reference (B,)
    [Å] is the origin of the continuum slope.
    """
    first, stop = locate_window(edges, window_lo, window_hi)
    width = max(int((stop - first).max(initial=0)), 1)
    return gather_slab(pad_columns(edges, flux, weight, lsf, width), first, stop, width, reference)


def locate_window(edges, window_lo, window_hi):
    """Index of the first pixel with centre >= window_lo and one past the last <= window_hi.

    edges: (B, L+1) [Å] (a broadcast of one grid is searched once); windows (..., B).
    """
    if edges.strides[0] == 0:
        centres = 0.5 * (edges[0, 1:] + edges[0, :-1])
        return (np.searchsorted(centres, window_lo, side="left"),
                np.searchsorted(centres, window_hi, side="right"))
    centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
    return ((centres < window_lo[..., None]).sum(axis=-1),
            (centres <= window_hi[..., None]).sum(axis=-1))


def pad_columns(edges, flux, weight, lsf, width):
    """Append `width` zero-weight pixels past the red end so any window fits; a tuple."""
    last_width = edges[:, -1:] - edges[:, -2:-1]
    edges = np.concatenate([edges, edges[:, -1:] + last_width * np.arange(1, width + 1)], axis=1)
    flux, weight = (np.pad(a, ((0, 0), (0, width))) for a in (flux, weight))
    return edges, flux, weight, np.pad(lsf, ((0, 0), (0, width)), mode="edge")


def gather_slab(padded, first, stop, width, reference):
    """Slab of `width` pixels from `first` (B,) of padded arrays; pixels >= stop get weight 0."""
    edges, flux, weight, lsf = padded
    index = first[:, None] + np.arange(width)
    edge_index = np.concatenate([index, index[:, -1:] + 1], axis=1)
    slab_edges = np.take_along_axis(edges, edge_index, axis=1)
    centre = 0.5 * (slab_edges[:, 1:] + slab_edges[:, :-1])
    inside = index < stop[:, None]
    return Slab(
        edges=slab_edges,
        centre=centre,
        flux=np.take_along_axis(flux, index, axis=1),
        weight=np.where(inside, np.take_along_axis(weight, index, axis=1), 0.0),
        lsf_sigma=np.take_along_axis(lsf, index, axis=1),
        slope_coord=(centre - reference[:, None]) / _SLOPE_SCALE_A,
    )


def _interp_rows(x, y, xq):
    """Linear interpolation of y(x) (B, W) at xq (B, N), clamped; returns value, slope."""
    j = np.clip((x[:, None, :] < xq[:, :, None]).sum(axis=2), 1, max(x.shape[1] - 1, 1))
    j0 = np.take_along_axis(x, j - 1, axis=1), np.take_along_axis(y, j - 1, axis=1)
    j1 = np.take_along_axis(x, j, axis=1), np.take_along_axis(y, j, axis=1)
    dx = j1[0] - j0[0]
    slope = np.where(dx > 0, (j1[1] - j0[1]) / np.where(dx > 0, dx, 1.0), 0.0)
    t = np.clip(xq - j0[0], 0.0, np.where(dx > 0, dx, 0.0))
    return j0[1] + slope * t, slope


def _binned_gaussians(slab, mu, s, derivatives):
    """Mean density over each bin of unit-flux Gaussians [1/Å], (B, N, W).

    mu, s: (B, N) [Å]. With derivatives, also d/dμ and d/ds [1/Å²].
    """
    mu, s = mu[:, :, None], s[:, :, None]
    t = (slab.edges[:, None, :] - mu) / s
    inv_width = 1.0 / np.diff(slab.edges, axis=1)[:, None, :]
    density = 0.5 * np.diff(erf(t / np.sqrt(2)), axis=2) * inv_width
    if not derivatives:
        return density
    pdf = np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi)
    d_mu = -np.diff(pdf, axis=2) / s * inv_width
    d_s = -np.diff(t * pdf, axis=2) / s * inv_width
    return density, d_mu, d_s


def line_templates(slab, lines, z_guess, dv_kms, sigma_v_kms, derivatives=False):
    """Component templates (B, K, W) [1/Å per unit flux] at velocity offset and dispersion.

    dv_kms, sigma_v_kms: (B,). With derivatives, also the per-Gaussian densities'
    d/d(dv) and d/d(σ_v), each (B, N, W), for the Jacobian.
    """
    c = SPEED_OF_LIGHT_KMS
    one_plus_z = (1.0 + z_guess) * (1.0 + dv_kms / c)
    mu = lines.rest[None, :] * one_plus_z[:, None]
    lsf, lsf_slope = _interp_rows(slab.centre, slab.lsf_sigma, mu)
    sig_v = sigma_v_kms[:, None]
    s = np.sqrt((mu * sig_v / c) ** 2 + lsf**2)
    if not derivatives:
        return np.einsum("bnw,nk->bkw", _binned_gaussians(slab, mu, s, False), lines.to_component)
    dens, d_mu, d_s = _binned_gaussians(slab, mu, s, True)
    templates = np.einsum("bnw,nk->bkw", dens, lines.to_component)
    dmu_dv = (lines.rest[None, :] * (1.0 + z_guess)[:, None] / c)[:, :, None]
    ds_dmu = ((mu * (sig_v / c) ** 2 + lsf * lsf_slope) / s)[:, :, None]
    ds_dsig = (mu**2 * sig_v / (c**2 * s))[:, :, None]
    d_dv = (d_mu + d_s * ds_dmu) * dmu_dv
    d_dsig = d_s * ds_dsig
    return templates, d_dv, d_dsig


def _design(slab, templates):
    """Linear design matrix (B, W, K+2): templates, constant, slope."""
    ones = np.ones_like(slab.centre)
    return np.concatenate(
        [templates.transpose(0, 2, 1), ones[:, :, None], slab.slope_coord[:, :, None]], axis=2
    )


def solve_psd(matrix, rhs, free):
    """Solve matrix x = rhs for (B,P,P) positive semi-definite matrices, (B,P) right sides.

    Only `free` (B,P) parameters are solved for, the others get 0. Jacobi scaling and a
    1e-10 ridge keep degenerate rows finite. Returns x (B,P) and the inverse (B,P,P)
    restricted to the free parameters.
    """
    diag = np.einsum("bii->bi", matrix)
    free = free & (diag > 0)
    scale = np.where(free, 1.0 / np.sqrt(np.where(free, diag, 1.0)), 0.0)
    both = free[:, :, None] & free[:, None, :]
    scaled = np.where(both, matrix * scale[:, :, None] * scale[:, None, :], 0.0)
    scaled = scaled + np.eye(matrix.shape[1]) * np.where(free, 1e-10, 1.0)[:, None, :]
    inverse = np.linalg.inv(scaled) * scale[:, :, None] * scale[:, None, :]
    return np.einsum("bij,bj->bi", inverse, rhs), inverse


def solve_linear_nonnegative(slab, templates):
    """Weighted least squares for line fluxes (>= 0) and continuum at fixed (z, σ_v).

    templates: (B, K, W). Returns coefficients (B, K+2) and chi2 (B,). The
    non-negativity is an active set: negative fluxes are fixed at 0 and the rest refit.
    """
    n_lines = templates.shape[1]
    design = _design(slab, templates)
    weighted = design * slab.weight[:, :, None]
    gram = np.einsum("bwi,bwj->bij", weighted, design)
    rhs = np.einsum("bwi,bw->bi", weighted, slab.flux)
    free = np.einsum("bii->bi", gram) > 0
    for _ in range(n_lines + 1):
        coef, _ = solve_psd(gram, rhs, free)
        negative = free[:, :n_lines] & (coef[:, :n_lines] < 0)
        if not negative.any():
            break
        free[:, :n_lines] &= ~negative
    coef[:, :n_lines] = np.maximum(coef[:, :n_lines], 0.0)
    resid = slab.flux - np.einsum("bwi,bi->bw", design, coef)
    return coef, np.sum(slab.weight * resid**2, axis=1)


def _grid_search(slab, lines, z_guess, dv_grid, sigma_grid):
    """Best (dv, σ_v, linear coefficients) over grid points; grids are (G, B)."""
    best_chi2 = np.full(z_guess.shape, np.inf)
    best_dv, best_sigma = dv_grid[0].copy(), sigma_grid[0].copy()
    best_coef = None
    for dv, sig in zip(dv_grid, sigma_grid, strict=True):
        coef, chi2 = solve_linear_nonnegative(slab, line_templates(slab, lines, z_guess, dv, sig))
        better = chi2 < best_chi2
        best_chi2 = np.where(better, chi2, best_chi2)
        best_dv, best_sigma = np.where(better, dv, best_dv), np.where(better, sig, best_sigma)
        best_coef = coef if best_coef is None else np.where(better[:, None], coef, best_coef)
    return best_dv, best_sigma, best_coef


def _model(slab, lines, z_guess, theta, jacobian=False):
    """Model (B, W) at parameters theta = [dv, σ_v, fluxes (K), c0, c1]; optional J (B,W,P)."""
    n_lines = lines.to_component.shape[1]
    out = line_templates(slab, lines, z_guess, theta[:, 0], theta[:, 1], jacobian)
    templates = out[0] if jacobian else out
    design = _design(slab, templates)
    model = np.einsum("bwi,bi->bw", design, theta[:, 2:])
    if not jacobian:
        return model
    gauss_flux = np.einsum("nk,bk->bn", lines.to_component, theta[:, 2 : 2 + n_lines])
    d_dv = np.einsum("bnw,bn->bw", out[1], gauss_flux)
    d_dsig = np.einsum("bnw,bn->bw", out[2], gauss_flux)
    return model, np.concatenate([d_dv[:, :, None], d_dsig[:, :, None], design], axis=2)


def _chi2(slab, model):
    return np.sum(slab.weight * (slab.flux - model) ** 2, axis=1)


def _levenberg_marquardt(slab, lines, z_guess, theta, lower, upper, max_iter):
    """Projected Levenberg-Marquardt within [lower, upper] (B, P); returns theta (B, P)."""
    damping = np.full(z_guess.shape, 1e-3)
    done = slab.n_pix == 0
    for _ in range(max_iter):
        model, jac = _model(slab, lines, z_guess, theta, jacobian=True)
        chi2 = _chi2(slab, model)
        weighted = jac * slab.weight[:, :, None]
        fisher = np.einsum("bwi,bwj->bij", weighted, jac)
        grad = np.einsum("bwi,bw->bi", weighted, slab.flux - model)
        free = _free_parameters(theta, lower, upper, grad, fisher)
        diag = np.einsum("bii->bi", fisher)
        damped = fisher + damping[:, None, None] * diag[:, :, None] * np.eye(theta.shape[1])
        step, _ = solve_psd(damped, grad, free)
        trial = np.clip(theta + step, lower, upper)
        trial_chi2 = _chi2(slab, _model(slab, lines, z_guess, trial))
        accept = (trial_chi2 < chi2) & ~done
        theta = np.where(accept[:, None], trial, theta)
        damping = np.where(accept, damping / 3.0, damping * 4.0)
        gain = chi2 - trial_chi2
        done |= (accept & (gain <= 1e-10 * chi2 + 1e-12)) | (damping > 1e10)
        if done.all():
            break
    return theta


def _free_parameters(theta, lower, upper, grad, fisher):
    """Parameters not pinned at a bound by the gradient, and constrained by the data."""
    at_lower = (theta <= lower) & (grad <= 0)
    at_upper = (theta >= upper) & (grad >= 0)
    return ~(at_lower | at_upper | (lower == upper)) & (np.einsum("bii->bi", fisher) > 0)


def _covariance(slab, lines, z_guess, theta, lower, upper):
    """Inverse Fisher matrix (B, P, P) of the free parameters, the chi2 and the free mask.

    Parameters pinned at a bound get the conditional variance 1/F_ii and no covariance;
    fixed ones (lower == upper) get 0.
    """
    model, jac = _model(slab, lines, z_guess, theta, jacobian=True)
    weighted = jac * slab.weight[:, :, None]
    fisher = np.einsum("bwi,bwj->bij", weighted, jac)
    grad = np.einsum("bwi,bw->bi", weighted, slab.flux - model)
    free = _free_parameters(theta, lower, upper, grad, fisher)
    _, cov = solve_psd(fisher, np.zeros_like(theta), free)
    diag = np.einsum("bii->bi", fisher)
    with np.errstate(divide="ignore"):
        pinned_var = np.where(lower == upper, 0.0, np.where(diag > 0, 1.0 / diag, np.inf))
    idx = np.arange(theta.shape[1])
    cov[:, idx, idx] = np.where(free, cov[:, idx, idx], pinned_var)
    return cov, _chi2(slab, model), free


@dataclass
class FitWindow:
    """Spectra cut to their fit windows: the Slab, safe z_guess (B,), LSF sigma at Hα
    (B,) [Å] and per-row failure reasons (object array, "" = usable)."""

    slab: Slab
    z_guess: np.ndarray
    lsf_at_halpha: np.ndarray
    reason: np.ndarray


def prepare_window(wave, flux, ivar, lsf_sigma, z_guess, window_components, max_dv_kms,
                   sigma_v_max_kms, min_pixels):
    """Cut each spectrum to the window around `window_components` at z_guess (B,).

    The window spans the lines shifted by ± max_dv_kms plus a continuum margin of
    max(CONTINUUM_MARGIN_REST_A (1+z), CONTINUUM_MARGIN_SIGMAS × the broadest line
    sigma) on each side. Rows get a reason (bad_z_guess, no_coverage, all_masked,
    too_few_pixels < min_pixels) and weight 0 when unusable.
    """
    edges, flux, weight, lsf = as_batch(wave, flux, ivar, lsf_sigma)
    n_spec = flux.shape[0]
    z_guess = np.broadcast_to(np.asarray(z_guess, dtype=np.float64), (n_spec,))
    rest = np.array([w for c in window_components for w in c.rest_wavelengths])

    reason = np.full(n_spec, "", dtype=object)
    reason[~np.isfinite(z_guess) | (z_guess <= -1)] = "bad_z_guess"
    z_safe = np.where(reason == "", z_guess, 0.0)
    ref = LINE_WAVELENGTHS["halpha"] * (1 + z_safe)
    line_lo, line_hi = rest.min() * (1 + z_safe), rest.max() * (1 + z_safe)
    reason[(reason == "") & ((line_lo < edges[:, 0]) | (line_hi > edges[:, -1]))] = "no_coverage"
    reason[(reason == "") & ~(weight > 0).any(axis=1)] = "all_masked"

    centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
    lsf_ref = _interp_rows(centres, lsf, ref[:, None])[0][:, 0]
    broadest = np.hypot(lsf_ref, ref * sigma_v_max_kms / SPEED_OF_LIGHT_KMS)
    margin = np.maximum(CONTINUUM_MARGIN_REST_A * (1 + z_safe), CONTINUUM_MARGIN_SIGMAS * broadest)
    shift = max_dv_kms / SPEED_OF_LIGHT_KMS
    slab = window_slab(
        edges, flux, weight, lsf,
        line_lo * (1 - shift) - margin, line_hi * (1 + shift) + margin, ref,
    )
    reason[(reason == "") & (slab.n_pix < min_pixels)] = "too_few_pixels"
    slab.weight[reason != ""] = 0.0
    return FitWindow(slab, z_safe, lsf_ref, reason)


def fit_lines(
    wave,
    flux,
    ivar,
    lsf_sigma,
    z_guess,
    components,
    *,
    window_components=None,
    max_dv_kms=1500.0,
    sigma_v_bounds_kms=SIGMA_V_BOUNDS_KMS,
    max_iter=40,
):
    """Fit line components sharing z and σ_v plus a linear continuum; generic core.

    Inputs as for fit_halpha_nii; the window spans `window_components` (default: the
    fitted ones). Returns a dict: `theta` (B, P) = [dv_kms, sigma_v_kms, fluxes (K),
    c0, c1] with dv relative to z_guess, `cov` (B, P, P), `free` (B, P), `chi2`,
    `n_pix`, `z_guess`, `ok`, `reason` (B,).
    """
    n_lines = len(components)
    window = prepare_window(
        wave, flux, ivar, lsf_sigma, z_guess, window_components or components,
        max_dv_kms, sigma_v_bounds_kms[1], min_pixels=n_lines + 5,
    )
    slab, z_ref, reason = window.slab, window.z_guess, window.reason
    lines = LineSet.from_components(components)
    ones = np.ones(z_ref.shape)

    # Coarse z scan at a nominal σ_v, step a fraction of the narrowest total line sigma.
    sigma_scan = np.clip(_SCAN_SIGMA_V_KMS, *sigma_v_bounds_kms)
    ref = LINE_WAVELENGTHS["halpha"] * (1 + z_ref)
    total_kms = np.hypot(SPEED_OF_LIGHT_KMS * window.lsf_at_halpha / ref, sigma_scan)
    narrowest = total_kms[reason == ""].min(initial=np.inf)
    n_scan = np.ceil(2 * max_dv_kms / (_SCAN_STEP_SIGMAS * narrowest)) + 1
    n_scan = int(np.clip(n_scan, 5, _MAX_SCAN_POINTS))
    dv_scan = np.linspace(-max_dv_kms, max_dv_kms, n_scan)[:, None] * ones
    dv0, _, _ = _grid_search(slab, lines, z_ref, dv_scan, np.full_like(dv_scan, sigma_scan))
    # Local (dv, σ_v) grid around the scan minimum.
    step = 2 * max_dv_kms / (n_scan - 1)
    dv_local = dv0 + step * np.array([-1, -0.5, 0, 0.5, 1])[:, None]
    dv_local = np.clip(dv_local, -max_dv_kms, max_dv_kms)
    sigmas = np.unique(np.clip(_SIGMA_V_GRID_KMS, *sigma_v_bounds_kms))
    dv_grid = np.repeat(dv_local, sigmas.size, axis=0)
    sigma_grid = np.tile(sigmas, dv_local.shape[0])[:, None] * ones
    dv1, sigma1, coef1 = _grid_search(slab, lines, z_ref, dv_grid, sigma_grid)

    lower = np.r_[-max_dv_kms, sigma_v_bounds_kms[0], np.zeros(n_lines), -np.inf, -np.inf]
    upper = np.r_[max_dv_kms, sigma_v_bounds_kms[1], np.full(n_lines + 2, np.inf)]
    lower, upper = lower * ones[:, None], upper * ones[:, None]
    theta = np.concatenate([dv1[:, None], sigma1[:, None], coef1], axis=1)
    theta = _levenberg_marquardt(slab, lines, z_ref, theta, lower, upper, max_iter)
    cov, chi2, free = _covariance(slab, lines, z_ref, theta, lower, upper)
    reason[(reason == "") & ~np.all(np.isfinite(theta), axis=1)] = "fit_failed"
    return {
        "theta": theta,
        "cov": cov,
        "free": free,
        "chi2": chi2,
        "n_pix": slab.n_pix,
        "z_guess": z_ref,
        "ok": reason == "",
        "reason": reason.astype(str),
    }


def fit_halpha_nii(
    wave,
    flux,
    ivar,
    lsf_sigma,
    z_guess,
    *,
    include_sii=False,
    max_dv_kms=1500.0,
    sigma_v_bounds_kms=SIGMA_V_BOUNDS_KMS,
    max_iter=40,
):
    """Fit Hα + [NII] 6550/6585 (+ [SII]) with a linear continuum to B spectra.

    wave: observed bin edges (L+1,) / (B, L+1) or centres (L,) / (B, L) [Å];
    flux, ivar: (B, L) [1e-17 erg/s/cm²/Å]; lsf_sigma: Gaussian LSF sigma per pixel,
    (L,) or (B, L) [Å, observed]; z_guess: (B,). The fit stays within max_dv_kms of
    z_guess and σ_v within sigma_v_bounds_kms; fix σ_v by giving equal bounds.

    Returns a dict of (B,) arrays: `z`, `sigma_v_kms`, `ha_flux`, `nii_6585_flux`,
    `nii_6550_flux` (= nii_6585 / NII_DOUBLET_RATIO), `ha_nii_flux` (Hα + both [NII]),
    [`sii_6718_flux`, `sii_6733_flux`], each with `*_err` (1σ, from the covariance);
    `n2` = log10(nii_6585/Hα) clipped to N2_PRIOR_RANGE, `n2_unclipped` (-inf when
    [NII] sits at 0), `n2_err` (delta method, capped at the prior width);
    `continuum_at_ha` [1e-17 erg/s/cm²/Å]; `chi2`, `chi2_dof`, `n_pix`,
    `ha_snr` = ha_flux / ha_flux_err; `ok` and `reason` ("" when ok; otherwise
    bad_z_guess, no_coverage, all_masked, too_few_pixels, fit_failed). Rows that are
    not ok hold NaN.
    """
    components = [HALPHA, NII] + ([SII_6718, SII_6733] if include_sii else [])
    raw = fit_lines(
        wave, flux, ivar, lsf_sigma, z_guess, components,
        max_dv_kms=max_dv_kms, sigma_v_bounds_kms=sigma_v_bounds_kms, max_iter=max_iter,
    )
    theta, cov, z_guess = raw["theta"], raw["cov"], raw["z_guess"]
    variance = np.einsum("bii->bi", cov)
    error = np.sqrt(variance)
    one_plus_zg = 1.0 + z_guess
    ha, nii = theta[:, 2], theta[:, 3]
    total = np.array([1.0, 1.0 + 1.0 / NII_DOUBLET_RATIO])
    total_var = np.einsum("i,bij,j->b", total, cov[:, 2:4, 2:4], total)
    n_free = raw["free"].sum(axis=1)
    prior_width = N2_PRIOR_RANGE[1] - N2_PRIOR_RANGE[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        n2_unclipped = np.log10(nii / ha)
        rel = np.stack([-1.0 / ha, 1.0 / nii], axis=1)
        n2_var = np.einsum("bi,bij,bj->b", rel, cov[:, 2:4, 2:4], rel) / np.log(10) ** 2
        out = {
            "z": z_guess + theta[:, 0] * one_plus_zg / SPEED_OF_LIGHT_KMS,
            "z_err": error[:, 0] * one_plus_zg / SPEED_OF_LIGHT_KMS,
            "sigma_v_kms": theta[:, 1],
            "sigma_v_kms_err": error[:, 1],
            "ha_flux": ha,
            "ha_flux_err": error[:, 2],
            "nii_6585_flux": nii,
            "nii_6585_flux_err": error[:, 3],
            "nii_6550_flux": nii / NII_DOUBLET_RATIO,
            "nii_6550_flux_err": error[:, 3] / NII_DOUBLET_RATIO,
            "ha_nii_flux": ha + total[1] * nii,
            "ha_nii_flux_err": np.sqrt(total_var),
            "n2": np.clip(np.nan_to_num(n2_unclipped, nan=N2_PRIOR_RANGE[0]), *N2_PRIOR_RANGE),
            "n2_unclipped": n2_unclipped,
            "n2_err": np.where(n2_var >= 0, np.minimum(np.sqrt(n2_var), prior_width), prior_width),
            "continuum_at_ha": theta[:, -2],
            "chi2": raw["chi2"],
            "chi2_dof": raw["chi2"] / np.maximum(raw["n_pix"] - n_free, 1),
            "ha_snr": ha / error[:, 2],
        }
    for k, component in enumerate(components[2:], start=4):
        out[component.name + "_flux"], out[component.name + "_flux_err"] = theta[:, k], error[:, k]
    ok = raw["ok"]
    for key in out:
        out[key] = np.where(ok, out[key], np.nan)
    out.update(n_pix=raw["n_pix"], ok=ok, reason=raw["reason"])
    return out


def fit_target_grid(flux, ivar, z_grid, rest_edges, lsf_sigma_rest, **fit_options):
    """Fit spectra given on a rest-frame grid (e.g. TARGET_GRID) placed at z_grid (B,).

    flux, ivar: (B, L) observed f_λ averaged over the observed bins
    rest_edges * (1 + z_grid) [1e-17 erg/s/cm²/Å]; rest_edges: (L+1,) [Å];
    lsf_sigma_rest: LSF sigma in rest-frame Å, scalar, (L,) or (B, L). z_grid is also
    the z_guess: the fitted z may differ from it by up to max_dv_kms. Line fluxes are
    observed [1e-17 erg/s/cm²] (= sum(flux) (1 + z_grid) Δλ_rest for a line alone).
    Options and outputs as for fit_halpha_nii.
    """
    one_plus_z = 1.0 + np.atleast_1d(np.asarray(z_grid, dtype=np.float64))
    flux = np.atleast_2d(flux)
    edges = np.asarray(rest_edges, dtype=np.float64)[None, :] * one_plus_z[:, None]
    lsf_rest = np.broadcast_to(np.asarray(lsf_sigma_rest, dtype=np.float64), flux.shape)
    lsf = lsf_rest * one_plus_z[:, None]
    return fit_halpha_nii(edges, flux, ivar, lsf, one_plus_z - 1.0, **fit_options)
