"""Predictive percentiles of a quantity from K posterior samples (keras.ops; numpy callers
convert with `keras.ops.convert_to_numpy`).

The K diffusion samples of a galaxy are draws from the model's posterior; if the model is
calibrated, the truth is one more draw. Percentiles of just K draws are too narrow for
that: the interval between the empirical 16th and 84th percentiles of K = 8 draws holds a
new draw 53 % of the time, not 68 % (44 % at K = 4, 61 % at K = 16; the 2.5-97.5 %
interval: 58 / 75 / 85 %), so a perfectly calibrated model would look over-confident.

specsr reports the percentiles of the predictive distribution of a new draw instead: the
p-th percentile is mean + t_{k-1}(p) s sqrt(1 + 1/k), with s the sample standard deviation
(ddof = 1) of the k valid samples and t the Student-t quantile; the interval [p, 100 - p]
then holds a new draw with probability 1 - 2p exactly when the posterior is Gaussian, at
any k (tests/test_intervals.py). The 50th percentile is the median of the valid samples
(a robust point estimate). Rows with fewer than two valid samples get NaN intervals (and
no valid sample: a NaN median).
"""

from __future__ import annotations

import numpy as np
from keras import ops
from scipy import stats


def predictive_factor(percentile: float, k) -> np.ndarray:
    """t_{k-1}(percentile / 100) sqrt(1 + 1/k): the percentile's offset from the mean in units
    of s (numpy; k an int or array; NaN where k < 2)."""
    k = np.asarray(k, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = stats.t.ppf(percentile / 100.0, np.where(k >= 2, k - 1, np.nan)) * np.sqrt(1.0 + 1.0 / k)
    return np.where(k >= 2, factor, np.nan)


def predictive_percentiles(values, levels, valid=None):
    """Predictive percentiles [%] over the last axis of values (..., K); valid (..., K) bool
    marks usable samples (default: the finite ones). Returns one tensor (...) per level."""
    values = ops.cast(values, "float32")
    k = values.shape[-1]
    valid = ops.isfinite(values) if valid is None else ops.logical_and(ops.cast(valid, "bool"), ops.isfinite(values))
    weight = ops.cast(valid, "float32")
    count = ops.sum(weight, axis=-1)
    safe = ops.where(valid, values, 0.0)
    mean = ops.sum(safe, axis=-1) / ops.maximum(count, 1.0)
    spread = ops.sqrt(ops.sum(weight * ops.square(safe - mean[..., None]), axis=-1) / ops.maximum(count - 1.0, 1.0))
    ordered = ops.sort(ops.where(valid, values, np.inf), axis=-1)
    index = ops.cast(count, "int32")
    lower = ops.take_along_axis(ordered, ops.expand_dims(ops.maximum((index - 1) // 2, 0), -1), axis=-1)[..., 0]
    upper = ops.take_along_axis(ordered, ops.expand_dims(ops.minimum(index // 2, k - 1), -1), axis=-1)[..., 0]
    median = ops.where(count > 0, 0.5 * (lower + upper), np.nan)
    out = []
    for level in levels:
        if level == 50:
            out.append(median)
            continue
        table = ops.convert_to_tensor(np.nan_to_num(predictive_factor(level, np.arange(k + 1)), nan=0.0)
                                      .astype(np.float32))
        factor = ops.take(table, index)
        out.append(ops.where(count >= 2, mean + factor * spread, np.nan))
    return out
