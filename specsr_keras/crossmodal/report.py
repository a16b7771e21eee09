"""`write_anomalies`: the files of `specsr anomalies` (tables and pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.crossmodal.anomalies import anomaly_table
from specsr_keras.crossmodal.store import read_embeddings

__all__ = ["write_anomalies"]

GALLERY_MAX = 25


def write_anomalies(index_path, out_dir, *, spectra_index=None, results=None, top: int = 100,
                    k: int = 10) -> dict:
    """anomalies.fits (all), anomalies_top.csv (top), score_histogram.png, gallery.png.

    results: a `specsr infer` results table whose `anomaly_fpr` joins by object_id.
    """
    from specsr_keras.crossmodal.plots import mosaic, object_views, score_histogram

    index = read_embeddings(index_path)
    other = read_embeddings(spectra_index) if spectra_index else None
    ids = np.concatenate([index.ids, other.ids if other is not None else []]).astype(str)
    table = anomaly_table(index, other, k=k, line_fpr=results and line_fpr_of(results, ids))
    table.meta.update(SOFTWARE=f"specsr {specsr_keras.__version__}",
                      INDEX=str(index_path)[-60:], OTHER=str(spectra_index or "")[-60:],
                      RESULTS=str(results or "")[-60:])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "anomalies.fits", out / "anomalies_top.csv", out / "score_histogram.png",
             out / "gallery.png"]
    table.write(files[0], overwrite=True)
    top_table = table[:top]
    top_table.write(files[1], format="ascii.csv", overwrite=True)
    threshold = float(top_table["anomaly_fpr"][-1]) if len(top_table) < len(table) else None
    score_histogram(table["anomaly_fpr"], files[2], threshold=threshold)
    shown = top_table[:GALLERY_MAX]
    source = index if len(index.ids) else other
    lookup = {value: i for i, value in enumerate(source.ids)}
    positions = [lookup.get(oid, -1) for oid in shown["object_id"]]
    views = object_views(source, [p for p in positions if p >= 0])
    views_by_id = dict(zip([oid for oid, p in zip(shown["object_id"], positions, strict=True)
                            if p >= 0], views, strict=True))
    mosaic([views_by_id.get(oid) for oid in shown["object_id"]],
           [f"#{r} {oid} FPR={p:.2g}" for r, oid, p in zip(shown["rank"], shown["object_id"],
                                                           np.asarray(shown["anomaly_fpr"]), strict=True)],
           files[3], title="most anomalous objects")
    return {"table": table, "n": len(table), "files": [str(f) for f in files],
            "components": table.meta["COMPS"]}


def line_fpr_of(results, object_ids) -> dict:
    """{object_id: anomaly_fpr} of a `specsr infer` results table (FITS, one row per object);
    SpecsrInputError if a column is missing, an id repeats or no id is among object_ids."""
    from astropy.table import Table

    from specsr_keras.data.records import SpecsrInputError

    table = Table.read(results)
    missing = [c for c in ("object_id", "anomaly_fpr") if c not in table.colnames]
    if missing:
        raise SpecsrInputError(results, f"lacks column(s) {', '.join(missing)}: give the results.fits "
                                        "of `specsr infer` for --results")
    ids = np.asarray(table["object_id"]).astype(str)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise SpecsrInputError(results, f"object_id {unique[counts > 1][0]!r} appears {counts.max()} times")
    if not np.isin(ids, np.asarray(object_ids, str)).any():
        raise SpecsrInputError(results, "no object_id matches the embedding files' ids")
    return dict(zip(ids, np.asarray(np.ma.filled(table["anomaly_fpr"], np.nan), np.float64), strict=True))
