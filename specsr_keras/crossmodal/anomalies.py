"""Anomaly scores in the shared space: cross-modal disagreement + low density.

Components per object (each standardised on the whole sample, assumed mostly normal, by
its median and MAD: z = (x - median) / (1.4826 MAD)):

- `disagreement` = 1 - cos(image embedding, spectrum embedding) of the same object, when
  both an image and a spectrum index are given (matched by object id);
- `density_<modality>` = mean cosine distance to the k nearest other objects in that
  modality's embedding set (high = a sparse region of the shared space).

`score` = mean of the available standardised components (objects in only one index get
the components they have); `percentile` = share of the sample scoring at most as high,
the calibration on the (mostly normal) sample itself. The diffusion reconstruction term
of the design is not part of this score (see `specsr infer`'s reconstruction_chi2 and
broad_line_* columns).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from specsr_keras.crossmodal.neighbours import knn_mean_distance
from specsr_keras.crossmodal.store import EmbeddingSet

__all__ = ["MAD_TO_SIGMA", "anomaly_table", "robust_standardise"]

MAD_TO_SIGMA = 1.4826
# Floor on the MAD-based sigma (cosine units) so a degenerate sample does not divide by 0.
MIN_SIGMA = 1e-6


def robust_standardise(values) -> np.ndarray:
    """(x - median) / (1.4826 MAD) over the finite values; NaN stays NaN."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.full(values.shape, np.nan)
    median = np.median(finite)
    sigma = max(MAD_TO_SIGMA * np.median(np.abs(finite - median)), MIN_SIGMA)
    return (values - median) / sigma


def _names(index: EmbeddingSet, other: EmbeddingSet | None) -> tuple[str, str]:
    a, b = index.modality or "index", (other.modality if other is not None else "") or "other"
    return (a, b) if a != b else ("index", "other")


def anomaly_table(index: EmbeddingSet, other: EmbeddingSet | None = None, *,
                  k: int = 10) -> Table:
    """All objects of `index` (then those only in `other`), most anomalous first.

    Columns: object_id, score, percentile, rank (1 = most anomalous), the raw
    components and their standardised `z_` versions (see module doc).
    """
    name_a, name_b = _names(index, other)
    ids = list(index.ids)
    if other is not None:
        seen = set(ids)
        ids += [i for i in other.ids if i not in seen]
    ids = np.array(ids, dtype=str)
    n = len(ids)
    table = Table({"object_id": ids})
    components = {}
    for name, emb in ((name_a, index), (name_b, other)):
        if emb is None:
            continue
        values = np.full(n, np.nan)
        where = _positions(ids, emb.ids)
        values[where >= 0] = knn_mean_distance(emb.embedding, k)[where[where >= 0]]
        components[f"density_{name}"] = values
    if other is not None:
        pa, pb = _positions(ids, index.ids), _positions(ids, other.ids)
        both = (pa >= 0) & (pb >= 0)
        values = np.full(n, np.nan)
        values[both] = 1.0 - np.sum(index.embedding[pa[both]] * other.embedding[pb[both]], axis=1)
        components["disagreement"] = values
    standardised = {}
    for name, values in components.items():
        table[name] = values
        standardised[f"z_{name}"] = robust_standardise(values)
        table[f"z_{name}"] = standardised[f"z_{name}"]
    stacked = np.vstack(list(standardised.values()))
    with np.errstate(all="ignore"):
        score = np.where(np.isfinite(stacked).any(axis=0),
                         np.nanmean(np.where(np.isfinite(stacked), stacked, np.nan), axis=0),
                         np.nan)
    table["score"] = score
    finite = np.isfinite(score)
    ordered = np.sort(score[finite])
    table["percentile"] = np.where(finite, np.searchsorted(ordered, score, side="right")
                                   / max(finite.sum(), 1), np.nan)
    order = np.argsort(np.where(finite, -score, np.inf), kind="stable")
    table = table[order]
    table["rank"] = np.arange(1, n + 1)
    table.meta.update(K_NN=k, COMBINE="mean of median/MAD-standardised components",
                      COMPS=",".join(components))
    first = ["object_id", "score", "percentile", "rank"]
    return table[first + [c for c in table.colnames if c not in first]]


def _positions(ids: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Position of each id in `reference` (-1 if absent)."""
    lookup = {value: i for i, value in enumerate(reference)}
    return np.array([lookup.get(value, -1) for value in ids], np.int64)
