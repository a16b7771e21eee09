"""Cross-modal metrics on plain arrays: retrieval, kNN regression, anomalies, generation.

Anchors (docs/science.md): AstroCLIP (Parker et al. 2024) reaches zero-shot kNN redshift
R² 0.79 from images and 0.99 from spectra. Row i of every array is one galaxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from specsr_keras.evaluation.metrics import SNR_BINS, bin_masks, nmad
from specsr_keras.measure.photometry import aperture_asinh_magnitudes
from specsr_keras.measure.stats import fpr_score

__all__ = ["CrossModalInputs", "anomaly_auroc", "anomaly_by_class", "anomaly_by_snr", "anomaly_inputs",
           "crossmodal_metrics", "generation_metrics", "knn_r2", "linear_r2", "mismatched_pairs",
           "pooled_retrieval", "probe_baselines", "probe_metrics", "retrieval_top_k", "roc_curve"]

# False-positive rate at which the anomaly precision is quoted.
ANOMALY_FPR = 0.01
# A broad-line AGN "without narrow lines": broad Hα at least this many times the narrow.
WEAK_NARROW_LINES_RATIO = 5.0


@dataclass
class CrossModalInputs:
    """Optional arrays aligned with the rows of the headline held-out set.

    image_embeddings, spectrum_embeddings: (N, D) shared-space embeddings;
    generated: columns of spectra generated from images alone, without a spectrum
    (`ImageSpectrumPredictor`: at least "n2_p50", "n2_p16", "n2_p84", "n2_p2_5", "n2_p97_5" (N,) [dex]);
    generated_inputs: what the generator was given besides the image, for the report;
    anomaly_scores: (N,) (higher = more anomalous; default: the model's score column);
    anomaly_labels: (N,) bool (default: every simulated anomaly class, `anomaly_classes`);
    probe_baselines: {name: (N, F) simple features} probed next to the embeddings (`probe_baselines`).
    """

    image_embeddings: np.ndarray | None = None
    spectrum_embeddings: np.ndarray | None = None
    generated: dict | None = None
    generated_inputs: str = "its amplitude, z prior, catalogue mass"
    anomaly_scores: np.ndarray | None = None
    anomaly_labels: np.ndarray | None = None
    probe_baselines: dict | None = None


def _unit_rows(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_top_k(emb_a, emb_b, ks=(1, 5), batch: int = 1000) -> dict[str, float]:
    """Fraction of rows of emb_a whose partner (same row of emb_b) is among the k most
    cosine-similar rows of emb_b, for each k: {"top1": ..., "top5": ...}.

    Queries run in batches of `batch` rows, so memory is batch x N. Ties count against
    the match (rank = number of candidates at least as similar, other than the partner).
    """
    a, b = _unit_rows(emb_a), _unit_rows(emb_b)
    if a.shape != b.shape:
        raise ValueError(f"embeddings must have equal shapes, got {a.shape} and {b.shape}")
    ranks = np.empty(len(a), np.int64)
    for start in range(0, len(a), batch):
        sims = a[start:start + batch] @ b.T
        rows = np.arange(sims.shape[0])
        own = sims[rows, start + rows]
        ranks[start:start + batch] = (sims >= own[:, None]).sum(axis=1) - 1
    return {f"top{k}": float(np.mean(ranks < k)) for k in ks}


def _standard_columns(x):
    x = np.asarray(x, np.float64)
    return (x - np.nanmean(x, axis=0)) / np.maximum(np.nanstd(x, axis=0), 1e-12)


def knn_r2(embeddings, target, k: int = 16, folds: int = 5, seed: int = 0, metric: str = "cosine") -> float:
    """Out-of-fold R² of a k-nearest-neighbour mean regression of target.

    metric: "cosine" (embeddings) or "euclidean" on columns standardised to zero mean and
    unit variance (a few physical features of different units). Rows are shuffled (seed)
    into `folds` folds; each fold is predicted from the others. R² = 1 - Σ(y - ŷ)² / Σ(y - ȳ)²
    over all rows with a finite target.
    """
    from sklearn.neighbors import NearestNeighbors

    rows = {"cosine": _unit_rows, "euclidean": _standard_columns}[metric]
    x, y = rows(embeddings), np.asarray(target, np.float64)
    good = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
    x, y = x[good], y[good]
    if len(y) < folds * 2:
        return float("nan")
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    predicted = np.empty_like(y)
    for f in range(folds):
        train, test = fold != f, fold == f
        neighbours = NearestNeighbors(n_neighbors=min(k, int(train.sum()))).fit(x[train])
        _, index = neighbours.kneighbors(x[test])
        predicted[test] = y[train][index].mean(axis=1)
    return float(1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))


def linear_r2(embeddings, target, folds: int = 5, seed: int = 0, ridge: float = 1e-3) -> float:
    """Out-of-fold R² of a ridge-regularised linear probe (with intercept) of target."""
    x, y = np.asarray(embeddings, np.float64), np.asarray(target, np.float64)
    good = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
    x, y = np.c_[x[good], np.ones(good.sum())], y[good]
    if len(y) < folds * 2:
        return float("nan")
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    predicted = np.empty_like(y)
    for f in range(folds):
        train = fold != f
        gram = x[train].T @ x[train] + ridge * len(y) * np.eye(x.shape[1])
        predicted[~train] = x[~train] @ np.linalg.solve(gram, x[train].T @ y[train])
    return float(1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2))


# What the shared space is probed for (truth columns), and retrieval pool sizes.
PROBE_QUANTITIES = ("z", "log_mstar", "log_sfr", "n2", "is_agn")
RETRIEVAL_POOLS = (256, 1000)


def probe_metrics(embeddings: dict[str, np.ndarray], truth: dict, metric: str = "cosine") -> dict:
    """{modality: {quantity: {"knn": R², "linear": R²}}} of out-of-fold probes (is_agn: the
    R² of the 0/1 flag, i.e. a Brier skill score); quantities absent from truth are skipped.
    metric: the kNN's (`knn_r2`; "euclidean" for the baselines' physical features)."""
    out = {}
    for modality, values in embeddings.items():
        out[modality] = {}
        for quantity in PROBE_QUANTITIES:
            if quantity not in truth or not np.isfinite(np.asarray(truth[quantity], float)).any():
                continue
            target = np.asarray(truth[quantity], np.float64)
            out[modality][quantity] = {"knn": knn_r2(values, target, metric=metric),
                                       "linear": linear_r2(values, target)}
    return out


# Names of the simple baselines the probes of each modality are shown next to.
PHOTOMETRY_BASELINE = "image baseline: aperture photometry"
DIRECT_FIT_BASELINE = "spectrum baseline: direct low-res fit"


def probe_baselines(images=None, lowres_fit: dict | None = None) -> dict[str, np.ndarray]:
    """Simple per-galaxy features that the shared space's probes are compared with (N, F):
    the cutouts' aperture photometry (`measure.photometry`, one asinh magnitude per band) and
    the direct low-res fit's z, Hα + [NII] 6585 flux (asinh, in units of its median) and N2
    (lowres_fit: its "z_p50", "ha_flux_p50", "nii_6585_flux_p50", "n2_p50" columns). A fit
    that failed (NaN) gets the column's median, so every galaxy is scored as the embeddings are."""
    out = {}
    if images is not None:
        out[PHOTOMETRY_BASELINE] = aperture_asinh_magnitudes(images)
    if lowres_fit is not None:
        blend = np.asarray(lowres_fit["ha_flux_p50"], np.float64) + np.asarray(lowres_fit["nii_6585_flux_p50"],
                                                                               np.float64)
        scale = np.nanmedian(np.abs(blend)) if np.isfinite(blend).any() else 1.0
        features = np.c_[np.asarray(lowres_fit["z_p50"], np.float64), np.arcsinh(blend / max(scale, 1e-30)),
                         np.asarray(lowres_fit["n2_p50"], np.float64)]
        with np.errstate(all="ignore"):
            median = np.nan_to_num(np.nanmedian(np.where(np.isfinite(features), features, np.nan), axis=0))
        out[DIRECT_FIT_BASELINE] = np.where(np.isfinite(features), features, median)
    return out


def pooled_retrieval(emb_a, emb_b, pool: int) -> dict[str, float]:
    """retrieval_top_k averaged over consecutive pools of `pool` objects (chance 1/pool);
    a set smaller than one pool is one pool ("pool_size" says how large, "pools" how many)."""
    n = len(emb_a)
    pool = min(pool, n)
    parts = [retrieval_top_k(emb_a[i:i + pool], emb_b[i:i + pool]) for i in range(0, n - pool + 1, pool)] if n else []
    if not parts:
        return {"top1": float("nan"), "top5": float("nan"), "pools": 0, "pool_size": 0}
    return {"top1": float(np.mean([p["top1"] for p in parts])), "top5": float(np.mean([p["top5"] for p in parts])),
            "pools": len(parts), "pool_size": pool}


def _finite_scores(scores, labels):
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    good = np.isfinite(scores)
    return scores[good], labels[good]


def roc_curve(scores, labels) -> dict[str, np.ndarray]:
    """ROC points (one per distinct score, from the strictest threshold) of finite scores:
    {"fpr", "tpr", "tp", "fp"}, starting at (0, 0)."""
    scores, labels = _finite_scores(scores, labels)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.r_[0, np.cumsum(labels)[last_of_value]]
    fp = np.r_[0, np.cumsum(~labels)[last_of_value]]
    n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    return {"fpr": fp / n_neg, "tpr": tp / n_pos, "tp": tp, "fp": fp}


def anomaly_auroc(scores, labels, fpr: float = ANOMALY_FPR) -> dict:
    """AUROC (Mann-Whitney, ties half), precision and recall at `fpr` of finite scores.

    Returns {"n", "n_anomalous", "auroc", "precision_at_1pct_fpr", "recall_at_1pct_fpr"};
    NaN without both classes.
    """
    scores, labels = _finite_scores(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    out = {"n": int(scores.size), "n_anomalous": n_pos, "auroc": float("nan"),
           "precision_at_1pct_fpr": float("nan"), "recall_at_1pct_fpr": float("nan")}
    if n_pos == 0 or n_neg == 0:
        return out
    ranks = rankdata(scores)
    out["auroc"] = float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    roc = roc_curve(scores, labels)
    point = np.flatnonzero(roc["fpr"] <= fpr)[-1]
    flagged = roc["tp"][point] + roc["fp"][point]
    out["precision_at_1pct_fpr"] = float(roc["tp"][point] / flagged) if flagged else float("nan")
    out["recall_at_1pct_fpr"] = float(roc["tpr"][point])
    return out


def _flag(truth: dict, name: str) -> np.ndarray:
    """A truth flag as bool (N,); a column the set lacks (NaN-filled, e.g. simulated before
    it existed) is False."""
    return np.nan_to_num(np.asarray(truth[name], np.float64)).astype(bool)


def anomaly_classes(truth: dict) -> dict[str, np.ndarray]:
    """Simulated anomaly classes (bool (N,) each), every one scored against the normal
    galaxies (no AGN, broad component, contamination or artefact). Broad-line AGN are split
    by broad / narrow Hα at WEAK_NARROW_LINES_RATIO; each other class excludes the ones before."""
    agn, broad, contaminated, artefact = (_flag(truth, k) for k in ("is_agn", "has_broad", "is_contaminated",
                                                                     "has_artefact"))
    weak_narrow = agn & (np.asarray(truth["broad_ha_flux"], np.float64)
                         >= WEAK_NARROW_LINES_RATIO * np.asarray(truth["ha_flux"], np.float64))
    return {"broad-line AGN with narrow lines": agn & ~weak_narrow,
            "broad-line AGN without narrow lines": weak_narrow,
            "outflow (broad wing)": broad & ~agn,
            "contamination": contaminated & ~broad & ~agn,
            "artefact": artefact & ~contaminated & ~broad & ~agn,
            "normal": ~(agn | broad | contaminated | artefact)}


def anomaly_by_snr(score, truth: dict) -> dict:
    """{class: {S/N bin: anomaly_auroc of that class vs the normal galaxies of the same
    bin}} for one score (N,), binned by the truth ha_snr (SNR_BINS; since simulator 2.2.0 the
    S/N of all Hα, narrow + broad): how detection grows with S/N."""
    classes = anomaly_classes(truth)
    normal = classes.pop("normal")
    score = np.asarray(score, np.float64)
    bins = bin_masks(truth["ha_snr"], SNR_BINS)
    return {label: {name: anomaly_auroc(score[(members | normal) & in_bin], members[(members | normal) & in_bin])
                    for name, in_bin in bins.items()}
            for label, members in classes.items()}


def mismatched_pairs(image, spectrum) -> dict:
    """A mismatched image/spectrum pair (each image with the spectrum half the set away) vs
    the true pairs, scored by their disagreement 1 - cos(image, spectrum embedding):
    anomaly_auroc with the mismatched pairs as the anomalies."""
    a, b = _unit_rows(image), _unit_rows(spectrum)
    swapped = np.roll(b, len(b) // 2, axis=0)
    disagreement = 1.0 - np.concatenate([np.sum(a * b, axis=1), np.sum(a * swapped, axis=1)])
    labels = np.r_[np.zeros(len(a), bool), np.ones(len(a), bool)]
    return anomaly_auroc(disagreement, labels)


def anomaly_by_class(scores: dict[str, np.ndarray], truth: dict, p_values: dict | None = None) -> dict:
    """{score name: {class: anomaly_auroc of that class vs the normal galaxies}} for every
    score and every false-positive-rate column of p_values ({name: (N,)}, e.g. anomaly_fpr,
    ranked by -log10 p), plus "calibration": {p name: the share of normal galaxies and of
    each class at p < ANOMALY_FPR} (the first should be <= ANOMALY_FPR)."""
    classes = anomaly_classes(truth)
    normal = classes.pop("normal")
    p_values = {name: np.asarray(p, np.float64) for name, p in (p_values or {}).items()}
    ranked = {**{name: fpr_score(p) for name, p in p_values.items()}, **scores}
    out = {name: {label: anomaly_auroc(np.asarray(score)[members | normal], members[members | normal])
                  for label, members in classes.items()}
           for name, score in ranked.items()}
    if p_values:
        out["calibration"] = {
            name: {label: float((p[m] < ANOMALY_FPR).mean()) if m.any() else float("nan")
                   for label, m in {"normal": normal, **classes}.items()}
            for name, p in p_values.items()}
    return out


def generation_metrics(generated: dict, true_n2, references: dict | None = None) -> dict:
    """How well spectra generated from images alone give N2 = log10([NII]6585/Hα) [dex].

    generated: "n2_p50" and the 68 / 95 % interval columns (N,); true_n2 (N,); references:
    {name: (N,) N2 estimates} (e.g. the Faisst relation at the catalogue mass). Returns {"n":
    rows with a true N2, "n_estimated": of those, rows with a generated N2, "n2_nmad", "n2_bias"
    (on those), "coverage_68", "coverage_95" (on all n: no estimate is not covered),
    "references": {name: NMAD on the n_estimated rows (NaN where a reference has no value
    there), ..., "constant": the median true N2 for every galaxy (no skill)}}.
    """
    true_n2 = np.asarray(true_n2, np.float64)
    if len(generated["n2_p50"]) != len(true_n2):
        raise ValueError(f"generated columns have {len(generated['n2_p50'])} rows, the set {len(true_n2)}")
    known = np.isfinite(true_n2)
    estimate = np.asarray(generated["n2_p50"], np.float64)
    scored = known & np.isfinite(estimate)
    truth = true_n2[scored]

    def covered(low, high):
        inside = (np.asarray(generated[low]) <= true_n2) & (true_n2 <= np.asarray(generated[high]))
        return float(np.mean(inside[known])) if known.any() else np.nan

    def scatter(values):
        error = np.asarray(values, np.float64)[scored] - truth
        return nmad(error) if error.size and np.isfinite(error).all() else np.nan

    others = {name: scatter(values) for name, values in (references or {}).items()}
    others["constant"] = scatter(np.full(len(true_n2), np.median(truth))) if truth.size else np.nan
    return {"n": int(known.sum()), "n_estimated": int(scored.sum()), "n2_nmad": scatter(estimate),
            "n2_bias": float(np.median(estimate[scored] - truth)) if truth.size else np.nan,
            "coverage_68": covered("n2_p16", "n2_p84"), "coverage_95": covered("n2_p2_5", "n2_p97_5"),
            "references": others}


def anomaly_inputs(inputs: CrossModalInputs, truth: dict, model_scores):
    """(scores, labels, source) for the anomaly metrics, or None without scores.

    Scores: inputs.anomaly_scores, else the model's `model_scores`; labels:
    inputs.anomaly_labels, else every simulated anomaly class (`anomaly_classes`).
    """
    scores = inputs.anomaly_scores if inputs.anomaly_scores is not None else model_scores
    if scores is None:
        return None
    labels = inputs.anomaly_labels
    if labels is None:
        labels = ~anomaly_classes(truth)["normal"]
    source = "given" if inputs.anomaly_scores is not None else "model score column"
    return scores, labels, source


def crossmodal_metrics(inputs: CrossModalInputs, truth: dict, model_scores,
                       generation_references: dict | None = None) -> dict:
    """Every cross-modal metric whose inputs exist (None for the others).

    truth: the headline set's truth columns (z, n2, is_agn, has_broad, is_contaminated);
    model_scores: the model's score column (see anomaly_inputs); generation_references:
    N2 estimates that the generated spectra are compared with (`generation_metrics`).
    """
    image, spectrum = inputs.image_embeddings, inputs.spectrum_embeddings
    out = {"retrieval": None, "knn_r2": None, "probes": None, "probe_baselines": None, "generation": None,
           "anomaly": None, "mismatched_pairs": None}
    if image is not None and spectrum is not None:
        out["mismatched_pairs"] = mismatched_pairs(image, spectrum)
        out["retrieval"] = {f"{direction} (pools of {pool})": pooled_retrieval(a, b, pool)
                            for pool in RETRIEVAL_POOLS
                            for direction, a, b in (("image_to_spectrum", image, spectrum),
                                                    ("spectrum_to_image", spectrum, image))}
    given = {name: emb for name, emb in (("image", image), ("spectrum", spectrum)) if emb is not None}
    if given:
        out["probes"] = probe_metrics(given, truth)
        out["knn_r2"] = {name: per.get("z", {}).get("knn", float("nan")) for name, per in out["probes"].items()}
        if inputs.probe_baselines:
            out["probe_baselines"] = probe_metrics(inputs.probe_baselines, truth, metric="euclidean")
    if inputs.generated is not None:
        out["generation"] = {**generation_metrics(inputs.generated, truth["n2"], generation_references),
                             "inputs": inputs.generated_inputs}
    anomaly = anomaly_inputs(inputs, truth, model_scores)
    if anomaly is not None:
        scores, labels, source = anomaly
        out["anomaly"] = {**anomaly_auroc(scores, labels), "source": source}
    return out
