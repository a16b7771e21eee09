"""Redshifts from the Hα + [NII] blend of low-resolution spectra, batched over B spectra.

`coarse_redshift` finds z without a prior by scanning an Hα + [NII] template over a z
range: at each z the template amplitude (>= 0) and a local linear continuum are fitted
by weighted least squares, and the z with the largest Δχ² = χ²(continuum) - χ²(line)
wins (a matched filter that is robust to the continuum level). Its output is the
z_guess for `fit_halpha_nii`.

`centroid_redshift_ignoring_nii` is the naive fit of one Gaussian to the blend, the
estimator that Martens et al. 2019 (MNRAS 485, 211) show is biased redward by
~42-217 km/s for N2 = -1.2 … -0.3 (docs/science.md); it exists to measure that bias.

`redshift_guess` gives every catalogue row the z a predictor places its window at: the
catalogue prior, or `coarse_redshift` where there is none (flagged Z_FROM_SPECTRUM).

Units: Å (observed, vacuum), flux density 1e-17 erg/s/cm²/Å, LSF sigma in Å.
"""

from __future__ import annotations

import numpy as np

from specsr_keras.instruments import get_instrument, instrument_with_id
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.measure.linefit import (
    CONTINUUM_MARGIN_REST_A,
    CONTINUUM_MARGIN_SIGMAS,
    HALPHA,
    NII,
    LineComponent,
    LineSet,
    as_batch,
    fit_lines,
    gather_slab,
    line_templates,
    locate_window,
    pad_columns,
    prepare_window,
)
from specsr_keras.physics import LINE_WAVELENGTHS, NII_DOUBLET_RATIO, SPEED_OF_LIGHT_KMS

__all__ = ["coarse_redshift", "centroid_redshift_ignoring_nii", "lsf_sigma_rows", "redshift_guess"]

_NII_6550 = LINE_WAVELENGTHS["nii_6550"]
_NII_6585 = LINE_WAVELENGTHS["nii_6585"]
_HALPHA = LINE_WAVELENGTHS["halpha"]
# Assumed intrinsic dispersion that sets the width of the moment-centroid region [km/s].
_CENTROID_SIGMA_V_KMS = 200.0


def _blend_component(n2):
    """Hα + [NII] doublet as one component with [NII]6585/Hα = 10**n2."""
    nii = 10.0**n2
    return LineComponent(
        "ha_nii_blend",
        (_HALPHA, _NII_6585, _NII_6550),
        (1.0, nii, nii / NII_DOUBLET_RATIO),
    )


def coarse_redshift(
    wave,
    flux,
    ivar,
    lsf_sigma,
    z_range=None,
    *,
    n2_template=-0.5,
    sigma_v_kms=100.0,
    step_sigmas=0.7,
    min_snr=3.0,
):
    """Redshift of the strongest Hα + [NII] blend in each spectrum, without a prior.

    wave: bin edges (L+1,) / (B, L+1) or centres (L,) / (B, L) [Å]; flux, ivar (B, L);
    lsf_sigma (L,) or (B, L) [Å]; z_range: (z_min, z_max), default the z where the
    whole blend lies on the grid. The scan is uniform in ln(1+z) with a step of
    `step_sigmas` times the narrowest total line sigma, refined by a parabola.

    Returns a dict of (B,) arrays: `z`, `snr` = sqrt(Δχ²) at the peak, `blend_flux`
    (template Hα + [NII] flux [1e-17 erg/s/cm²]), `ok`, `reason` ("" when ok;
    all_masked, no_detection, low_snr).
    """
    edges, flux, weight, lsf = as_batch(wave, flux, ivar, lsf_sigma)
    n_spec = flux.shape[0]
    if z_range is None:
        z_range = (edges[:, 0].min() / _NII_6550 - 1.0, edges[:, -1].max() / _NII_6585 - 1.0)
    line_width_kms = SPEED_OF_LIGHT_KMS * np.min(lsf / (0.5 * (edges[:, 1:] + edges[:, :-1])))
    step = step_sigmas * np.hypot(line_width_kms, sigma_v_kms) / SPEED_OF_LIGHT_KMS
    log_grid = np.arange(np.log1p(z_range[0]), np.log1p(z_range[1]) + step, step)
    z_grid = np.expm1(log_grid)

    # Window per z: the blend plus a continuum margin of the broadest line on each side.
    broadest = np.max(lsf, axis=1)
    opz = 1.0 + z_grid[:, None]
    margin = np.maximum(CONTINUUM_MARGIN_REST_A * opz, CONTINUUM_MARGIN_SIGMAS * broadest)
    lo = _NII_6550 * opz - margin
    hi = _NII_6585 * opz + margin
    width = int(np.ceil(np.max(hi - lo) / np.min(np.diff(edges, axis=1)))) + 2
    padded = pad_columns(edges, flux, weight, lsf, width)

    lines = LineSet.from_components([_blend_component(n2_template)])
    sigma_v = np.full(n_spec, sigma_v_kms)
    delta_chi2 = np.empty((z_grid.size, n_spec))
    amplitude = np.empty((z_grid.size, n_spec))
    for i, z in enumerate(z_grid):
        z_vec = np.full(n_spec, z)
        first, stop = locate_window(edges, lo[i], hi[i])
        slab = gather_slab(padded, first, stop, width, _HALPHA * (1 + z_vec))
        template = line_templates(slab, lines, z_vec, np.zeros(n_spec), sigma_v)[:, 0]
        delta_chi2[i], amplitude[i] = _matched_filter(slab, template)

    best = np.argmax(delta_chi2, axis=0)
    cols = np.arange(n_spec)
    peak = delta_chi2[best, cols]
    left = delta_chi2[np.maximum(best - 1, 0), cols]
    right = delta_chi2[np.minimum(best + 1, z_grid.size - 1), cols]
    curvature = left - 2 * peak + right
    inner = (best > 0) & (best < z_grid.size - 1) & (curvature < 0)
    offset = np.where(inner, 0.5 * (left - right) / np.where(inner, curvature, 1.0), 0.0)
    z = np.expm1(log_grid[best] + np.clip(offset, -0.5, 0.5) * step)

    snr = np.sqrt(np.maximum(peak, 0.0))
    blend = amplitude[best, cols] * (1.0 + 10.0**n2_template * (1.0 + 1.0 / NII_DOUBLET_RATIO))
    reason = np.full(n_spec, "", dtype=object)
    reason[snr < min_snr] = "low_snr"
    reason[peak <= 0] = "no_detection"
    reason[~(weight > 0).any(axis=1)] = "all_masked"
    ok = reason == ""
    return {
        "z": np.where(ok, z, np.nan),
        "snr": snr,
        "blend_flux": np.where(ok, blend, np.nan),
        "ok": ok,
        "reason": reason.astype(str),
    }


def _matched_filter(slab, template):
    """Δχ² of template (B, W) over a linear continuum alone, and its amplitude (>= 0).

    With the template projected orthogonally to the continuum (weighted inner product
    <a, b> = Σ w a b): amplitude = <t⊥, f> / <t⊥, t⊥>, Δχ² = amplitude <t⊥, f>.
    """
    w, f, x = slab.weight, slab.flux, slab.slope_coord

    def dot(a, b):
        return np.sum(w * a * b, axis=1)

    s0, s1, s2 = dot(1.0, 1.0), dot(1.0, x), dot(x, x)
    det = s0 * s2 - s1**2
    good = det > 1e-12 * np.maximum(s0 * s2, 1e-300)
    inv_det = np.where(good, 1.0 / np.where(good, det, 1.0), 0.0)

    def project_out_continuum(a):
        a0, a1 = dot(1.0, a), dot(x, a)
        c0 = (s2 * a0 - s1 * a1) * inv_det
        c1 = (s0 * a1 - s1 * a0) * inv_det
        return a - c0[:, None] - c1[:, None] * x

    t_perp = project_out_continuum(template)
    norm = dot(t_perp, t_perp)
    proj = dot(t_perp, f)
    usable = good & (norm > 0)
    amplitude = np.where(usable & (proj > 0), proj / np.where(usable, norm, 1.0), 0.0)
    return amplitude * proj, amplitude


def centroid_redshift_ignoring_nii(
    wave,
    flux,
    ivar,
    lsf_sigma,
    z_guess,
    *,
    method="moment",
    max_dv_kms=1500.0,
    n_iter=3,
):
    """Naive redshift that takes the Hα + [NII] blend for Hα alone, (B,) arrays.

    method "moment": the flux-weighted mean wavelength of the continuum-subtracted
    blend (the centroid whose shift Martens et al. 2019 derive from the line positions:
    ~215 km/s at N2 = -0.3 whatever the resolution). The blend region spans the
    doublet ± 4 total line sigmas (σ_v = 200 km/s assumed) around the current centroid,
    recentred `n_iter` times; the linear continuum is fitted to the pixels outside it
    within the fit_halpha_nii window.
    method "gaussian": one Gaussian 'Hα' + linear continuum fitted by fit_lines in the
    fit_halpha_nii window, σ_v up to 1500 km/s. It tends to the centroid only where
    the blend is unresolved (G141); at Euclid R~450 it follows the Hα peak more.

    Inputs as for fit_halpha_nii. Returns `z`, `z_err`, `line_flux` (blend flux
    assigned to Hα [1e-17 erg/s/cm²]), `ok`, `reason`; "gaussian" adds `sigma_v_kms`.
    """
    if method == "gaussian":
        raw = fit_lines(
            wave, flux, ivar, lsf_sigma, z_guess, [HALPHA],
            window_components=[HALPHA, NII], max_dv_kms=max_dv_kms,
            sigma_v_bounds_kms=(20.0, 1500.0),
        )
        theta = raw["theta"]
        scale = (1.0 + raw["z_guess"]) / SPEED_OF_LIGHT_KMS
        out = {
            "z": raw["z_guess"] + theta[:, 0] * scale,
            "z_err": np.sqrt(raw["cov"][:, 0, 0]) * scale,
            "line_flux": theta[:, 2],
            "sigma_v_kms": theta[:, 1],
        }
        ok, reason = raw["ok"], raw["reason"]
    elif method == "moment":
        out, ok, reason = _moment_centroid(wave, flux, ivar, lsf_sigma, z_guess, max_dv_kms, n_iter)
    else:
        raise ValueError(f"unknown method {method!r}; use 'moment' or 'gaussian'")
    out = {key: np.where(ok, value, np.nan) for key, value in out.items()}
    out.update(ok=ok, reason=reason)
    return out


def _moment_centroid(wave, flux, ivar, lsf_sigma, z_guess, max_dv_kms, n_iter):
    """First moment of the continuum-subtracted blend; see centroid_redshift_ignoring_nii."""
    window = prepare_window(
        wave, flux, ivar, lsf_sigma, z_guess, [HALPHA, NII], max_dv_kms,
        _CENTROID_SIGMA_V_KMS, min_pixels=4,
    )
    slab, z_ref = window.slab, window.z_guess
    centre, width = slab.centre, np.diff(slab.edges, axis=1)
    blend_half = 4.0 * np.sqrt(
        slab.lsf_sigma**2 + (centre * _CENTROID_SIGMA_V_KMS / SPEED_OF_LIGHT_KMS) ** 2
    )
    centroid = _HALPHA * (1.0 + z_ref)
    for _ in range(max(n_iter, 1)):
        opz = centroid / _HALPHA
        in_blend = (centre > _NII_6550 * opz[:, None] - blend_half) & (
            centre < _NII_6585 * opz[:, None] + blend_half
        )
        line = slab.flux - _continuum_outside(slab, in_blend)
        weight = np.where(in_blend & (slab.weight > 0), width, 0.0)
        line_flux = np.sum(weight * line, axis=1)
        safe = np.where(line_flux > 0, line_flux, 1.0)
        centroid = np.where(line_flux > 0, np.sum(weight * line * centre, axis=1) / safe, centroid)
    with np.errstate(divide="ignore"):
        variance = np.where(slab.weight > 0, 1.0 / slab.weight, 0.0)
    offset = centre - centroid[:, None]
    centroid_var = np.sum(weight**2 * variance * offset**2, axis=1) / safe**2
    reason = window.reason
    reason[(reason == "") & (line_flux <= 0)] = "no_line_flux"
    out = {
        "z": centroid / _HALPHA - 1.0,
        "z_err": np.sqrt(centroid_var) / _HALPHA,
        "line_flux": line_flux,
    }
    return out, reason == "", reason.astype(str)


def _continuum_outside(slab, in_blend):
    """Weighted linear continuum (B, W) fitted to the slab pixels outside the blend."""
    w = np.where(in_blend, 0.0, slab.weight)
    x, f = slab.slope_coord, slab.flux
    s0, s1, s2 = w.sum(1), (w * x).sum(1), (w * x * x).sum(1)
    f0, f1 = (w * f).sum(1), (w * x * f).sum(1)
    det = s0 * s2 - s1**2
    good = det > 0
    safe = np.where(good, det, 1.0)
    slope = np.where(good, (s0 * f1 - s1 * f0) / safe, 0.0)
    level = np.where(good, (s2 * f0 - s1 * f1) / safe, f0 / np.maximum(s0, 1e-300))
    return level[:, None] + slope[:, None] * x


def redshift_guess(batch: dict, instrument: str, lsf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(z (B,), flags (B,) int): the catalog prior, or `coarse_redshift` where it is NaN."""
    z_guess = np.array(batch["z_prior"], np.float64)
    flags = np.zeros(z_guess.shape, np.int64)
    scan = ~np.isfinite(z_guess)
    if scan.any():
        lsf = lsf_sigma_rows(batch, instrument) if lsf is None else lsf
        ivar = np.where(batch["lowres_mask"], 0.0, np.asarray(batch["lowres_ivar"], np.float64))
        found = coarse_redshift(get_instrument(instrument).bin_edges,
                                np.asarray(batch["lowres_flux"], np.float64)[scan], ivar[scan], lsf[scan])
        z_guess[scan] = found["z"]
        flags[scan] |= QualityFlag.Z_FROM_SPECTRUM
        flags[np.flatnonzero(scan)[~found["ok"]]] |= QualityFlag.Z_SCAN_FAILED
    return z_guess, flags


def lsf_sigma_rows(batch: dict, instrument: str) -> np.ndarray:
    """LSF sigma (B, L) [Å] on `instrument`'s grid for each row's instrument and source size."""
    wave = get_instrument(instrument).wavelength
    ids = np.asarray(batch["instrument_id"])
    size = np.asarray(batch.get("source_sigma_arcsec", np.full(ids.shape, np.nan)), float)
    lsf = np.empty((ids.size, wave.size))
    for instrument_id in np.unique(ids):
        rows = ids == instrument_id
        observed_with = instrument_with_id(instrument_id)
        row_size = np.where(np.isfinite(size[rows]), size[rows],
                            observed_with.resolving_power_source_sigma)
        lsf[rows] = observed_with.lsf_sigma(wave[None, :], row_size[:, None])
    return lsf
