"""The science report: specsr vs honest baselines on held-out simulated sets.

`evaluate(model, data_dirs, out_dir)` runs the model and the baselines (direct low-res
fit, Faisst et al. 2018 prior, R=3600 ceiling; evaluation/heldout.py) over each held-out
shard directory, computes binned accuracy and calibration (evaluation/metrics.py) and
the optional cross-modal metrics (evaluation/crossmodal.py), draws the figures
(evaluation/plots.py) and writes report.md, report.html and metrics.json
(evaluation/report.py) into out_dir.
"""

from __future__ import annotations

from pathlib import Path

import specsr_keras
from specsr_keras.evaluation.crossmodal import CrossModalInputs, anomaly_inputs, crossmodal_metrics
from specsr_keras.evaluation.heldout import HeldOutSet, run_held_out_set
from specsr_keras.evaluation.metrics import HEADLINE_MIN_SNR, set_metrics
from specsr_keras.evaluation.report import write_report
from specsr_keras.reporting import Reporter

__all__ = ["CrossModalInputs", "HEADLINE_INSTRUMENT", "HeldOutSet", "evaluate", "flat_metrics"]

# The flat metrics describe this instrument's set (the first set if none is Euclid-like).
HEADLINE_INSTRUMENT = "euclid_nisp_red"


def evaluate(model: str, data_dirs, out_dir, *, max_examples: int | None = None,
             samples: int = 16, seed: int = 0, batch_size: int = 256,
             crossmodal: CrossModalInputs | None = None,
             reporter: Reporter | None = None) -> dict:
    """Evaluate `model` ("baseline" or an exported model) on held-out shard directories.

    data_dirs: one directory or a list (each one instrument); max_examples: first N
    objects of each; samples/seed: posterior samples per object and base seed;
    crossmodal: optional embeddings / generated redshifts / anomaly scores aligned with
    the headline (Euclid-like) set's first rows. Writes out_dir/report.md, report.html,
    metrics.json and figures/; returns the metrics dict (as in metrics.json).
    """
    reporter = reporter or Reporter()
    dirs = [data_dirs] if isinstance(data_dirs, str | Path) else list(data_dirs)
    if not dirs:
        raise ValueError("no held-out data directories given")
    sets = [run_held_out_set(directory, model, set_index=k, max_examples=max_examples,
                             samples=samples, seed=seed, batch_size=batch_size,
                             reporter=reporter)
            for k, directory in enumerate(dirs)]
    headline = next((s for s in sets if s.instrument == HEADLINE_INSTRUMENT), sets[0])
    crossmodal = crossmodal or CrossModalInputs()
    model_scores = headline.estimates["specsr"].get("anomaly_score")
    bins = {s.instrument: set_metrics(s.truth, s.estimates) for s in sets}
    extra = crossmodal_metrics(crossmodal, headline.truth, model_scores)
    metrics = {
        **flat_metrics(bins[headline.instrument]["snr_ge_10"], extra),
        "model": {"argument": model, "id": headline.provenance["model_id"],
                  "version": headline.provenance["model_version"]},
        "data": [s.provenance for s in sets],
        "headline_set": headline.instrument,
        "evaluation": {"samples": samples, "seed": seed, "max_examples": max_examples,
                       "headline_min_ha_snr": HEADLINE_MIN_SNR,
                       "specsr_version": specsr_keras.__version__},
        "bins": bins,
        "crossmodal": extra,
    }
    anomaly = anomaly_inputs(crossmodal, headline.truth, model_scores)
    write_report(metrics, sets, Path(out_dir), anomaly=anomaly, reporter=reporter)
    return metrics


def embeddings_from_run(run_dir, data_dir, max_examples: int | None = None) -> CrossModalInputs:
    """Image and low-res spectrum embeddings of a held-out set's first rows, by a training run.

    The rows are those `evaluate` uses for that set (shard order, first `max_examples`).
    """
    from specsr_keras.data.shards import load_shards, read_manifest
    from specsr_keras.embeddings import embed_images, embed_spectra

    batch = load_shards(data_dir, fields=["image", "lowres_flux", "lowres_ivar", "lowres_mask"],
                        max_examples=max_examples)
    instrument = read_manifest(data_dir)["instrument"]
    return CrossModalInputs(
        image_embeddings=embed_images(batch["image"], run_dir),
        spectrum_embeddings=embed_spectra(batch["lowres_flux"], batch["lowres_ivar"],
                                          batch["lowres_mask"], instrument, run_dir),
    )


def flat_metrics(headline: dict, extra: dict) -> dict:
    """The flat metrics.json keys from the headline S/N >= 10 summary and cross-modal metrics."""
    n2, z = headline["n2"], headline["z"]

    def get(table, method, key):
        return table.get(method, {}).get(key)

    knn = extra["knn_r2"] or {}
    return {
        "nii_ha_bias_dex": get(n2, "specsr", "bias"),
        "nii_ha_nmad_dex": get(n2, "specsr", "nmad"),
        "nii_ha_slope": get(n2, "specsr", "slope"),
        "lowres_fit_nii_ha_nmad_dex": get(n2, "lowres_fit", "nmad"),
        "faisst_nii_ha_nmad_dex": get(n2, "faisst", "nmad"),
        "ceiling_nii_ha_nmad_dex": get(n2, "ceiling", "nmad"),
        "ha_flux_frac_nmad": get(headline["ha_flux"], "specsr", "nmad"),
        "z_bias_specsr": get(z, "specsr", "bias"),
        "z_bias_lowres": get(z, "centroid", "bias"),
        "z_bias_lowres_fit": get(z, "lowres_fit", "bias"),
        "coverage_68": get(headline["coverage"]["n2"], "specsr", "68"),
        "coverage_95": get(headline["coverage"]["n2"], "specsr", "95"),
        "retrieval_top1": (extra["retrieval"] or {}).get("image_to_spectrum", {}).get("top1"),
        "image_z_r2": knn.get("image"),
        "spectrum_z_r2": knn.get("spectrum"),
        "gen_z_nmad": (extra["generation"] or {}).get("z_nmad"),
        "anomaly_auroc": (extra["anomaly"] or {}).get("auroc"),
    }

