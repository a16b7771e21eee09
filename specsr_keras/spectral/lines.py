"""Line measurement on hi-res windows, in keras.ops (the same numbers in `specsr infer` and serving).

Each window (N, 320) [flux density, 1e-17 erg/s/cm²/Å, on TARGET_GRID placed at z_place]
is fitted by least squares with

    f(t) = F_Hα G(Hα) + F_[NII] (G(6585) + G(6550) / 2.94) + F_6718 G(6718) + F_6733 G(6733)
           + F_abs G_abs(Hα) + c0 + c1 (t - t_Hα) / 100

in window coordinates t (rest Å from 6460): G are unit-flux Gaussians averaged over the
1 Å bins (`kernel.binned_gaussian`) at λ_k (1 + dv / c) with width
sqrt((λ_k σ_v / c)² + σ_3600(λ_k)²); G_abs is stellar Balmer absorption under Hα (fixed
width ABSORPTION_SIGMA_REST, flux <= 0). Emission fluxes are >= 0, σ_v in
SIGMA_V_BOUNDS_KMS, |dv| <= MAX_DV_KMS around the placement.

Fit: a scan over dv at σ_v = 100 km/s (linear least squares per grid point with static,
precomputed pseudo-inverses), then FIT_ITERATIONS projected Levenberg-Marquardt steps on
all parameters with analytic derivatives. Samples are noiseless model spectra, so every
pixel has the same weight. Line fluxes are observed fluxes: the rest-frame integral times
(1 + z_place).
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from specsr_keras.instruments import TARGET_GRID
from specsr_keras.physics import (
    FWHM_PER_SIGMA,
    LINE_WAVELENGTHS,
    N2_RANGE,
    NII_DOUBLET_RATIO,
    SIGMA_V_BOUNDS_KMS,
    SPEED_OF_LIGHT_KMS,
)
from specsr_keras.spectral.kernel import binned_gaussian

WINDOW_START = float(TARGET_GRID.bin_edges[0])
# Gaussians of the model: (rest λ [Å], column of the flux parameter, relative flux).
_GAUSSIANS = (
    (LINE_WAVELENGTHS["halpha"], 0, 1.0),
    (LINE_WAVELENGTHS["nii_6585"], 1, 1.0),
    (LINE_WAVELENGTHS["nii_6550"], 1, 1.0 / NII_DOUBLET_RATIO),
    (LINE_WAVELENGTHS["sii_6718"], 2, 1.0),
    (LINE_WAVELENGTHS["sii_6733"], 3, 1.0),
)
_EMISSION = 4  # flux columns of emission lines (Hα, [NII], [SII] 6718, 6733)
# Stellar Hα absorption: Gaussian sigma [rest Å] (the simulator's 8-15 Å; unconfirmed for real data).
ABSORPTION_SIGMA_REST = 11.5
MAX_DV_KMS = 1500.0
SCAN_STEP_KMS = 50.0
SCAN_SIGMA_V_KMS = 100.0
FIT_ITERATIONS = 12
# Parameters: dv [km/s], σ_v [km/s], 4 emission fluxes, absorption flux, c0, c1.
N_PARAMETERS = 9
QUANTITIES = ("ha_flux", "nii_6585_flux", "n2", "z")


def _variance_rest(rest, sigma_v):
    """Total Gaussian variance [rest Å²] of a line at rest λ with velocity dispersion sigma_v [km/s]."""
    instrument = rest / (FWHM_PER_SIGMA * TARGET_GRID.resolving_power)
    return (rest * sigma_v / SPEED_OF_LIGHT_KMS) ** 2 + instrument**2


def _edges():
    edges = (TARGET_GRID.bin_edges - WINDOW_START).astype(np.float32)
    return edges[:-1], edges[1:]


def _linear_columns(dv, sigma_v, derivatives=False):
    """Columns (…, 320, 7) of the linear parameters at dv, σ_v (…,) (keras.ops); with
    derivatives also d model / d dv and d model / d σ_v per unit flux column (…, 320, 5)."""
    lo, hi = _edges()
    hi_t = ops.convert_to_tensor(hi)
    lo_t = ops.convert_to_tensor(lo)
    shift = 1.0 + ops.expand_dims(dv, -1) / SPEED_OF_LIGHT_KMS  # (…, 1)
    sigma_v = ops.expand_dims(sigma_v, -1)
    columns = [ops.zeros(ops.shape(shift)[:-1] + (320,))] * _EMISSION
    d_dv = [ops.zeros(ops.shape(shift)[:-1] + (320,))] * _EMISSION
    d_sigma = [ops.zeros(ops.shape(shift)[:-1] + (320,))] * _EMISSION
    for rest, column, ratio in _GAUSSIANS:
        centre = rest * shift - WINDOW_START  # (…, 1)
        variance = _variance_rest(rest, sigma_v)
        width = ops.sqrt(variance)
        profile = binned_gaussian(lo_t, hi_t, centre, width)
        columns[column] = columns[column] + ratio * profile
        if derivatives:
            u_lo, u_hi = (lo_t - centre) / width, (hi_t - centre) / width
            phi_lo, phi_hi = (ops.exp(-0.5 * ops.square(u)) / math.sqrt(2 * math.pi) for u in (u_lo, u_hi))
            d_centre = -(phi_hi - phi_lo) / width  # bins are 1 Å wide
            d_width = -(u_hi * phi_hi - u_lo * phi_lo) / width
            d_dv[column] = d_dv[column] + ratio * d_centre * (rest / SPEED_OF_LIGHT_KMS)
            d_sigma[column] = d_sigma[column] + ratio * d_width * (
                (rest / SPEED_OF_LIGHT_KMS) ** 2 * sigma_v / width)
    halpha = LINE_WAVELENGTHS["halpha"]
    absorption = binned_gaussian(lo_t, hi_t, halpha * shift - WINDOW_START,
                                 ops.full(ops.shape(shift), ABSORPTION_SIGMA_REST))
    centre_t = 0.5 * (lo_t + hi_t)
    ones = ops.ones_like(absorption)
    slope = ones * (centre_t - (halpha - WINDOW_START)) / 100.0
    design = ops.stack(columns + [absorption, ones, slope], axis=-1)
    if not derivatives:
        return design
    return design, ops.stack(d_dv, axis=-1), ops.stack(d_sigma, axis=-1)


def _scan_tables():
    """Scan at σ_v = SCAN_SIGMA_V_KMS: dv grid (G,), pseudo-inverses (G, 7, 320) and designs (G, 320, 7)."""
    grid = np.arange(-MAX_DV_KMS, MAX_DV_KMS + 0.5 * SCAN_STEP_KMS, SCAN_STEP_KMS, dtype=np.float32)
    dv = ops.convert_to_tensor(grid)
    design = _linear_columns(dv, ops.full(ops.shape(dv), SCAN_SIGMA_V_KMS))
    gram = ops.einsum("gwi,gwj->gij", design, design) + 1e-9 * ops.eye(design.shape[-1])
    return dv, ops.einsum("gij,gwj->giw", ops.inv(gram), design), design


def _bounds():
    lower = np.array([-MAX_DV_KMS, SIGMA_V_BOUNDS_KMS[0], 0, 0, 0, 0, -np.inf, -np.inf, -np.inf], np.float32)
    upper = np.array([MAX_DV_KMS, SIGMA_V_BOUNDS_KMS[1], np.inf, np.inf, np.inf, np.inf, 0, np.inf, np.inf],
                     np.float32)
    return ops.convert_to_tensor(np.where(np.isinf(lower), -1e30, lower).astype(np.float32)), \
        ops.convert_to_tensor(np.where(np.isinf(upper), 1e30, upper).astype(np.float32))


def _model(theta, derivatives=False):
    out = _linear_columns(theta[:, 0], theta[:, 1], derivatives)
    design = out[0] if derivatives else out
    model = ops.einsum("nwk,nk->nw", design, theta[:, 2:])
    if not derivatives:
        return model
    fluxes = theta[:, 2 : 2 + _EMISSION]
    d_dv = ops.einsum("nwk,nk->nw", out[1], fluxes)
    d_sigma = ops.einsum("nwk,nk->nw", out[2], fluxes)
    jacobian = ops.concatenate([ops.expand_dims(d_dv, -1), ops.expand_dims(d_sigma, -1), design], axis=-1)
    return model, jacobian


def fit_windows(windows):
    """Fit (N, 320) windows; returns parameters theta (N, 9) and the residual rms (N,)."""
    windows = ops.cast(windows, "float32")
    windows = ops.where(ops.isfinite(windows), windows, 0.0)
    dv_grid, pinv, design = _scan_tables()
    coefficients = ops.einsum("gkw,nw->ngk", pinv, windows)  # (N, G, 7)
    fitted = ops.einsum("gwk,ngk->ngw", design, coefficients)
    chi2 = ops.sum(ops.square(ops.expand_dims(windows, 1) - fitted), axis=-1)  # (N, G)
    best = ops.argmin(chi2, axis=-1)
    start_linear = ops.take_along_axis(coefficients, ops.reshape(best, (-1, 1, 1)), axis=1)[:, 0]
    dv0 = ops.take(dv_grid, best)
    lower, upper = _bounds()
    theta = ops.concatenate([ops.expand_dims(dv0, -1), ops.full((ops.shape(dv0)[0], 1), SCAN_SIGMA_V_KMS),
                             start_linear], axis=-1)
    theta = ops.clip(theta, lower, upper)
    damping = ops.full(ops.shape(dv0), 1e-3)
    eye = ops.eye(N_PARAMETERS)

    def step(_, state):
        theta, damping = state
        model, jacobian = _model(theta, derivatives=True)
        residual = windows - model
        chi2 = ops.sum(ops.square(residual), axis=-1)
        normal = ops.einsum("nwi,nwj->nij", jacobian, jacobian)
        gradient = ops.einsum("nwi,nw->ni", jacobian, residual)
        diagonal = ops.einsum("nii->ni", normal)
        damped = normal + (ops.expand_dims(damping, -1) * diagonal + 1e-9 * ops.max(diagonal, -1, keepdims=True)
                           )[:, :, None] * eye
        trial = ops.clip(theta + ops.solve(damped, ops.expand_dims(gradient, -1))[..., 0], lower, upper)
        trial_chi2 = ops.sum(ops.square(windows - _model(trial)), axis=-1)
        accept = ops.logical_and(trial_chi2 < chi2, ops.all(ops.isfinite(trial), axis=-1))
        theta = ops.where(ops.expand_dims(accept, -1), trial, theta)
        damping = ops.clip(ops.where(accept, damping / 3.0, damping * 4.0), 1e-7, 1e7)
        return theta, damping

    theta, _ = ops.fori_loop(0, FIT_ITERATIONS, step, (theta, damping))
    rms = ops.sqrt(ops.mean(ops.square(windows - _model(theta)), axis=-1))
    return theta, rms


def measure_windows(samples, z_place):
    """Per-sample line measurements of windows (B, K, 320) placed at z_place (B,).

    Returns (B, K) arrays: ha_flux, nii_6585_flux [1e-17 erg/s/cm²], n2 = log10([NII]6585/Hα)
    clipped to N2_RANGE (fluxes floored at 1e-6 of the window's peak x 1 Å), z, sigma_v_kms,
    and ok (the fit is finite and Hα > 0).
    """
    shape = ops.shape(samples)
    flat = ops.reshape(ops.cast(samples, "float32"), (-1, shape[-1]))
    theta, _ = fit_windows(flat)
    one_plus_z = ops.repeat(1.0 + ops.cast(z_place, "float32"), shape[1], axis=0)
    ha = theta[:, 2] * one_plus_z
    nii = theta[:, 3] * one_plus_z
    floor = 1e-6 * ops.max(ops.abs(flat), axis=-1) * one_plus_z
    n2 = ops.clip(ops.log10(ops.maximum(nii, floor) / ops.maximum(ha, floor)), *N2_RANGE)
    z = one_plus_z * (1.0 + theta[:, 0] / SPEED_OF_LIGHT_KMS) - 1.0
    ok = ops.logical_and(ops.all(ops.isfinite(theta), axis=-1), ha > floor)
    out = {"ha_flux": ha, "nii_6585_flux": nii, "n2": n2, "z": z, "sigma_v_kms": theta[:, 1],
           "ok": ops.cast(ok, "float32")}
    return {name: ops.reshape(value, (shape[0], shape[1])) for name, value in out.items()}
