"""report.md, report.html (PNGs embedded as base64) and metrics.json from one block list.

A report is a list of blocks — ("heading", level, text), ("text", text),
("table", header, rows), ("figure", path, caption) — rendered once to Markdown (figures
linked from figures/) and once to self-contained HTML.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from specsr_keras.evaluation import plots
from specsr_keras.evaluation.crossmodal import PROBE_QUANTITIES
from specsr_keras.evaluation.metrics import ERROR_METHODS, HEADLINE_MIN_SNR
from specsr_keras.evaluation.plots import MARTENS_DZ, MARTENS_N2, METHOD_LABELS
from specsr_keras.reporting import Reporter

__all__ = ["crossmodal_blocks", "format_number", "headline_table", "json_ready", "render_html", "render_markdown",
           "report_blocks", "write_report"]

FIGURE_DIR = "figures"
# Redshift errors are shown in units of 1e-4 (the Martens et al. 2019 shifts are 1-7e-4).
Z_UNIT = 1e-4


def json_ready(value):
    """Nested dicts/lists/arrays with NaN and inf turned into None, numpy into Python."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_number(value, fmt: str = ".3f", scale: float = 1.0) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format(value / scale, fmt)


def write_report(metrics: dict, sets, out_dir: Path, *, anomaly=None, embeddings: dict | None = None,
                 truth: dict | None = None, reporter: Reporter | None = None) -> dict[str, Path]:
    """Draw the figures and write report.md, report.html and metrics.json into out_dir.

    sets: the HeldOutSet of each directory; anomaly: (scores, labels, source) for the
    ROC figure, or None; embeddings: {modality: (N, D)} of the headline set's first rows
    with its `truth`, for the picture of the shared space. Returns the paths written.
    """
    reporter = reporter or Reporter()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {s.name: _set_figures(s, metrics["bins"][s.name], out_dir) for s in sets}
    auroc = (metrics["crossmodal"]["anomaly"] or {}).get("auroc", float("nan"))
    roc = None
    if anomaly is not None and math.isfinite(auroc):
        roc = plots.plot_roc(anomaly[0], anomaly[1], auroc,
                             out_dir / FIGURE_DIR / "anomaly_roc.png")
    pca = embeddings and plots.plot_embedding_pca(embeddings, truth, out_dir / FIGURE_DIR / "shared_space_pca.png")
    blocks = report_blocks(metrics, figures, roc, out_dir, pca)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html",
             "metrics": out_dir / "metrics.json"}
    paths["markdown"].write_text(render_markdown(blocks, out_dir))
    paths["html"].write_text(render_html(blocks, metrics["model"]["id"]))
    paths["metrics"].write_text(json.dumps(json_ready(metrics), indent=1))
    reporter.info(f"report: {paths['markdown']}, {paths['html']}, {paths['metrics']}")
    return paths


def _set_figures(held_out, set_metrics: dict, out_dir: Path) -> list[tuple[Path, str]]:
    """(path, caption) of every figure of one held-out set (only the examples without line
    truth)."""
    name, truth, est = held_out.name, held_out.truth, held_out.estimates
    base = out_dir / FIGURE_DIR
    shown = "specsr mean ± 1σ" if "sr_mean" in held_out.examples else \
        "the low-res and ceiling fit models (the model returned no spectra)"
    examples = (plots.plot_examples(held_out.examples, truth, est, base / f"{name}_examples.png"),
                f"Example galaxies (one per Hα S/N bin): low-res input, R=3600 truth and {shown}."
                if held_out.line_truth else f"The first galaxies: low-res input, observed R=3600 "
                f"spectrum where there is one (gaps: not observed) and {shown}.")
    if not held_out.line_truth:
        return [examples]
    return [
        examples,
        (plots.plot_n2_vs_truth(truth, est, base / f"{name}_n2_vs_truth.png"),
         "Estimated vs true N2; slope < 1 means shrinkage toward the mean."),
        (plots.plot_n2_mass(truth, est, base / f"{name}_n2_mass.png"),
         "N2 vs stellar mass in redshift bins, with the Faisst et al. 2018 relation."),
        (plots.plot_bias_vs_n2(truth, est, base / f"{name}_bias_vs_n2.png"),
         "N2 error and redshift bias vs true N2 (squares: Martens et al. 2019 shift of a "
         "centroid that ignores [NII])."),
        (plots.plot_calibration(set_metrics["calibration"], base / f"{name}_calibration.png"),
         "Calibration: fraction of truths inside Gaussian central intervals from p16/p50/p84."),
    ]


# --- content --------------------------------------------------------------------------

def report_blocks(metrics: dict, figures: dict, roc_figure, out_dir: Path, pca_figure=None) -> list[tuple]:
    """The report as blocks: provenance, headline, per-set sections, domain gap, cross-modal."""
    model = metrics["model"]
    blocks = [("heading", 1, f"specsr evaluation: model `{model['id']}`"),
              ("text", f"Model argument `{model['argument']}`, version {model['version']}; "
                       f"posterior samples per object: {metrics['evaluation']['samples']}; seed "
                       f"{metrics['evaluation']['seed']}." + _withheld_text(metrics["evaluation"])),
              ("table", ["set", "instrument", "directory", "kind", "seed", "objects used / total"],
               [[d["name"], d["instrument"], d["directory"], str(d["kind"]), str(d["seed"]),
                 f"{d['count_used']} / {d['count_total']}"] for d in metrics["data"]])]
    if model["id"] == "baseline":
        blocks.append(("text", "The model is the baseline itself: the specsr column IS the "
                               "direct low-res fit, so specsr cannot beat it here."))
    blocks += _headline_blocks(metrics)
    for provenance in metrics["data"]:
        name = provenance["name"]
        set_blocks = _set_blocks if provenance["line_truth"] else _real_set_blocks
        blocks += set_blocks(name, metrics["bins"][name], figures[name])
    if metrics["domain_gap"] is not None:
        blocks += _domain_gap_blocks(metrics["domain_gap"], out_dir)
    blocks += crossmodal_blocks(metrics["crossmodal"], roc_figure, pca_figure)
    return blocks


def _withheld_text(evaluation: dict) -> str:
    """The report's note on inputs withheld from every method (`specsr evaluate --withhold`)."""
    withheld = evaluation.get("withheld") or []
    if not withheld:
        return ""
    names = {"image": "the images", "mass": "the catalogue masses (so no Faisst prior)"}
    return (" Evaluated without " + " and ".join(names[w] for w in withheld)
            + ": neither specsr nor the baselines see them.")


def _headline_blocks(metrics: dict) -> list[tuple]:
    keys = [k for k, v in metrics.items() if not isinstance(v, dict | list)
            and k != "headline_set" and not k.startswith("domain_gap_")]
    headline = next(d for d in metrics["data"] if d["name"] == metrics["headline_set"])
    caveat = "" if headline["line_truth"] else \
        " This set has no line truth (real galaxies): the truth-based metrics are n/a."
    return [("heading", 2, "Headline metrics"),
            ("text", f"Set `{metrics['headline_set']}`, objects with true S/N(Hα) >= "
                     f"{HEADLINE_MIN_SNR:g}. N2 = log10([NII]6585/Hα) in dex; z_bias_lowres is "
                     f"the naive centroid that ignores [NII]; '—' = not computed.{caveat}"),
            ("table", ["metric", "value"], [[k, format_number(metrics[k], ".4g")] for k in keys])]


STATISTICS = {"bias": ("bias", "+.3f"), "nmad": ("NMAD", ".3f"), "slope": ("slope", ".2f"),
              "calibration_slope": ("calibration slope", ".2f")}


def with_interval(stats: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    """One statistic, with its bootstrap 68 % interval "[lo, hi]" where measured."""
    value = format_number(stats.get(key), fmt, scale)
    if stats.get(f"{key}_lo") is None or value == "—":
        return value
    return f"{value} [{format_number(stats[f'{key}_lo'], fmt, scale)}, {format_number(stats[f'{key}_hi'], fmt, scale)}]"


def _binned_tables(bins: dict, quantity: str, keys, unit: str, scale=1.0) -> list[tuple]:
    """One table per statistic (rows: bins, columns: methods; one number and its interval per
    cell); `unit` labels bias and NMAD, slopes have none."""
    methods = ERROR_METHODS[quantity]
    header = ["bin", "N"] + [METHOD_LABELS[m] for m in methods]
    blocks = []
    for key in keys:
        label, fmt = STATISTICS[key]
        scaled = 1.0 if "slope" in key else scale
        rows = [[name, str(b["n"])] + [with_interval(b[quantity][m], key, fmt, scaled) if m in b[quantity] else "—"
                                       for m in methods] for name, b in bins.items()]
        blocks += [("heading", 4, label + ("" if "slope" in key else f" [{unit}]")), ("table", header, rows)]
    return blocks


def _binned_coverage(bins: dict, quantity: str, level: str = "68") -> tuple:
    """Share of truths inside each method's central `level` % interval, per bin (with its
    bootstrap 68 % interval)."""
    methods = [m for m in ERROR_METHODS[quantity] if any(m in b["coverage"][quantity] for b in bins.values())]
    rows = [[name, str(b["n"])] + [with_interval(b["coverage"][quantity][m], level, ".2f")
                                   if m in b["coverage"][quantity] else "—" for m in methods]
            for name, b in bins.items()]
    return ("table", ["bin", "N"] + [METHOD_LABELS[m] for m in methods], rows)


def headline_table(snr_bins: dict) -> list[tuple]:
    """N2 NMAD per S/N bin (with bootstrap 68 % intervals) for specsr and every baseline, and
    the verdict against the best competitor (a paired bootstrap interval on the difference)."""
    methods = ERROR_METHODS["n2"]
    rows, losing = [], []
    for label, b in snr_bins.items():
        cells = []
        for m in methods:
            stats = b["n2"].get(m)
            cells.append("—" if stats is None else with_interval(stats, "nmad", ".3f"))
        verdict = b.get("n2_verdict") or {}
        if verdict:
            outcome = "beats" if verdict["beats"] else ("ties" if verdict["ties"] else "loses to")
            cell = (f"{outcome} {METHOD_LABELS[verdict['best_competitor']]} "
                    f"({verdict['difference']:+.3f} [{verdict['lo']:+.3f}, {verdict['hi']:+.3f}])")
            if not verdict["beats"]:
                losing.append(label)
        else:
            cell = "—"
        rows.append([label, str(b["n"])] + cells + [cell])
    header = ["S/N(Hα)", "N"] + [f"{METHOD_LABELS[m]} NMAD" for m in methods] + \
        ["specsr vs best competitor (NMAD difference)"]
    verdict = (f"specsr does not beat its best competitor outside the bootstrap interval in S/N bins "
               f"{', '.join(losing)}." if losing else
               "specsr beats its best competitor in every populated S/N bin (difference interval below 0).")
    return [("table", header, rows), ("text", verdict)]


def _set_blocks(instrument: str, m: dict, figures) -> list[tuple]:
    z_note = f"Δz/(1+z) in units of {Z_UNIT:g}"
    martens = ", ".join(f"N2 {n:+.1f}: {dz / Z_UNIT:.1f}" for n, dz in zip(MARTENS_N2, MARTENS_DZ,
                                                                          strict=True))
    blocks = [("heading", 2, f"Set `{instrument}`"),
              ("heading", 3, "N2 scatter: specsr vs the baselines"),
              *headline_table(m["snr"]),
              ("heading", 3, "N2 by S/N(Hα)"),
              ("text", "Each cell: the statistic with its bootstrap 68 % interval. slope: estimate vs "
                       "truth (< 1: shrinkage toward the mean, expected of a posterior median where the "
                       "data are weak); calibration slope: truth vs estimate (1: the truth follows the "
                       "estimate one-for-one; > 1: shrunk more than the data justify)."),
              *_binned_tables(m["snr"] | {"all": m["all"]}, "n2", ("bias", "nmad", "slope", "calibration_slope"),
                              "dex"),
              ("heading", 3, "N2 by stellar mass (log M*/M☉)"),
              *_binned_tables(m["mass"], "n2", ("bias", "nmad", "slope"), "dex"),
              ("heading", 3, "N2 by true N2 [dex]"),
              ("text", "A bias that falls with true N2 is shrinkage toward the mean, which "
                       "flattens the mass–N2 relation."),
              *_binned_tables(m["n2_true"], "n2", ("bias", "nmad"), "dex"),
              ("heading", 3, "Calibration: fraction of truths inside the 68 % / 95 % intervals"),
              _coverage_table(m),
              ("heading", 4, "N2 68 % coverage by true N2 [dex]"),
              ("text", "0.68 = calibrated; lower: the intervals are too narrow there, usually where "
                       "the prior pulls."),
              _binned_coverage(m["n2_true"], "n2"),
              ("heading", 4, "N2 68 % coverage by S/N(Hα)"),
              _binned_coverage(m["snr"], "n2"),
              ("heading", 4, "N2 68 % coverage by stellar mass"),
              _binned_coverage(m["mass"], "n2"),
              *data_consistency_blocks(m["snr"] | {"all": m["all"]}),
              ("heading", 3, "Hα flux by S/N(Hα)"),
              *_binned_tables(m["snr"] | {"all": m["all"]}, "ha_flux", ("bias", "nmad"), "fraction of the true flux"),
              ("heading", 4, "Hα flux 68 % coverage by S/N(Hα)"),
              _binned_coverage(m["snr"] | {"all": m["all"]}, "ha_flux"),
              ("heading", 3, f"Redshift by S/N(Hα) ({z_note})"),
              *_binned_tables(m["snr"] | {"all": m["all"]}, "z", ("bias", "nmad"), f"{Z_UNIT:g} (1+z)", Z_UNIT),
              ("heading", 3, f"Redshift bias vs true N2 and stellar mass ({z_note})"),
              ("text", "Blending shifts a centroid that ignores [NII] redward; Martens et al. "
                       f"2019 expect {martens}."),
              *_binned_tables(m["n2_true"], "z", ("bias",), f"{Z_UNIT:g} (1+z)", Z_UNIT),
              *_binned_tables(m["mass"], "z", ("bias",), f"{Z_UNIT:g} (1+z)", Z_UNIT)]
    blocks += [("figure", path, caption) for path, caption in figures]
    return blocks


def data_consistency_blocks(bins: dict) -> list[tuple]:
    """Median reduced χ² of specsr's posterior mean re-observed through the instrument, per bin
    (nothing where the model does not report it)."""
    rows = [[name, str(b["n"]), format_number(b.get("reconstruction_chi2_median"), ".2f")]
            for name, b in bins.items() if b.get("reconstruction_chi2_median") is not None]
    if not rows:
        return []
    return [("heading", 3, "Data consistency by S/N(Hα)"),
            ("text", "Median reduced χ² of the low-res pixels against specsr's posterior-mean window "
                     "re-observed through the instrument (LSF, rebinning, ivar): about 1 when the samples "
                     "agree with the data to within the noise, well above 1 when they follow the prior "
                     "instead; the target is ≤ 1.2 at S/N > 20."),
            ("table", ["bin", "N", "median reduced χ²"], rows)]


def _real_set_blocks(name: str, m: dict, figures) -> list[tuple]:
    """A set without line truth (real galaxies): the redshift errors and the examples."""
    n_hires = m["all"]["z"].get("ceiling", {}).get("n", 0)
    blocks = [("heading", 2, f"Set `{name}`"),
              ("text", "Real galaxies: no true N2, line fluxes, S/N(Hα) or stellar mass, so the "
                       "N2 and Hα-flux errors, the S/N, mass and true-N2 bins, the Faisst+18 "
                       "prior and the calibration are n/a (skipped). Redshift errors are against "
                       "the catalogue redshift, which is also the prior z_prior the fits start "
                       "from; 'ceiling' is the fit of the observed R=3600 spectrum plus "
                       f"matching noise ({n_hires} objects with a hi-res spectrum)."),
              ("heading", 3, f"Redshift vs the catalogue (Δz/(1+z) in units of {Z_UNIT:g})"),
              *_binned_tables({"all": m["all"]}, "z", ("bias", "nmad"), f"{Z_UNIT:g} (1+z)", Z_UNIT)]
    return blocks + [("figure", path, caption) for path, caption in figures]


def _domain_gap_blocks(gaps: dict, out_dir: Path) -> list[tuple]:
    """Per real set: the statistics of domain_gap.py, simulated reference vs real, and the
    histograms."""
    blocks = [("heading", 2, "Domain gap: simulated vs real")]
    if gaps["reference"] is None:
        return blocks + [("text", "not computed (no simulated reference set: evaluate a "
                                  "simulated set too or give one with --domain-gap-against)")]
    blocks.append(("text", f"Simulated reference `{gaps['reference']}`. Per-example statistics: "
                           "low-res continuum slope d ln f_λ/dλ [1/µm], Hα σ_v [km/s] and N2 "
                           "fitted on the hi-res target (real: observed pixels only). KS = "
                           "two-sample Kolmogorov-Smirnov distance (0 = same distribution, 1 = "
                           "disjoint); shift = real - simulated median."))

    def summary(s):
        median, p16, p84 = (format_number(s[key], ".3g") for key in ("median", "p16", "p84"))
        return f"{median} [{p16}, {p84}]"

    for name, gap in gaps["sets"].items():
        rows = []
        for statistic, values in gap["statistics"].items():
            sim, real = values["simulated"], values["real"]
            rows.append([statistic, str(sim["n"]), summary(sim), str(real["n"]), summary(real),
                         format_number(values["median_shift"], "+.3g"), format_number(values["ks"], ".2f")])
        blocks += [("heading", 3, f"Set `{name}`"),
                   ("table", ["statistic", "N sim", "sim median [p16, p84]", "N real",
                              "real median [p16, p84]", "shift", "KS"], rows),
                   ("figure", out_dir / gap["figure"],
                    f"Simulated (reference) vs real `{name}`: density-normalised histograms.")]
    return blocks


def _coverage_table(m: dict) -> tuple:
    rows = []
    for quantity, methods in m["all"]["coverage"].items():
        for method, cov in methods.items():
            high = m["snr_ge_10"]["coverage"][quantity].get(method, {})
            rows.append([quantity, METHOD_LABELS.get(method, method), str(cov["n"]),
                         *(with_interval(stats, level, ".2f") for stats in (cov, high) for level in ("68", "95"))])
    header = ["quantity", "method", "N", "68 % (all)", "95 % (all)",
              f"68 % (S/N>={HEADLINE_MIN_SNR:g})", f"95 % (S/N>={HEADLINE_MIN_SNR:g})"]
    return ("table", header, rows)


def crossmodal_blocks(extra: dict, roc_figure=None, pca_figure=None) -> list[tuple]:
    """The report's cross-modal section (metrics.json "crossmodal"): retrieval, probes,
    generation, anomalies (per class, by S/N, mismatched pairs); figures where given."""
    def missing(what):
        return ("text", f"not computed ({what} not given)")

    blocks = [("heading", 2, "Cross-modal"), ("heading", 3, "Image ↔ spectrum retrieval")]
    if extra["retrieval"]:
        rows = [[direction, format_number(r["top1"]), format_number(r["top5"])]
                for direction, r in extra["retrieval"].items()]
        blocks.append(("table", ["direction", "top-1", "top-5"], rows))
    else:
        blocks.append(missing("image and spectrum embeddings"))
    blocks.append(("heading", 3, "What the shared space knows: out-of-fold probe R² (kNN / linear)"))
    probes = extra.get("probes")
    if probes:
        rows_of = {**probes, **(extra.get("probe_baselines") or {})}
        quantities = sorted({q for per in rows_of.values() for q in per}, key=PROBE_QUANTITIES.index)
        blocks.append(("table", ["embedding", *quantities],
                       [[modality, *[f"{format_number(per[q]['knn'])} / {format_number(per[q]['linear'])}"
                                     if q in per else "—" for q in quantities]]
                        for modality, per in rows_of.items()]))
        baselines = (" Baselines (what the embedding adds to): the cutouts' aperture photometry (one asinh "
                     "magnitude per band) and the direct low-res fit's z, Hα + [NII] flux and N2, probed the "
                     "same way (kNN on standardised features)." if extra.get("probe_baselines") else "")
        blocks.append(("text", "z, log M* [dex], log SFR [dex], N2 [dex]; is_agn: R² of the 0/1 flag."
                       + baselines + " AstroCLIP (real DESI data) reaches kNN z R² 0.79 from images, 0.99 "
                       "from spectra."))
        if pca_figure:
            blocks.append(("figure", pca_figure, "The shared space on its first two principal components "
                           "(rows: image and spectrum embeddings of the headline set), coloured by the true "
                           "redshift, stellar mass and N2."))
    else:
        blocks.append(missing("embeddings"))
    blocks.append(("heading", 3, "Spectra generated from images: N2 [dex] without a spectrum"))
    gen = extra["generation"]
    if gen:
        blocks.append(("table", ["estimate", "N", "NMAD", "bias", "68 % coverage", "95 % coverage"],
                       [[f"generated from the image (with {gen['inputs']})", str(gen["n_estimated"]),
                         format_number(gen["n2_nmad"]), format_number(gen["n2_bias"], "+.3f"),
                         format_number(gen["coverage_68"], ".2f"), format_number(gen["coverage_95"], ".2f")],
                        *[[name, str(gen["n_estimated"]), format_number(value), "", "", ""]
                          for name, value in gen["references"].items()]]))
        blocks.append(("text", "Each galaxy's N2 is the median over the spectra that the super-resolver draws "
                       "from its prior given the image alone (no spectrum), scored on the galaxies where they "
                       "give one; the coverage counts a galaxy without an estimate as not covered. The "
                       "other rows are scored on the same galaxies; constant: the median true N2 for every "
                       "galaxy (no skill)."))
    else:
        blocks.append(missing("spectra generated from images"))
    blocks.append(("heading", 3, "Anomaly detection (AGN, broad lines, contamination, artefacts)"))
    anomaly = extra["anomaly"]
    if anomaly:
        blocks.append(("table", ["score", "N", "anomalous", "AUROC", "precision at 1 % FPR"],
                       [[anomaly["source"], str(anomaly["n"]), str(anomaly["n_anomalous"]),
                         format_number(anomaly["auroc"]), format_number(anomaly["precision_at_1pct_fpr"])]]))
    else:
        blocks.append(missing("anomaly scores"))
    blocks += _anomaly_class_blocks(extra)
    if roc_figure:
        blocks.append(("figure", roc_figure, "ROC of the anomaly score."))
    return blocks


def _anomaly_class_blocks(extra: dict) -> list[tuple]:
    """Per-class AUROC and recall of every score, the calibration of the p columns, the
    headline score's AUROC by S/N, and the mismatched image/spectrum pairs."""
    blocks = []
    by_class = extra.get("anomaly_by_class")
    if by_class:
        calibration = by_class.get("calibration", {})
        scores = [name for name in by_class if name != "calibration"]
        labels = list(by_class[scores[0]]) if scores else []
        for key, what in (("auroc", "AUROC"), ("recall_at_1pct_fpr", "recall at 1 % false-positive rate")):
            blocks.append(("text", f"{what} of each score, each class against the normal galaxies:"))
            blocks.append(("table", ["score", *labels],
                           [["N (class)", *[str(by_class[scores[0]][label]["n_anomalous"]) for label in labels]]]
                           + [[name, *[format_number(by_class[name][label][key], ".2f") for label in labels]]
                              for name in scores]))
        if calibration:
            blocks.append(("text", "Share flagged at p < 0.01 by each false-positive-rate column "
                           "(normal galaxies should stay at or below 0.01; p columns are ranked by "
                           "-log10 p above)."))
            groups = list(next(iter(calibration.values())))
            blocks.append(("table", ["column", *groups],
                           [[name, *[format_number(shares[g], ".3f") for g in groups]]
                            for name, shares in calibration.items()]))
    by_snr = extra.get("anomaly_by_snr")
    if by_snr:
        bins = list(next(iter(by_snr.values())))
        blocks.append(("text", "AUROC of the headline score by the expected S/N of all Hα (narrow + broad), "
                       "each class against the normal galaxies of the same bin; then the number of that "
                       "class in each bin:"))
        header = [f"S/N {b}" for b in bins]
        blocks.append(("table", ["class", *header],
                       [[label, *[format_number(per[b]["auroc"], ".2f") for b in bins]]
                        for label, per in by_snr.items()]))
        blocks.append(("table", ["class (N)", *header],
                       [[label, *[str(per[b]["n_anomalous"]) for b in bins]] for label, per in by_snr.items()]))
    pairs = extra.get("mismatched_pairs")
    if pairs:
        blocks.append(("text", f"Mismatched image/spectrum pairs (each image with another galaxy's spectrum) vs "
                       f"the true pairs, scored by 1 - cos of their shared-space embeddings: AUROC "
                       f"{format_number(pairs['auroc'], '.2f')}, recall at 1 % false-positive rate "
                       f"{format_number(pairs['recall_at_1pct_fpr'], '.2f')} ({pairs['n_anomalous']} pairs)."))
    return blocks


# --- rendering ------------------------------------------------------------------------

def render_markdown(blocks, out_dir: Path) -> str:
    """Markdown with figures linked relative to out_dir."""
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "text":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "figure":
            lines += [f"![{block[2]}]({Path(block[1]).relative_to(out_dir).as_posix()})",
                      "", f"*{block[2]}*", ""]
    return "\n".join(lines)


def render_html(blocks, title: str) -> str:
    """One self-contained HTML page (PNG figures inlined as base64)."""
    esc = html.escape
    body = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            body.append(f"<h{block[1]}>{esc(block[2]).replace('`', '')}</h{block[1]}>")
        elif kind == "text":
            body.append(f"<p>{esc(block[1]).replace('`', '')}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block[2])}">'
                        f"<figcaption>{esc(block[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "img{max-width:100%}figcaption{font-style:italic;font-size:90%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>specsr evaluation: "
            f"{esc(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
