"""End-of-run validation: retrieval top-1 and super-resolved N2 error vs the low-res fit.

Retrieval: image <-> low-res spectrum top-1 in batches of 256 of the validation set.
N2 = log10([NII]6585/Hα): on the first `val_examples` validation galaxies, the error
(NMAD and median) of the super-resolved estimate (median over `val_samples` DDIM samples,
each fitted by the one line fitter) next to the direct fit of the low-res spectrum, per
Hα S/N bin (no NMAD below MIN_BIN_COUNT galaxies). A short CPU run is not expected to beat the fit (docs/science.md).
"""

from __future__ import annotations

import keras
import numpy as np

from specsr_keras.evaluation.crossmodal import pooled_retrieval
from specsr_keras.evaluation.metrics import SNR_BINS, nmad
from specsr_keras.inference.predictors import BaselinePredictor
from specsr_keras.inference.superres_predictor import SuperResolutionPredictor
from specsr_keras.instruments import instrument_with_id
from specsr_keras.models.preprocessor import OPTIONAL_RAW
from specsr_keras.reporting import Reporter
from specsr_keras.training.batches import stage_arrays

RETRIEVAL_BATCH = 256
MIN_BIN_COUNT = 5


def _embed(fn, arrays: list[np.ndarray], batch: int = 256) -> np.ndarray:
    n = len(arrays[0])
    parts = [keras.ops.convert_to_numpy(fn(*(a[i : i + batch] for a in arrays))) for i in range(0, n, batch)]
    return np.concatenate(parts)


def shared_space_embeddings(aligner, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(image, low-res spectrum) embeddings (N, D) of the model inputs' galaxies with images."""
    arrays = stage_arrays(inputs, ("image", "lowres", "lowres_weight", "instrument", "log_scale",
                                   "log_image_amplitude"))
    if not len(arrays["image"]):
        return np.zeros((0, aligner.embedding_dim)), np.zeros((0, aligner.embedding_dim))
    images = _embed(aligner.embed_image, [arrays["image"], arrays["log_image_amplitude"]])
    spectra = _embed(aligner.embed_spectrum,
                     [arrays[k] for k in ("lowres", "lowres_weight", "instrument", "log_scale")])
    return images, spectra


def retrieval_top1(aligner, inputs: dict) -> float:
    """Mean image->spectrum top-1 retrieval over consecutive pools of 256 galaxies with images
    (`evaluation.crossmodal.pooled_retrieval`; a smaller set is one pool)."""
    return pooled_retrieval(*shared_space_embeddings(aligner, inputs), RETRIEVAL_BATCH)["top1"]


def n2_errors(superres, truth: dict, config, reporter: Reporter) -> dict:
    """Per Hα S/N bin: N2 NMAD/bias of super-resolution and of the direct low-res fit."""
    if "lowres_flux" not in truth:
        return {"note": "validation mixes instrument grids: N2 check skipped"}
    if config.val_examples <= 0:
        return {"note": "val_examples = 0: N2 check skipped"}
    n = min(config.val_examples, len(truth["n2"]))
    instrument = instrument_with_id(truth["instrument_id"][0]).name
    keys = ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior", "instrument_id") + OPTIONAL_RAW
    batch = {k: truth[k][:n] for k in keys if k in truth}
    sampler = superres.sampler.replace(steps=config.val_ddim_steps, samples=config.val_samples)
    reporter.info(f"validation: super-resolving {n} spectra ({sampler.describe()})")
    sr = SuperResolutionPredictor(superres, instrument, "validation", sampler)
    estimates = {
        "specsr": sr.predict(batch, seed=config.seed)["n2_p50"],
        "lowres_fit": BaselinePredictor(instrument).predict(batch)["n2_p50"],
    }
    true_n2, snr = truth["n2"][:n], truth["ha_snr"][:n]
    bins = {}
    for label, lo, hi in SNR_BINS:
        rows = (snr >= lo) & (snr < hi)
        entry = {"count": int(rows.sum())}
        measured = entry["count"] >= MIN_BIN_COUNT
        for method, values in estimates.items():
            err = values[rows] - true_n2[rows]
            entry[f"{method}_nmad_dex"] = nmad(err) if measured else None
            entry[f"{method}_bias_dex"] = float(np.nanmedian(err)) if measured else None
        bins[label] = entry
    return bins


def validate_run(models, val_inputs: dict, val_truth: dict, config, reporter: Reporter | None = None) -> dict:
    """Validation metrics of a trained run (see module docstring)."""
    reporter = reporter or Reporter()
    result = {"retrieval_top1": retrieval_top1(models.contrastive, val_inputs),
              "retrieval_chance": RETRIEVAL_BATCH ** -1}
    result["n2_by_snr"] = n2_errors(models.superres, val_truth, config, reporter)
    parts = [f"retrieval top-1 {result['retrieval_top1']:.3f}"]
    for label, entry in result["n2_by_snr"].items():
        if isinstance(entry, dict) and entry.get("specsr_nmad_dex") is not None:
            parts.append(f"N2 NMAD S/N {label}: specsr {entry['specsr_nmad_dex']:.3f} vs fit "
                         f"{entry['lowres_fit_nmad_dex']:.3f} (n={entry['count']})")
    result["headline"] = "; ".join(parts)
    return result
