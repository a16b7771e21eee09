"""The science report: specsr vs honest baselines on held-out simulated and real sets.

`evaluate(model, data_dirs, out_dir)` runs the model and the baselines (direct low-res
fit, Faisst et al. 2018 prior, R=3600 ceiling; evaluation/heldout.py) over each held-out
shard directory, computes binned accuracy and calibration (evaluation/metrics.py; on
real sets, without line truth, only the redshift errors against the catalogue redshift),
the optional cross-modal metrics (evaluation/crossmodal.py) and, for real sets, the
domain gap to a simulated set (evaluation/domain_gap.py), draws the figures
(evaluation/plots.py) and writes report.md, report.html and metrics.json
(evaluation/report.py) into out_dir.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.data.shards import read_manifest
from specsr_keras.evaluation.crossmodal import (
    CrossModalInputs,
    anomaly_by_class,
    anomaly_by_snr,
    anomaly_inputs,
    crossmodal_metrics,
    probe_baselines,
)
from specsr_keras.evaluation.domain_gap import DOMAIN_GAP_MAX_EXAMPLES, domain_gap
from specsr_keras.evaluation.domain_gap import STATISTICS as DOMAIN_GAP_STATISTICS
from specsr_keras.evaluation.heldout import HeldOutSet, run_held_out_set
from specsr_keras.evaluation.metrics import HEADLINE_MIN_SNR, set_metrics
from specsr_keras.evaluation.report import FIGURE_DIR, write_report
from specsr_keras.measure.stats import fpr_score
from specsr_keras.reporting import Reporter

__all__ = ["CrossModalInputs", "HEADLINE_INSTRUMENT", "HeldOutSet", "domain_gap_metrics", "domain_gap_reference",
           "evaluate", "flat_domain_gap", "flat_metrics"]

# The headline anomaly score: -log10 anomaly_fpr of the line-model tests where the predictor
# gives it, else the first of these columns scoring how badly it explains a spectrum.
ANOMALY_SCORE_COLUMNS = ("reconstruction_chi2", "fit_chi2_dof", "sample_spread")
# Every anomaly column measured per class (anomaly_by_class): the false-positive-rate
# columns of the line-model tests (measure/broadline.py), then the raw scores.
CLASS_P_COLUMNS = ("anomaly_fpr", "broad_line_p", "narrow_model_p")
CLASS_SCORE_COLUMNS = ("broad_line_dchi2", *ANOMALY_SCORE_COLUMNS)
# The flat metrics describe this instrument's set (the first set if none is Euclid-like).
HEADLINE_INSTRUMENT = "euclid_nisp_red"


def evaluate(model: str, data_dirs, out_dir, *, max_examples: int | None = None,
             samples: int | None = None, seed: int = 0, batch_size: int = 256, sampler: dict | None = None,
             crossmodal: CrossModalInputs | None = None, crossmodal_run=None, domain_gap_against=None,
             withhold=(), reporter: Reporter | None = None) -> dict:
    """Evaluate `model` ("baseline" or an exported model) on held-out shard directories.

    data_dirs: one directory or a list (each one instrument; simulated or real, see
    docs/real-data.md); max_examples: first N objects of each; samples/seed: posterior
    samples per object (None: the model's) and base seed; sampler: changes to a Keras
    model's `Sampler` settings (e.g. {"amortised": True}); crossmodal: optional embeddings / spectra
    generated from images / anomaly scores aligned with the headline (Euclid-like) set's first rows;
    crossmodal_run: a training run that computes them instead (`crossmodal_from_run` on the
    headline set);
    domain_gap_against: simulated shard directory that the real sets are compared with
    (evaluation/domain_gap.py; default: the first simulated set of data_dirs); withhold:
    catalogue inputs ("image", "mass") that neither specsr nor the baselines see
    (evaluation/heldout.py). Writes
    out_dir/report.md, report.html, metrics.json and figures/; returns the metrics dict
    (as in metrics.json).
    """
    reporter = reporter or Reporter()
    dirs = [data_dirs] if isinstance(data_dirs, str | Path) else list(data_dirs)
    if not dirs:
        raise ValueError("no held-out data directories given")
    if crossmodal_run is not None and "image" in withhold:
        raise ValueError("the cross-modal metrics need the images: give a run for them or withhold the "
                         "image, not both")
    reference = domain_gap_reference(dirs, domain_gap_against)
    sets = [run_held_out_set(directory, model, set_index=k, max_examples=max_examples,
                             samples=samples, seed=seed, batch_size=batch_size, sampler=sampler,
                             withhold=withhold, reporter=reporter)
            for k, directory in enumerate(dirs)]
    _make_names_unique(sets)
    # Prefer a set with line truth, then the headline instrument, then the given order.
    headline = min(sets, key=lambda s: (not s.line_truth, s.instrument != HEADLINE_INSTRUMENT))
    if crossmodal_run is not None:
        crossmodal = crossmodal_from_run(crossmodal_run, headline.directory, max_examples, seed=seed,
                                         with_mass="mass" not in withhold, reporter=reporter)
    crossmodal = _with_direct_fit_baseline(crossmodal or CrossModalInputs(), headline)
    # Anomaly labels (AGN, broad lines, contamination) are simulation truth.
    specsr = headline.estimates["specsr"]
    score = (fpr_score(specsr["anomaly_fpr"]) if "anomaly_fpr" in specsr
             else next((specsr[k] for k in ANOMALY_SCORE_COLUMNS if k in specsr), None))
    model_scores = score if headline.line_truth else None
    bins = {s.name: set_metrics(s.truth, s.estimates) for s in sets}
    references = ({"Faisst (catalogue M*)": headline.estimates["faisst"]["n2_p50"]}
                  if "faisst" in headline.estimates else None)
    extra = crossmodal_metrics(crossmodal, headline.truth, model_scores, references)
    if headline.line_truth:
        extra["anomaly_by_class"] = anomaly_by_class(
            {name: specsr[name] for name in CLASS_SCORE_COLUMNS if name in specsr}, headline.truth,
            {name: specsr[name] for name in CLASS_P_COLUMNS if name in specsr})
        if model_scores is not None:
            extra["anomaly_by_snr"] = anomaly_by_snr(model_scores, headline.truth)
    gaps = domain_gap_metrics(reference, [s for s in sets if s.provenance["kind"] == "real"],
                              Path(out_dir), max_examples, reporter)
    metrics = {
        **flat_metrics(bins[headline.name]["snr_ge_10"], extra),
        **flat_domain_gap(gaps),
        "model": {"argument": model, "id": headline.provenance["model_id"],
                  "version": headline.provenance["model_version"]},
        "data": [s.provenance for s in sets],
        "headline_set": headline.name,
        "evaluation": {"samples": headline.provenance["samples"], "seed": seed, "max_examples": max_examples,
                       "sampler": sampler, "withheld": headline.provenance["withheld"],
                       "headline_min_ha_snr": HEADLINE_MIN_SNR,
                       "specsr_version": specsr_keras.__version__},
        "bins": bins,
        "crossmodal": extra,
        "domain_gap": gaps,
    }
    anomaly = anomaly_inputs(crossmodal, headline.truth, model_scores)
    embeddings = {name: emb for name, emb in (("image", crossmodal.image_embeddings),
                                              ("spectrum", crossmodal.spectrum_embeddings)) if emb is not None}
    write_report(metrics, sets, Path(out_dir), anomaly=anomaly, embeddings=embeddings, truth=headline.truth,
                 reporter=reporter)
    for held_out in sets:  # per-object values, for analyses the report does not make
        held_out.write_estimates(Path(out_dir) / f"estimates_{held_out.name}.fits")
    return metrics


def _make_names_unique(sets) -> None:
    """Sets sharing a name (one instrument and kind) are named `<name>:<directory name>`, and
    one directory given twice gets _2, _3, ... as well."""
    counts: dict[str, int] = {}
    for held_out in sets:
        counts[held_out.name] = counts.get(held_out.name, 0) + 1
    seen: dict[str, int] = {}
    for held_out in sets:
        if counts[held_out.name] > 1:
            held_out.provenance["name"] = f"{held_out.name}:{Path(held_out.directory).name}"
        seen[held_out.name] = seen.get(held_out.name, 0) + 1
        if seen[held_out.name] > 1:
            held_out.provenance["name"] = f"{held_out.name}_{seen[held_out.name]}"


def domain_gap_reference(dirs, given=None) -> Path | None:
    """The simulated set the real sets of `dirs` are compared with, or None (no real set,
    or no simulated one). `given` must be simulated, and needs a real set in dirs."""
    kinds = {Path(d): read_manifest(d).get("kind") for d in dirs}
    has_real = "real" in kinds.values()
    if given is not None:
        if read_manifest(given).get("kind") == "real":
            raise ValueError(f"{given}: the domain-gap reference must be a simulated set, "
                             "this one is real")
        if not has_real:
            raise ValueError(f"domain-gap reference {given} given, but no evaluated set is real "
                             "(manifest kind \"real\", from `specsr build-dataset`)")
        return Path(given)
    simulated = [d for d, kind in kinds.items() if kind != "real"]
    return simulated[0] if has_real and simulated else None


def domain_gap_metrics(reference, real_sets, out_dir: Path, max_examples: int | None,
                       reporter: Reporter) -> dict | None:
    """metrics.json "domain_gap": None without real sets, else {"reference": directory or
    None, "sets": {real set name: {"directory", "figure" (relative to out_dir),
    "statistics": domain_gap(...)}}} (empty without a reference)."""
    if not real_sets:
        return None
    out = {"reference": None if reference is None else str(reference), "sets": {}}
    if reference is None:
        reporter.info("domain gap: no simulated reference set, not computed")
        return out
    for held_out in real_sets:
        figure = Path(FIGURE_DIR) / f"domain_gap_{held_out.name}.png"
        statistics = domain_gap(reference, held_out.directory, plot_path=out_dir / figure,
                                max_examples=max_examples or DOMAIN_GAP_MAX_EXAMPLES)
        out["sets"][held_out.name] = {"directory": held_out.directory,
                                      "figure": figure.as_posix(), "statistics": statistics}
    return out


def flat_domain_gap(gaps: dict | None) -> dict:
    """Flat keys domain_gap_<statistic>_ks and _median_shift (real - simulated median) of
    the first real set; None where not computed."""
    first = next(iter((gaps or {}).get("sets", {}).values()), None)
    return {f"domain_gap_{name}_{key}": first["statistics"][name][key] if first else None
            for name in DOMAIN_GAP_STATISTICS for key in ("ks", "median_shift")}


def _with_direct_fit_baseline(crossmodal: CrossModalInputs, headline: HeldOutSet) -> CrossModalInputs:
    """crossmodal with the direct low-res fit's features among its probe baselines, on the rows
    of its embeddings (the headline set's first rows), when it has embeddings to probe."""
    given = [e for e in (crossmodal.image_embeddings, crossmodal.spectrum_embeddings) if e is not None]
    if not given or "lowres_fit" not in headline.estimates:
        return crossmodal
    rows = len(given[0])
    fit = {name: np.asarray(values)[:rows] for name, values in headline.estimates["lowres_fit"].items()}
    return replace(crossmodal, probe_baselines={**(crossmodal.probe_baselines or {}),
                                                **probe_baselines(lowres_fit=fit)})


def crossmodal_from_run(run_dir, data_dir, max_examples: int | None = None, *, seed: int = 0,
                        batch_size: int = 256, with_mass: bool = True,
                        reporter: Reporter | None = None) -> CrossModalInputs:
    """Image and low-res spectrum embeddings of a held-out set's first rows, by a training run,
    and the N2 columns of spectra its super-resolver generates from each image alone (image,
    its amplitude, z prior and, with_mass, the catalogue mass; `ImageSpectrumPredictor`, the run's K).

    The rows are those `evaluate` uses for that set (shard order, first `max_examples`); the
    images' aperture photometry comes along as a probe baseline.
    """
    from specsr_keras.data.shards import load_shards, read_manifest
    from specsr_keras.embeddings import embed_images, embed_spectra
    from specsr_keras.inference.generator_predictor import ImageSpectrumPredictor

    manifest = read_manifest(data_dir)
    optional = [name for name in ("z_prior", "log_mstar_catalog") if name in manifest.get("field_info", {})]
    batch = load_shards(data_dir, fields=["image", "lowres_flux", "lowres_ivar", "lowres_mask", *optional],
                        max_examples=max_examples)
    rows = len(batch["image"])
    if not rows:
        raise ValueError(f"{data_dir}: no examples to embed")
    for name in ("z_prior", "log_mstar_catalog"):
        if name not in batch or (name == "log_mstar_catalog" and not with_mass):
            batch[name] = np.full(rows, np.nan)
    generator = ImageSpectrumPredictor.from_path(run_dir)
    pieces = []
    with (reporter or Reporter()).task("generate spectra from images", total=rows) as advance:
        for number, start in enumerate(range(0, rows, batch_size)):
            pieces.append(generator.predict({key: batch[key][start:start + batch_size]
                                             for key in ("image", "z_prior", "log_mstar_catalog")},
                                            seed=seed + number))
            advance(len(pieces[-1]["n2_p50"]))
    return CrossModalInputs(
        image_embeddings=embed_images(batch["image"], run_dir),
        spectrum_embeddings=embed_spectra(batch["lowres_flux"], batch["lowres_ivar"],
                                          batch["lowres_mask"], manifest["instrument"], run_dir),
        generated={name: np.concatenate([piece[name] for piece in pieces])
                   for name in pieces[0] if name.startswith("n2_")},
        generated_inputs="its amplitude, z prior" + (", catalogue mass" if with_mass else ""),
        probe_baselines=probe_baselines(images=batch["image"]),
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
        "nii_ha_calibration_slope": get(n2, "specsr", "calibration_slope"),
        "lowres_fit_nii_ha_nmad_dex": get(n2, "lowres_fit", "nmad"),
        "faisst_nii_ha_nmad_dex": get(n2, "faisst", "nmad"),
        "ceiling_nii_ha_nmad_dex": get(n2, "ceiling", "nmad"),
        "ha_flux_frac_nmad": get(headline["ha_flux"], "specsr", "nmad"),
        "z_bias_specsr": get(z, "specsr", "bias"),
        "z_bias_lowres": get(z, "centroid", "bias"),
        "z_bias_lowres_fit": get(z, "lowres_fit", "bias"),
        "coverage_68": get(headline["coverage"]["n2"], "specsr", "68"),
        "coverage_95": get(headline["coverage"]["n2"], "specsr", "95"),
        "retrieval_top1": (extra["retrieval"] or {}).get("image_to_spectrum (pools of 256)", {}).get("top1"),
        "image_z_r2": knn.get("image"),
        "spectrum_z_r2": knn.get("spectrum"),
        "gen_n2_nmad_dex": (extra["generation"] or {}).get("n2_nmad"),
        "anomaly_auroc": (extra["anomaly"] or {}).get("auroc"),
    }

