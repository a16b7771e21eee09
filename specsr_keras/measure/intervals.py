"""Predictive percentiles of a quantity from K posterior samples.

The K diffusion samples of a galaxy are draws from the model's posterior; if the model is
calibrated, the truth is one more draw. Percentiles of just K draws are too narrow for
that: the interval between the empirical 16th and 84th percentiles of K = 8 draws holds a
new draw 53 % of the time, not 68 % (44 % at K = 4, 61 % at K = 16; the 2.5-97.5 %
interval: 58 / 75 / 85 %), so a perfectly calibrated model would look over-confident.

specsr reports the percentiles of the predictive distribution of a new draw instead:
the p-th percentile is mean + t_{K-1}(p) * s * sqrt(1 + 1/K), with s the sample standard
deviation (ddof=1) and t the Student-t quantile; the interval [p, 100 - p] then holds a
new draw with probability 1 - 2p exactly when the posterior is Gaussian, at any K
(tests/test_intervals.py). The 50th percentile stays the sample median (robust point
estimate). Rows with fewer than two finite samples get NaN intervals.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


def predictive_factor(percentile: float, k) -> np.ndarray:
    """t_{K-1}(percentile / 100) * sqrt(1 + 1/K): offset of the percentile from the mean in units of s.

    k: number of samples (int or array); NaN where k < 2.
    """
    k = np.asarray(k, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = stats.t.ppf(percentile / 100.0, np.where(k >= 2, k - 1, np.nan)) * np.sqrt(1.0 + 1.0 / k)
    return np.where(k >= 2, factor, np.nan)


def predictive_percentiles(values: np.ndarray, levels, axis: int = 1) -> list[np.ndarray]:
    """Percentiles [%] of the predictive distribution from samples along `axis` (NaN = no sample).

    Returns one array per level, `values` reduced along `axis`; level 50 is the median.
    """
    values = np.where(np.isfinite(values), values, np.nan)
    k = np.isfinite(values).sum(axis=axis)
    with warnings.catch_warnings():  # all-NaN rows and rows of one sample give NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=axis)
        mean = np.nanmean(values, axis=axis)
        spread = np.nanstd(values, axis=axis, ddof=1)
    return [median if level == 50 else mean + predictive_factor(level, k) * spread for level in levels]
