"""spectral/intervals.py: predictive percentiles from K posterior samples (keras.ops, both
backends): coverage of a new draw at any K, valid-sample counting per row."""

import keras
import numpy as np
import pytest

from specsr_keras.spectral.intervals import predictive_factor
from specsr_keras.spectral.intervals import predictive_percentiles as percentiles_ops

pytestmark = pytest.mark.keras


def predictive_percentiles(values, levels, valid=None):
    return [keras.ops.convert_to_numpy(v) for v in percentiles_ops(values, levels, valid)]


@pytest.mark.parametrize("k", [4, 8, 16])
def test_a_new_draw_falls_in_the_predictive_intervals_at_their_nominal_rate(k):
    rng = np.random.default_rng(k)
    samples = rng.normal(2.0, 0.3, size=(40_000, k))
    truth = rng.normal(2.0, 0.3, size=40_000)  # a calibrated model: truth = one more draw
    lo95, lo68, median, hi68, hi95 = predictive_percentiles(samples, [2.5, 16, 50, 84, 97.5])
    assert np.mean((truth >= lo68) & (truth <= hi68)) == pytest.approx(0.68, abs=0.01)
    assert np.mean((truth >= lo95) & (truth <= hi95)) == pytest.approx(0.95, abs=0.005)
    np.testing.assert_allclose(median, np.median(samples, axis=1), rtol=1e-6)
    # plain sample percentiles of so few draws hold the new draw far less often
    lo, hi = np.percentile(samples, [16, 84], axis=1)
    assert np.mean((truth >= lo) & (truth <= hi)) < 0.64


def test_the_correction_vanishes_for_many_samples():
    assert predictive_factor(84.0, 8) == pytest.approx(1.135, abs=0.002)  # t_7(0.84) * sqrt(9/8)
    assert predictive_factor(84.0, 100_000) == pytest.approx(0.9945, abs=0.001)  # the normal quantile


def test_missing_samples_count_per_row_and_single_samples_get_no_interval():
    values = np.array([[1.0, 2.0, 3.0, np.nan], [np.nan] * 4, [5.0, np.nan, np.inf, np.nan]])
    lo, median, hi = predictive_percentiles(values, [16, 50, 84])
    expected = 2.0 + predictive_factor(84.0, 3) * 1.0  # mean 2, s = 1 over the three finite samples
    assert hi[0] == pytest.approx(expected, rel=1e-6) and lo[0] == pytest.approx(4.0 - expected, rel=1e-6)
    np.testing.assert_array_equal(median, [2.0, np.nan, 5.0])
    assert np.isnan(lo[1:]).all() and np.isnan(hi[1:]).all()


def test_samples_marked_invalid_are_left_out():
    values = np.array([[1.0, 2.0, 3.0, 100.0]])
    _, median, _ = predictive_percentiles(values, [16, 50, 84], valid=np.array([[True, True, True, False]]))
    assert median[0] == pytest.approx(2.0)
