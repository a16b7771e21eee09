"""Hα + [NII] fitter: accuracy at three resolutions, calibrated errors, bounds, failures."""

import time

import numpy as np
import pytest

from specsr_keras.measure.linefit import N2_PRIOR_RANGE, fit_halpha_nii, fit_target_grid
from tests.synthetic_lines import (
    NII_RATIO,
    euclid_edges,
    g141_edges,
    line_spectrum,
    lsf_sigma_for_r,
)

C_KMS = 299792.458
REST_EDGES = np.arange(6460.0, 6781.0, 1.0)  # TARGET_GRID-like: 1 Å rest bins
REST_LSF = lsf_sigma_for_r(0.5 * (REST_EDGES[1:] + REST_EDGES[:-1]), 3600.0)


def _pixel_lsf(edges, resolving_power):
    return lsf_sigma_for_r(0.5 * (edges[1:] + edges[:-1]), resolving_power)


def _batch(edges, z, n2, resolving_power, ha_flux=100.0, sigma_v=80.0, **kw):
    return np.array([
        line_spectrum(edges, zi, ha_flux, ni, sigma_v, resolving_power, **kw)
        for zi, ni in zip(z, n2, strict=True)
    ])


def _target_batch(z, n2, z_grid=None, **kw):
    """Spectra of lines at z on the rest grid placed at z_grid (default z)."""
    z_grid = z if z_grid is None else z_grid
    return np.array([
        line_spectrum(REST_EDGES * (1 + zg), zi, 100.0, ni, 80.0, 3600.0, **kw)
        for zi, zg, ni in zip(z, z_grid, n2, strict=True)
    ])


def _euclid_noisy(n, n2, noise, seed, z=1.3, sigma_v=100.0):
    edges = euclid_edges()
    clean = line_spectrum(edges, z, 100.0, n2, sigma_v, 450.0, continuum=0.3)
    rng = np.random.default_rng(seed)
    flux = clean + rng.normal(0.0, noise, (n, clean.size))
    z_guess = z + rng.normal(0.0, 5e-4, n)
    fit = fit_halpha_nii(edges, flux, np.full_like(flux, noise**-2), _pixel_lsf(edges, 450.0),
                         z_guess)
    return fit


def test_noiseless_target_grid_r3600_recovers_flux_n2_z():
    z = np.array([0.8, 1.2, 1.6, 2.2])
    n2 = np.array([-1.3, -0.7, -0.3, 0.1])
    z_grid = z + 3e-4  # the grid is placed by a slightly wrong redshift
    flux = _target_batch(z, n2, z_grid, continuum=0.4, continuum_slope=-2e-4)
    fit = fit_target_grid(flux, np.full_like(flux, 25.0), z_grid, REST_EDGES, REST_LSF)
    assert fit["ok"].all()
    np.testing.assert_allclose(fit["ha_flux"], 100.0, rtol=0.01)
    np.testing.assert_allclose(fit["n2"], n2, atol=0.01)
    np.testing.assert_allclose(fit["z"], z, atol=1e-5)
    np.testing.assert_allclose(fit["sigma_v_kms"], 80.0, rtol=0.02)


def test_target_grid_line_flux_is_sum_flux_times_one_plus_z_rest_width():
    z = np.array([1.1, 1.9])
    flux = _target_batch(z, np.array([-0.5, -0.5]))
    fit = fit_target_grid(flux, np.ones_like(flux), z, REST_EDGES, REST_LSF)
    summed = flux.sum(axis=1) * (1 + z) * 1.0
    np.testing.assert_allclose(fit["ha_nii_flux"], summed, rtol=1e-3)


def test_noiseless_euclid_r450_recovers_flux_within_2pct_and_n2_within_003dex():
    edges = euclid_edges()
    z = np.array([0.9, 1.15, 1.4, 1.7])
    n2 = np.array([-1.2, -0.8, -0.45, -0.1])
    flux = _batch(edges, z, n2, 450.0, continuum=0.5, continuum_slope=1e-4)
    fit = fit_halpha_nii(edges, flux, np.full_like(flux, 100.0), _pixel_lsf(edges, 450.0),
                         z - 8e-4)
    assert fit["ok"].all()
    np.testing.assert_allclose(fit["ha_flux"], 100.0, rtol=0.02)
    np.testing.assert_allclose(fit["n2"], n2, atol=0.03)
    np.testing.assert_allclose(fit["z"], z, atol=1e-4)


def test_noiseless_g141_recovers_halpha_plus_nii_total_within_2pct():
    edges = g141_edges()
    z = np.array([0.7, 1.0, 1.3, 1.5])
    n2 = np.array([-1.0, -0.6, -0.3, -0.8])
    flux = _batch(edges, z, n2, 130.0, continuum=0.3)
    fit = fit_halpha_nii(edges, flux, np.full_like(flux, 100.0), _pixel_lsf(edges, 130.0),
                         z + 2e-3)
    total = 100.0 * (1 + 10**n2 * (1 + 1 / NII_RATIO))
    assert fit["ok"].all()
    np.testing.assert_allclose(fit["ha_nii_flux"], total, rtol=0.02)


def test_pixel_centres_give_the_same_fit_as_bin_edges():
    edges = euclid_edges()
    flux = _batch(edges, [1.3], [-0.5], 450.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    lsf = _pixel_lsf(edges, 450.0)
    by_edges = fit_halpha_nii(edges, flux, np.ones_like(flux), lsf, [1.3])
    by_centres = fit_halpha_nii(centres, flux, np.ones_like(flux), lsf, [1.3])
    np.testing.assert_allclose(by_centres["ha_flux"], by_edges["ha_flux"], rtol=1e-6)


def test_sii_doublet_recovered_at_r3600():
    z = np.array([1.4])
    flux = _target_batch(z, np.array([-0.5]), sii_flux=20.0)
    fit = fit_target_grid(flux, np.ones_like(flux), z, REST_EDGES, REST_LSF, include_sii=True)
    np.testing.assert_allclose(fit["sii_6718_flux"], 20.0, rtol=0.01)
    np.testing.assert_allclose(fit["sii_6733_flux"], 15.0, rtol=0.01)
    np.testing.assert_allclose(fit["ha_flux"], 100.0, rtol=0.01)


@pytest.mark.parametrize("quantity", ["ha_flux", "n2", "z"])
def test_pull_distribution_over_300_noisy_euclid_spectra_has_unit_std(quantity):
    n2_true = -0.5
    fit = _euclid_noisy(300, n2_true, noise=0.1, seed=11)
    truth = {"ha_flux": 100.0, "n2": n2_true, "z": 1.3}[quantity]
    value = fit["n2_unclipped"] if quantity == "n2" else fit[quantity]
    pull = (value - truth) / fit[quantity + "_err"]
    assert fit["ok"].all()
    assert 25 < np.median(fit["ha_snr"]) < 35
    assert 0.8 < np.std(pull) < 1.25
    assert abs(np.mean(pull)) < 0.2


def test_n2_is_unbiased_at_high_snr():
    for n2_true in (-1.2, -0.6, -0.2):
        fit = _euclid_noisy(100, n2_true, noise=0.02, seed=5)
        bias = np.mean(fit["n2"] - n2_true)
        assert abs(bias) < max(0.005, 3 * np.std(fit["n2"]) / 10), (n2_true, bias)


def test_fit_respects_bounds_and_clips_n2_to_the_prior():
    edges = euclid_edges()
    pure_halpha = _batch(edges, [1.2], [-9.0], 450.0, sigma_v=5.0)  # no [NII], narrow
    noise = np.random.default_rng(3).normal(0, 0.05, (20, pure_halpha.shape[1]))
    fit = fit_halpha_nii(edges, pure_halpha + noise, np.full_like(noise, 400.0),
                         _pixel_lsf(edges, 450.0), np.full(20, 1.2), max_dv_kms=1000.0)
    assert np.all((fit["sigma_v_kms"] >= 20.0) & (fit["sigma_v_kms"] <= 500.0))
    assert np.all(np.abs(fit["z"] - 1.2) * C_KMS / 2.2 <= 1000.0 + 1e-6)
    assert np.all(fit["nii_6585_flux"] >= 0) and np.all(fit["ha_flux"] >= 0)
    assert np.all((fit["n2"] >= N2_PRIOR_RANGE[0]) & (fit["n2"] <= N2_PRIOR_RANGE[1]))
    assert np.any(fit["n2"] == N2_PRIOR_RANGE[0])
    assert np.all(fit["n2_err"] <= N2_PRIOR_RANGE[1] - N2_PRIOR_RANGE[0])


def test_equal_sigma_bounds_fix_the_velocity_dispersion():
    edges = euclid_edges()
    flux = _batch(edges, [1.3], [-0.5], 450.0, sigma_v=100.0)
    fit = fit_halpha_nii(edges, flux, np.ones_like(flux), _pixel_lsf(edges, 450.0), [1.3],
                         sigma_v_bounds_kms=(100.0, 100.0))
    assert fit["sigma_v_kms"][0] == 100.0 and fit["sigma_v_kms_err"][0] == 0.0
    np.testing.assert_allclose(fit["ha_flux"], 100.0, rtol=1e-3)


def test_masked_nan_and_uncovered_rows_fail_with_reasons_without_touching_good_rows():
    edges = euclid_edges()
    lsf = _pixel_lsf(edges, 450.0)
    good = _batch(edges, [1.1, 1.5], [-0.6, -0.3], 450.0, continuum=0.2)
    flux = np.vstack([good[0], good[0], good[0], good[0], good[0], good[1]])
    ivar = np.full_like(flux, 50.0)
    z_guess = np.array([1.1, 1.1, 1.1, np.nan, 4.0, 1.5])
    ivar[1] = 0.0  # fully masked
    flux[2] = np.nan  # NaN row
    flux[5, :40] = np.nan  # a few NaN pixels far from the lines are just masked
    fit = fit_halpha_nii(edges, flux, ivar, lsf, z_guess)
    assert list(fit["reason"]) == ["", "all_masked", "all_masked", "bad_z_guess",
                                   "no_coverage", ""]
    assert list(fit["ok"]) == [True, False, False, False, False, True]
    assert np.isnan(fit["ha_flux"][1:5]).all()
    alone = fit_halpha_nii(edges, good, np.full_like(good, 50.0), lsf, [1.1, 1.5])
    np.testing.assert_allclose(fit["ha_flux"][[0, 5]], alone["ha_flux"], rtol=1e-8)
    np.testing.assert_allclose(fit["n2"][[0, 5]], alone["n2"], atol=1e-8)


@pytest.mark.slow
def test_throughput_of_1000_euclid_spectra():
    edges = euclid_edges()
    rng = np.random.default_rng(0)
    z = rng.uniform(0.9, 1.8, 1000)
    flux = _batch(edges, z, rng.uniform(-1.5, 0.0, 1000), 450.0, continuum=0.3, oversample=4)
    flux += rng.normal(0.0, 0.1, flux.shape)
    start = time.perf_counter()
    fit = fit_halpha_nii(edges, flux, np.full_like(flux, 100.0), _pixel_lsf(edges, 450.0),
                         z + rng.normal(0.0, 1e-3, 1000))
    rate = 1000 / (time.perf_counter() - start)
    print(f"fit_halpha_nii: {rate:.0f} Euclid spectra/s")
    assert fit["ok"].all()
    assert rate > 200
