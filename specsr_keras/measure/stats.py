"""Small statistics shared by the anomaly parts: combining false-positive rates."""

from __future__ import annotations

import numpy as np

__all__ = ["bonferroni"]


def bonferroni(p_values) -> np.ndarray:
    """min(1, m × the smallest p) per column of (m, N) false-positive rates: a bound on the
    rate of flagging a normal object by any of the m parts. m is the number of parts for
    every column (a part an object lacks, NaN, still counts); NaN where all are NaN."""
    p_values = np.asarray(p_values, np.float64)
    finite = np.isfinite(p_values)
    smallest = np.min(np.where(finite, p_values, np.inf), axis=0)
    return np.where(finite.any(axis=0), np.minimum(1.0, p_values.shape[0] * smallest), np.nan)
