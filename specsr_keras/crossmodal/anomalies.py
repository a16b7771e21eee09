"""Anomaly scores in the shared space: cross-modal disagreement + low density.

Components per object (each standardised on the whole sample, assumed mostly normal, by
its median and MAD: z = (x - median) / (1.4826 MAD)):

- `disagreement` = 1 - cos(image embedding, spectrum embedding) of the same object, when
  both an image and a spectrum index are given (matched by object id);
- `density_<modality>` = mean cosine distance to the k nearest other objects in that
  modality's embedding set (high = a sparse region of the shared space).

`score` = mean of the available standardised components (objects in only one index get
the components they have); `percentile` = share of the sample scoring at most as high.

False-positive rates with named parts: each component's `p_<name>` is the share of the
sample at least as extreme (the calibration on the sample itself, assumed mostly normal),
and `p_lines` is the `anomaly_fpr` of `specsr infer`'s line-model tests (broad Hα and the
narrow-line χ², `measure/broadline.py`, calibrated analytically) when its results table is
given. `anomaly_fpr` = min(1, m × an object's smallest p-value) over the table's m parts
(Bonferroni; a part an object lacks still counts in m) bounds the share of normal objects
flagged at that value; the table is ranked by it (then by `score`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from specsr_keras.crossmodal.neighbours import knn_mean_distance
from specsr_keras.crossmodal.store import EmbeddingSet
from specsr_keras.measure.stats import MAD_TO_SIGMA, bonferroni

__all__ = ["anomaly_table", "robust_standardise", "upper_tail_share"]

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
                  k: int = 10, line_fpr: dict | None = None) -> Table:
    """All objects of `index` (then those only in `other`), most anomalous first.

    line_fpr: {object_id: anomaly_fpr of `specsr infer`} (objects not in it lack p_lines).
    Columns: object_id, anomaly_fpr, score, percentile, rank (1 = most anomalous), the raw
    components, their standardised `z_` versions and their `p_` false-positive rates (see
    module doc).
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
    p_values = {f"p_{name}": upper_tail_share(values) for name, values in components.items()}
    if line_fpr is not None:
        p_values["p_lines"] = np.array([line_fpr.get(i, np.nan) for i in ids], np.float64)
    for name, values in p_values.items():
        table[name] = values
    table["anomaly_fpr"] = bonferroni(np.vstack(list(p_values.values())))
    order = np.lexsort((np.where(finite, -score, np.inf), np.nan_to_num(table["anomaly_fpr"], nan=2.0)))
    table = table[order]
    table["rank"] = np.arange(1, n + 1)
    table.meta.update(K_NN=k, COMBINE="anomaly_fpr: Bonferroni over the parts' false-positive rates; "
                      "score: mean of median/MAD-standardised components",
                      COMPS=",".join([*components, *(["lines"] if line_fpr is not None else [])]))
    first = ["object_id", "anomaly_fpr", "score", "percentile", "rank"]
    return table[first + [c for c in table.colnames if c not in first]]


def upper_tail_share(values) -> np.ndarray:
    """Per value, the share of the finite values at least as large (NaN stays NaN): the
    empirical false-positive rate of flagging at that value in a mostly normal sample."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    ordered = np.sort(values[finite])
    share = (ordered.size - np.searchsorted(ordered, values, side="left")) / max(ordered.size, 1)
    return np.where(finite, share, np.nan)


def _positions(ids: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Position of each id in `reference` (-1 if absent)."""
    lookup = {value: i for i, value in enumerate(reference)}
    return np.array([lookup.get(value, -1) for value in ids], np.int64)
