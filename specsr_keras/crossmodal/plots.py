"""Pictures of embedded objects: cutout / spectrum mosaics and score histograms (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsr_keras.crossmodal.store import EmbeddingSet
from specsr_keras.measure.stats import fpr_score

__all__ = ["object_views", "mosaic", "score_histogram"]


def object_views(emb: EmbeddingSet, positions) -> list:
    """Per position: an image (H, W, bands), a spectrum (L,) or None, read from the catalog
    the embedding file was made from (None where it is gone or lacks the modality)."""
    from specsr_keras.inference.catalog import open_catalog

    views = [None] * len(positions)
    try:
        catalog = open_catalog(emb.attrs.get("catalog", ""), emb.modality or "spectrum")
    except Exception:  # noqa: BLE001 - pictures are optional: no catalog, no pictures
        return views
    for i, position in enumerate(positions):
        row = int(emb.rows[position])
        raw = catalog.read(row, row + 1)
        values = raw.image if emb.modality == "image" else raw.flux
        if values is not None and len(values):
            views[i] = np.asarray(values[0], np.float64)
    return views


def _show(ax, view):
    if view is None:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
    elif view.ndim == 3:  # cutout: three reddest bands as RGB, arcsinh stretch
        bands = view[..., -3:] if view.shape[-1] >= 3 else np.repeat(view[..., :1], 3, -1)
        bands = np.where(np.isfinite(bands), bands, 0.0)
        level = max(np.percentile(bands, 99.5), 1e-12)
        ax.imshow(np.clip(np.arcsinh(bands / (0.05 * level)) / np.arcsinh(20.0), 0, 1)[..., ::-1],
                  origin="lower")
    else:
        ax.plot(view, lw=0.6, color="k")
    ax.set_xticks([])
    ax.set_yticks([])


def mosaic(views: list, titles: list, path, *, columns: int = 5, title: str = "") -> Path:
    """Grid of object views with one title each; PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(views), 1)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, view, label in zip(axes.ravel(), views, titles, strict=False):
        ax.axis("on")
        _show(ax, view)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def score_histogram(fpr, path, *, threshold: float | None = None) -> Path:
    """Histogram of -log10 anomaly_fpr (the combined false-positive rate) with the top-N
    cut (an anomaly_fpr) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = fpr_score(fpr)
    scores = scores[np.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(scores, bins=min(60, max(10, len(scores) // 10)), color="0.5", log=True)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(fpr_score(threshold), color="C3", lw=1, label="top-N cut")
        ax.legend(fontsize=8)
    ax.set_xlabel("-log10 anomaly_fpr (false-positive rate)")
    ax.set_ylabel("objects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
