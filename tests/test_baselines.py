"""Baselines: direct low-res fit, Faisst et al. 2018 prior, R~3600 ceiling."""

import numpy as np

from specsr_keras.measure.baselines import (
    ceiling_fit,
    deblend_halpha_with_prior,
    direct_lowres_fit,
    faisst_prior_n2,
)
from specsr_keras.measure.linefit import fit_halpha_nii
from tests.synthetic_lines import NII_RATIO, euclid_edges, line_spectrum, lsf_sigma_for_r

REST_EDGES = np.arange(6460.0, 6781.0, 1.0)
REST_LSF = lsf_sigma_for_r(0.5 * (REST_EDGES[1:] + REST_EDGES[:-1]), 3600.0)


def test_direct_lowres_fit_is_the_shared_fitter():
    edges = euclid_edges()
    lsf = lsf_sigma_for_r(0.5 * (edges[1:] + edges[:-1]), 450.0)
    flux = line_spectrum(edges, 1.2, 100.0, -0.4, 90.0, 450.0)[None, :]
    flux = flux + np.random.default_rng(0).normal(0.0, 0.1, flux.shape)
    ivar = np.full_like(flux, 100.0)
    direct = direct_lowres_fit(edges, flux, ivar, lsf, [1.2])
    shared = fit_halpha_nii(edges, flux, ivar, lsf, [1.2])
    assert direct.keys() == shared.keys()
    np.testing.assert_array_equal(direct["n2"], shared["n2"])


def test_faisst_prior_matches_the_published_relation_and_scatter():
    prior = faisst_prior_n2(np.array([9.0, 10.0, 11.0]), np.full(3, 1.6))
    np.testing.assert_allclose(prior["n2"], [-1.20, -0.73, -0.25], atol=0.02)
    np.testing.assert_allclose(prior["n2_err"], 0.21)


def test_deblending_a_blend_with_the_true_n2_returns_halpha():
    n2 = np.array([-1.0, -0.5, -0.2])
    blend = 100.0 * (1 + 10**n2 * (1 + 1 / NII_RATIO))
    out = deblend_halpha_with_prior(blend, np.full(3, 5.0), n2, np.zeros(3))
    np.testing.assert_allclose(out["ha_flux"], 100.0)
    np.testing.assert_allclose(out["nii_6585_flux"], 100.0 * 10**n2)
    np.testing.assert_allclose(out["ha_flux_err"], 5.0 / (blend / 100.0))


def test_deblending_error_propagates_the_n2_scatter():
    rng = np.random.default_rng(1)
    n2_draws = -0.5 + 0.2 * rng.standard_normal(200_000)
    blend = 100.0 * (1 + 10**-0.5 * (1 + 1 / NII_RATIO))
    scatter = np.std(deblend_halpha_with_prior(blend, 0.0, n2_draws, 0.0)["ha_flux"])
    predicted = deblend_halpha_with_prior(blend, 0.0, -0.5, 0.2)["ha_flux_err"]
    np.testing.assert_allclose(predicted, scatter, rtol=0.1)


def _hires_truth(z, n2):
    return np.array([
        line_spectrum(REST_EDGES * (1 + zi), zi, 100.0, ni, 80.0, 3600.0, continuum=0.2)
        for zi, ni in zip(z, n2, strict=True)
    ])


def test_ceiling_fit_is_seeded_and_calibrated_over_300_realisations():
    z = np.full(300, 1.5)
    truth = _hires_truth(z, np.full(300, -0.8))
    ivar = np.full_like(truth, 4.0)
    first = ceiling_fit(truth, ivar, z, REST_EDGES, REST_LSF, seed=3)
    again = ceiling_fit(truth[:5], ivar[:5], z[:5], REST_EDGES, REST_LSF, seed=3)
    other = ceiling_fit(truth[:5], ivar[:5], z[:5], REST_EDGES, REST_LSF, seed=4)
    np.testing.assert_array_equal(first["n2"][:5], again["n2"])
    assert not np.allclose(first["n2"][:5], other["n2"])
    pull = (first["n2_unclipped"] - -0.8) / first["n2_err"]
    assert first["ok"].all()
    assert 0.8 < np.std(pull) < 1.25
    assert abs(np.median(first["n2"] - -0.8)) < 0.02


def test_ceiling_fit_leaves_zero_ivar_pixels_masked():
    z = np.array([1.2])
    truth = _hires_truth(z, [-0.5])
    ivar = np.full_like(truth, 25.0)
    ivar[:, :60] = 0.0
    truth[:, :60] = np.nan  # not observed
    fit = ceiling_fit(truth, ivar, z, REST_EDGES, REST_LSF, seed=0)
    assert fit["ok"].all()
    np.testing.assert_allclose(fit["ha_flux"], 100.0, rtol=0.05)


def test_gaussian_columns_keep_the_value_where_the_error_is_infinite():
    from specsr_keras.measure.columns import gaussian_columns

    columns = gaussian_columns({"n2": np.array([-0.5, -0.3]), "n2_err": np.array([0.1, np.inf])}, ("n2",))
    np.testing.assert_allclose(columns["n2_p50"], [-0.5, -0.3])
    np.testing.assert_allclose(columns["n2_p16"], [-0.5 - 0.0994458, -np.inf])
    assert columns["n2_p97_5"][1] == np.inf
