"""evaluation.metrics on hand-made arrays with known answers."""

import numpy as np
import pytest

from specsr_keras.evaluation.metrics import (
    bin_masks,
    calibration_curve,
    calibration_slope,
    coverage,
    error_of,
    nmad,
    robust_slope,
    set_metrics,
    summarize,
)


def gaussian_columns(quantity, truth, sigma, rng, scale=1.0):
    """p16/p50/p84 of an estimator with Gaussian errors sigma, claiming sigma * scale."""
    p50 = truth + rng.normal(0.0, sigma, truth.shape)
    return {f"{quantity}_p16": p50 - scale * sigma, f"{quantity}_p50": p50,
            f"{quantity}_p84": p50 + scale * sigma}


def test_nmad_of_a_gaussian_is_its_sigma_and_ignores_nan():
    x = np.random.default_rng(0).normal(3.0, 0.3, 20000)
    x[:100] = np.nan
    assert nmad(x) == pytest.approx(0.3, rel=0.03)
    assert np.isnan(nmad([np.nan]))


def test_slope_of_a_shrunk_estimator_is_one_half_despite_outliers():
    rng = np.random.default_rng(1)
    truth = rng.uniform(-1.5, 0.0, 3000)
    estimate = -0.6 + 0.5 * (truth + 0.6) + rng.normal(0.0, 0.05, truth.size)
    estimate[:150] = 0.5  # 5 % catastrophic outliers
    assert robust_slope(truth, estimate) == pytest.approx(0.5, abs=0.03)
    assert robust_slope(truth, truth + 0.1) == pytest.approx(1.0)


def test_a_posterior_mean_shrinks_but_its_calibration_slope_is_one():
    rng = np.random.default_rng(5)
    truth = rng.normal(-0.6, 0.3, 20000)  # prior N(-0.6, 0.3); data = truth + N(0, 0.15)
    data = truth + rng.normal(0.0, 0.15, truth.size)
    posterior_mean = -0.6 + 0.8 * (data + 0.6)  # shrinkage 0.3² / (0.3² + 0.15²)
    assert robust_slope(truth, posterior_mean) == pytest.approx(0.8, abs=0.03)
    assert calibration_slope(truth, posterior_mean) == pytest.approx(1.0, abs=0.04)
    assert calibration_slope(truth, data) == pytest.approx(0.8, abs=0.03)  # the raw data over-spread


def test_calibrated_gaussians_cover_68_and_95_percent():
    rng = np.random.default_rng(2)
    truth = rng.uniform(-1.5, 0.0, 20000)
    cov = coverage(truth, gaussian_columns("n2", truth, 0.2, rng), "n2")
    assert cov["n"] == truth.size
    assert cov["68"] == pytest.approx(0.683, abs=0.015)
    assert cov["95"] == pytest.approx(0.954, abs=0.01)
    overconfident = coverage(truth, gaussian_columns("n2", truth, 0.2, rng, scale=0.5), "n2")
    assert overconfident["68"] == pytest.approx(0.383, abs=0.015)


def test_coverage_uses_given_95_percent_bounds():
    truth = np.zeros(4)
    columns = {"z_p16": -np.ones(4), "z_p50": np.zeros(4), "z_p84": np.ones(4),
               "z_p2_5": np.array([-1, -1, 1, 1.0]), "z_p97_5": np.full(4, 2.0)}
    assert coverage(truth, columns, "z")["95"] == pytest.approx(0.5)


def test_calibration_curve_of_calibrated_gaussians_is_the_diagonal():
    rng = np.random.default_rng(3)
    truth = rng.normal(0.0, 1.0, 20000)
    curve = calibration_curve(truth, gaussian_columns("z", truth, 0.1, rng), "z")
    np.testing.assert_allclose(curve["empirical"], curve["nominal"], atol=0.015)


def test_errors_are_dex_fractional_and_per_one_plus_z():
    np.testing.assert_allclose(error_of("n2", [-0.3], [-0.5]), [0.2])
    np.testing.assert_allclose(error_of("ha_flux", [11.0], [10.0]), [0.1])
    np.testing.assert_allclose(error_of("z", [1.0011], [1.0]), [0.00055])


def test_bins_are_half_open():
    masks = bin_masks([3.0, 4.99, 5.0, 25.0, 2.0], (("a", 3, 5), ("b", 5, np.inf)))
    assert masks["a"].tolist() == [True, True, False, False, False]
    assert masks["b"].tolist() == [False, False, True, True, False]


def test_summarize_and_set_metrics_recover_a_known_bias():
    rng = np.random.default_rng(4)
    n = 4000
    truth = {"z": rng.uniform(1, 1.5, n), "n2": rng.uniform(-1.5, 0, n),
             "ha_flux": rng.uniform(5, 50, n), "nii_6585_flux": rng.uniform(1, 10, n),
             "ha_snr": rng.uniform(3, 40, n), "log_mstar": rng.uniform(9, 11, n)}
    biased = gaussian_columns("n2", truth["n2"] + 0.1, 0.05, rng)
    biased["reconstruction_chi2"] = np.where(truth["ha_snr"] >= 20, 3.0, 1.0)  # follows the prior when bright
    exact = {f"{q}_{p}": truth[q] for q in ("n2", "ha_flux", "z") for p in ("p16", "p50", "p84")}
    estimates = {"specsr": biased, "ceiling": exact}
    stats = summarize(truth, estimates, truth["ha_snr"] >= 10)
    assert stats["n"] == int((truth["ha_snr"] >= 10).sum())
    assert stats["n2"]["specsr"]["bias"] == pytest.approx(0.1, abs=0.005)
    assert stats["n2"]["specsr"]["nmad"] == pytest.approx(0.05, rel=0.1)
    assert stats["ha_flux"]["ceiling"]["nmad"] == 0.0
    assert "lowres_fit" not in stats["n2"]
    assert "reconstruction_chi2_median" not in summarize(truth, {"ceiling": exact}, truth["ha_snr"] >= 10)
    binned = set_metrics(truth, estimates)
    assert set(binned["snr"]) == {"3-5", "5-10", "10-20", ">20"}
    assert sum(b["n"] for b in binned["mass"].values()) == n
    # a 2σ bias leaves P(|N(2, 1)| < 1) = 0.157 of truths inside the 68 % interval
    assert binned["snr"][">20"]["coverage"]["n2"]["specsr"]["68"] == pytest.approx(0.157, abs=0.03)
    assert binned["snr"][">20"]["reconstruction_chi2_median"] == 3.0
    assert binned["snr"]["3-5"]["reconstruction_chi2_median"] == 1.0
