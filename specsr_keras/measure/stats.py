"""Small statistics shared by the anomaly parts: combining false-positive rates."""

from __future__ import annotations

import numpy as np

from specsr_keras.spectral.noise import MAD_TO_SIGMA

__all__ = ["MAD_TO_SIGMA", "bonferroni", "fpr_score"]

# Smallest false-positive rate taken as it is (a p-value of 0 would give an infinite score).
_SMALLEST_FPR = 1e-300


def bonferroni(p_values) -> np.ndarray:
    """min(1, m × the smallest p) per column of (m, N) false-positive rates: a bound on the
    rate of flagging a normal object by any of the m parts. m is the number of parts for
    every column (a part an object lacks, NaN, still counts); NaN where all are NaN."""
    p_values = np.asarray(p_values, np.float64)
    finite = np.isfinite(p_values)
    smallest = np.min(np.where(finite, p_values, np.inf), axis=0)
    return np.where(finite.any(axis=0), np.minimum(1.0, p_values.shape[0] * smallest), np.nan)


def fpr_score(p_values) -> np.ndarray:
    """-log10 of false-positive rates (floored at 1e-300): an anomaly score, higher = rarer
    among normal objects, for ranking, ROC curves and histograms. NaN stays NaN."""
    return -np.log10(np.maximum(np.asarray(p_values, np.float64), _SMALLEST_FPR))
