"""The one column builder of `specsr infer` and `specsr evaluate`: samples or a fit -> columns.

Every predictor yields either posterior *samples* of each quantity (diffusion models,
`sample_columns`) or a *fit* with Gaussian errors (the direct low-res fit, `fit_columns`);
both become the same per-object columns `<q>_<p>` (`schema.percentile_columns`) plus
`flags` (QualityFlag bits, see `flags.py`). Units: line fluxes 1e-17 erg/s/cm², N2 =
log10([NII]6585/Hα) dex, z dimensionless.
"""

from __future__ import annotations

import keras
import numpy as np

from specsr_keras.measure.flags import QualityFlag
from specsr_keras.physics import N2_RANGE
from specsr_keras.schema import PERCENTILES, QUANTITIES
from specsr_keras.spectral.intervals import predictive_percentiles

# Gaussian offsets (in sigma) of each reported percentile, for fits with a 1-sigma error.
_GAUSS_OFFSETS = {"p2_5": -1.959964, "p16": -0.994458, "p50": 0.0, "p84": 0.994458, "p97_5": 1.959964}
# Thresholds of the quality flags: Hα S/N, reduced chi2, fraction of failed sample fits.
LOW_HA_SNR = 3.0
POOR_FIT_CHI2_DOF = 3.0
MIN_OK_FRACTION = 0.5
# An N2 estimate within this of an end of N2_RANGE [dex] counts as at the bound.
N2_BOUND_TOLERANCE = 1e-3


def quality_flags(columns: dict, flags: np.ndarray, ok: np.ndarray, chi2_dof: np.ndarray) -> np.ndarray:
    """Add FIT_FAILED, N2_AT_BOUND, LOW_HA_SNR and POOR_FIT to `flags` (B,) from the columns."""
    flags = np.array(flags, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        n2 = columns["n2_p50"]
        at_bound = (n2 <= N2_RANGE[0] + N2_BOUND_TOLERANCE) | (n2 >= N2_RANGE[1] - N2_BOUND_TOLERANCE)
        ha_error = 0.5 * (columns["ha_flux_p84"] - columns["ha_flux_p16"])
        low_snr = columns["ha_flux_p50"] < LOW_HA_SNR * ha_error
        flags[~ok] |= QualityFlag.FIT_FAILED
        flags[ok & at_bound] |= QualityFlag.N2_AT_BOUND
        flags[ok & low_snr] |= QualityFlag.LOW_HA_SNR
        flags[ok & (chi2_dof > POOR_FIT_CHI2_DOF)] |= QualityFlag.POOR_FIT
    return flags


def sample_columns(generated: dict, flags: np.ndarray) -> dict[str, np.ndarray]:
    """Columns from `SuperResolver.generate` outputs (numpy): per-sample (B, K) quantities and
    "ok", "reconstruction_chi2", "line_pixels" and (models that report it) "amplitudes_ignored" (B,).

    Percentiles are predictive (`spectral.intervals`) over the samples whose fit succeeded.
    `reconstruction_chi2` is the reduced chi2 of the low-res data against the posterior mean
    re-observed; LINE_NOT_COVERED marks rows where no observing pixel overlaps Hα + [NII]:
    their estimates are the prior's; AMPLITUDE_IGNORED rows whose flux or image level was
    outside the model's training range (not used by the prior).
    """
    valid = np.asarray(generated["ok"]) > 0
    out = {}
    for q in QUANTITIES:
        levels = predictive_percentiles(generated[q], list(PERCENTILES.values()), valid)
        out.update({f"{q}_{name}": np.asarray(keras.ops.convert_to_numpy(value), np.float64)
                    for name, value in zip(PERCENTILES, levels, strict=True)})
    out["reconstruction_chi2"] = np.asarray(generated["reconstruction_chi2"], np.float64)
    flags = quality_flags(out, flags, valid.mean(axis=1) >= MIN_OK_FRACTION, out["reconstruction_chi2"])
    flags[np.asarray(generated["line_pixels"]) == 0] |= QualityFlag.LINE_NOT_COVERED
    if "amplitudes_ignored" in generated:
        flags[np.asarray(generated["amplitudes_ignored"]) > 0] |= QualityFlag.AMPLITUDE_IGNORED
    out["flags"] = flags
    return out


def gaussian_columns(estimate: dict, quantities=QUANTITIES) -> dict[str, np.ndarray]:
    """`<q>_<p>` columns of Gaussian estimates: value `<q>` plus percentile offsets of `<q>_err`."""
    out = {}
    for q in quantities:
        value, error = np.asarray(estimate[q], np.float64), np.asarray(estimate[q + "_err"], np.float64)
        # p50 is the value itself, also where the error is infinite (0 x inf would make it NaN).
        out.update({f"{q}_{name}": value + offset * error if offset else value
                    for name, offset in _GAUSS_OFFSETS.items()})
    return out


def fit_columns(fit: dict, flags: np.ndarray) -> dict[str, np.ndarray]:
    """Columns from a line fit (`measure.fit_halpha_nii` outputs): value + Gaussian error offsets.

    `fit_chi2_dof` is the fit's reduced chi2 (NaN where the fit failed).
    """
    out = gaussian_columns(fit)
    out["fit_chi2_dof"] = np.asarray(fit["chi2_dof"], np.float64)
    ok = np.asarray(fit["ok"], bool)
    out["flags"] = quality_flags(out, flags, ok, np.where(ok, out["fit_chi2_dof"], 0.0))
    n2_free = np.asarray(fit["n2_unclipped"], np.float64)
    with np.errstate(invalid="ignore"):
        inside = (n2_free > N2_RANGE[0]) & (n2_free < N2_RANGE[1])
    out["flags"][ok & ~inside] |= QualityFlag.N2_AT_BOUND
    return out
