"""MODEL_CARD.md for a shipped model: training data, config, wall time, held-out metrics.

Everything in the card is read from files, none typed in: the run's `run.json` and
`config.toml`, the manifests of its training shard directories, its `.keras` models
(parameter counts), the SavedModel's `signatures.json` (sampler settings) and the
`metrics.json` of each `specsr evaluate` report on held-out sets. The targets of the
shipped model (issue 9) are checked against those metrics and marked met or missed.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from specsr_keras.data.shards import read_manifest
from specsr_keras.evaluation.metrics import ERROR_METHODS
from specsr_keras.evaluation.plots import METHOD_LABELS
from specsr_keras.evaluation.report import crossmodal_blocks, format_number, headline_table, render_markdown
from specsr_keras.export.client import load_signatures
from specsr_keras.hardware import describe_host

MODEL_NAMES = ("spectrum_autoencoder", "image_autoencoder", "contrastive", "superres")
# Targets (per S/N bin): |N2 bias|, estimate-vs-truth slope at S/N > 20, calibration slope,
# 68 % and 95 % coverage.
BIAS_TARGET_DEX = 0.02
SLOPE_TARGET = (0.9, 1.1)
CALIBRATION_TARGET = (0.9, 1.1)
COVERAGE_68_TARGET = (0.63, 0.73)
COVERAGE_95_TARGET = (0.92, 0.97)

INTENDED_USE = (
    "Super-resolution of slitless grism spectra (Euclid NISP red grism, HST WFC3 G141 / "
    "3D-HST, Roman grism) around Hα: posterior samples of the R=3600 rest-frame window "
    "6460-6780 Å, from which [NII]6585/Hα, Hα flux and redshift are measured with "
    "percentile intervals; embeddings of images and spectra for similarity search and "
    "anomaly ranking. Trained only on the specsr simulator: use it to try the pipeline, "
    "as the starting point of a fine-tune on real grism + MOSFIRE pairs (`specsr train "
    "--init-from`), and for population-level statements that are checked against the "
    "baselines in this card, not for per-object metallicities of real galaxies."
)
LIMITATIONS = [
    "Simulation only: line-spread functions, noise, continua, contamination and the "
    "N2-mass relation are the simulator's (docs/science.md); real spectra differ (run "
    "`specsr evaluate --domain-gap-against` on your data before trusting numbers).",
    "Low S/N: where the grism does not resolve [NII] the posterior follows the prior "
    "(learnt from the simulator, given the image, amplitudes, a catalogue mass and z), i.e. "
    "it shrinks toward the mean; where the data decide, every sample agrees with the "
    "observed pixels (the sampler's data-consistency step). Read the slope and the "
    "by-true-N2 bias in the report, not only NMAD. The "
    "slope of estimate vs truth (target 0.9-1.1) falls below 1 for any posterior median "
    "where the data are weak; the calibration slope (truth vs estimate, 1 = the truth "
    "follows the estimate one-for-one) tells whether the shrinkage is what the data "
    "justify. Population relations (N2 vs M*) from these estimates are flattened: fit "
    "them to the samples with their intervals, not to the medians alone.",
    "Intervals are predictive percentiles from K posterior samples of a few-step sampler; "
    "their coverage is measured above per S/N bin and is not guaranteed on other data.",
    "The SavedModel is exported for one instrument (its signatures.json names it) with a "
    "fixed number of samples and sampler steps; the Keras run serves every instrument.",
    "Small (`tiny` preset) networks trained on CPU; the `base` preset on a GPU is expected "
    "to do better.",
]


def write_model_card(run_dir: Path, reports: list[Path], out: Path, *, saved_model: Path | None = None,
                     title: str = "specsr") -> Path:
    """Write the card for the run in `run_dir` evaluated by the `reports` directories
    (linked relative to the run's parent, the shipped model's home)."""
    run_dir, out = Path(run_dir), Path(out)
    run = json.loads((run_dir / "run.json").read_text())
    config = tomllib.loads(run["config"])
    metrics = [load_metrics(Path(r) / "metrics.json") for r in reports]
    blocks = [("heading", 1, f"Model card: {title}"),
              ("heading", 2, "Intended use"), ("text", INTENDED_USE),
              *_model_blocks(run_dir, config, saved_model),
              *_data_blocks(config, run_dir),
              *_training_blocks(run, config),
              *_evaluation_blocks(metrics, reports, run_dir.parent),
              *_crossmodal_card_blocks(metrics, reports, run_dir.parent),
              ("heading", 2, "Known limitations"),
              ("text", "\n".join(f"- {item}" for item in LIMITATIONS))]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(blocks, out.parent))
    return out


def load_metrics(path: Path) -> dict:
    """A report's metrics.json with its nulls (metrics not computable) back as NaN."""
    return json.loads(Path(path).read_text(),
                      object_hook=lambda d: {k: math.nan if v is None else v for k, v in d.items()})


def _model_blocks(run_dir: Path, config: dict, saved_model: Path | None) -> list[tuple]:
    import keras

    import specsr_keras.models  # noqa: F401  (registers the model classes)

    rows, sampler = [], None
    for name in MODEL_NAMES:
        path = run_dir / "models" / f"{name}.keras"
        model = keras.saving.load_model(path, compile=False)
        learned = model.count_learned_params() if hasattr(model, "count_learned_params") else model.count_params()
        rows.append([name, f"{learned:,}", f"{path.stat().st_size / 1e6:.1f} MB"])
        sampler = getattr(model, "sampler", sampler)
    blocks = [("heading", 2, "Model"),
              ("text", f"Preset `{config['model_preset']}`: diffusion autoencoders for spectra "
                       "and images, a contrastive aligner (shared embedding) and the super-resolver, a "
                       "cross-modal 1D diffusion prior over the hi-res window sampled as a posterior "
                       "(with the image alone it is the image-to-spectrum generator). "
                       f"Keras files in `{run_dir.name}/models/` (backend-neutral, no optimizer state)."),
              ("table", ["model", "parameters", "file"], rows),
              ("text", "Parameters: learned weights; the super-resolver also stores the prior covariance of "
                       "its training windows for the sampler's data step (one 320 x 320 per instrument).")]
    if sampler is not None:
        blocks.append(("text", f"Sampler of the Keras run: {sampler.describe()}."))
    if saved_model is not None:
        meta = load_signatures(saved_model)["metadata"]
        blocks.append(("text", f"SavedModel `{meta['name']}/{meta['version']}` for "
                               f"`{meta['instrument']['name']}`: {meta['sampler_description']}; "
                               "endpoints in its signatures.json (docs/serving.md)."))
    return blocks


def data_directories(config: dict) -> list[tuple[str, str, str]]:
    """(role, directory, weight) of every training and validation shard directory."""
    return [(role, *item.partition("@")[::2])
            for role, spec in (("train", config["data"]), ("validation", config["val_data"]))
            for item in filter(None, (s.strip() for s in spec.split(",")))]


def manifest_copy(run_dir: Path, directory: str) -> Path:
    """Where a shipped run keeps the manifest of a data directory it was trained on."""
    return Path(run_dir) / "data_manifests" / f"{Path(directory).name}.json"


def _data_blocks(config: dict, run_dir: Path) -> list[tuple]:
    rows = []
    for role, directory, weight in data_directories(config):
        copy = manifest_copy(run_dir, directory)
        manifest = json.loads(copy.read_text()) if copy.is_file() else read_manifest(directory)
        options = manifest.get("options", {})
        rows.append([role, f"`{directory}`", manifest["instrument"], str(manifest["count"]),
                     weight or "1", str(manifest.get("seed", "—")),
                     str(manifest.get("simulator_version", manifest.get("kind", "—"))),
                     str(options.get("snr_weight_power", "—"))])
    return [("heading", 2, "Training data"),
            ("text", "Simulated with `specsr simulate` (recreate with `make shipped-data`); "
                     "S/N-stratified samples (keep probability min(1, (S/N/30)^power)) so that "
                     "bright galaxies are not as rare as in a flux-limited catalogue."),
            ("table", ["role", "directory", "instrument", "galaxies", "weight", "seed",
                       "simulator", "S/N weight power"], rows)]


def _training_blocks(run: dict, config: dict) -> list[tuple]:
    stages = run["stages"]
    rows = [[name, str(s["steps"]), format_number(s["seconds"], ".0f"), format_number(s["final_loss"], ".4f"),
             format_number(s["val_loss"], ".4f")] for name, s in stages.items()]
    total_steps = sum(s["steps"] for s in stages.values())
    train_seconds = sum(s["seconds"] for s in stages.values())
    host = run.get("host") or f"{describe_host()} (the machine that wrote this card)"
    settings = ", ".join(f"{k} = {config[k]}" for k in (
        "batch_size", "learning_rate", "warmup_steps", "weight_decay", "ema_momentum", "seed"))
    return [("heading", 2, "Training"),
            ("text", f"`specsr train` with `run/config.toml` ({settings}); backend "
                     f"{run.get('backend', '?')}, devices {run.get('devices', '?')}; host {host}. "
                     f"{total_steps:,} optimizer steps in {train_seconds / 3600:.2f} h of stage training "
                     f"(summed over resumed invocations; the last invocation took {run['seconds'] / 3600:.2f} h "
                     "including data loading and validation)."),
            ("table", ["stage model", "steps", "seconds", "final loss", "val loss"], rows)]


def _evaluation_blocks(metrics: list[dict], reports: list[Path], base: Path) -> list[tuple]:
    blocks = [("heading", 2, "Evaluation on held-out simulated sets"),
              ("text", "N2 = log10([NII]6585/Hα) [dex], NMAD with bootstrap 68 % intervals. Columns: "
                       "specsr (median of the posterior samples), the direct fit of the low-res spectrum "
                       "(each object's LSF, physical bounds), that fit's likelihood times the population "
                       "prior or times the Faisst et al. 2018 relation at a catalogue mass, the relation "
                       "alone, a constant (no skill), and the ceiling (a fit of the hi-res truth spectrum "
                       "with its own noise, which needs R=3600 data: not a competitor). A report through the "
                       "SavedModel uses its sampler, one through the Keras run the run's own for the set's "
                       "instrument. Intervals are predictive percentiles from the samples "
                       "(specsr_keras/spectral/intervals.py). A set named 'without image and mass' was "
                       "evaluated with those inputs withheld from specsr and the baselines (the "
                       "spectrum-only mode of a survey without images or masses; no Faisst columns). "
                       "Full reports: "
                       + ", ".join(f"`{_relative(Path(r), base)}/report.md`" for r in reports) + ".")]
    targets = []
    for m in metrics:
        withheld = m.get("evaluation", {}).get("withheld") or []
        for instrument, bins in m["bins"].items():
            data = next((d for d in m["data"] if d["name"] == instrument), {})
            label = instrument + (f" without {' and '.join(withheld)}" if withheld else "")
            blocks += [("heading", 3, f"{label}: `{data.get('directory', '?')}` "
                                      f"(seed {data.get('seed', '?')}, model `{m['model']['argument']}`)"),
                       *headline_table(bins["snr"]), _slope_coverage_table(bins)]
            targets += _target_rows(label, bins)
    blocks += [("heading", 3, "Targets"),
               ("table", ["set", "target", "measured", "met"], targets)]
    return blocks


def _crossmodal_card_blocks(metrics: list[dict], reports: list[Path], base: Path) -> list[tuple]:
    """Each report's shared-space and anomaly tables (its headline set), as in the report; not
    for a report with withheld inputs (its sets are evaluated in full by another report)."""
    blocks = []
    for m, report in zip(metrics, reports, strict=True):
        if m.get("evaluation", {}).get("withheld"):
            continue
        # load_metrics turns a metric that was not computed into NaN; the report's blocks want None.
        extra = {key: None if isinstance(value, float) and math.isnan(value) else value
                 for key, value in (m.get("crossmodal") or {}).items()}
        if any(extra.get(key) for key in ("retrieval", "probes", "anomaly", "anomaly_by_class")):
            blocks += [("heading", 2, f"Shared space and anomalies: `{m.get('headline_set', '?')}` "
                                      f"(`{_relative(Path(report), base)}/report.md`)"),
                       *[b for b in crossmodal_blocks(extra) if b[0] != "heading" or b[1] > 2]]
    return blocks


def _slope_coverage_table(bins: dict) -> tuple:
    rows = []
    for label, b in bins["snr"].items():
        n2 = b["n2"]
        cov = b["coverage"]["n2"].get("specsr", {})
        slopes = [format_number(n2.get(m, {}).get("slope"), ".2f") for m in ERROR_METHODS["n2"]]
        calibration = format_number(n2.get("specsr", {}).get("calibration_slope"), ".2f")
        rows.append([label, str(b["n"]), *slopes, calibration, format_number(cov.get("68"), ".2f"),
                     format_number(cov.get("95"), ".2f")])
    header = (["S/N(Hα)", "N"] + [f"{METHOD_LABELS[m]} slope" for m in ERROR_METHODS["n2"]]
              + ["specsr calibration slope", "specsr 68 % coverage", "specsr 95 % coverage"])
    return ("table", header, rows)


def _target_rows(instrument: str, bins: dict) -> list[list[str]]:
    """The targets of one held-out set per S/N bin (N >= 30), each measured, with a verdict."""
    rows = []
    for label, b in bins["snr"].items():
        n2 = b["n2"].get("specsr")
        if b["n"] < 30 or n2 is None or not math.isfinite(n2["nmad"]):
            continue
        verdict = b.get("n2_verdict") or {}
        if verdict:
            rows.append([instrument, f"S/N {label}: NMAD below the best competitor (paired bootstrap)",
                         f"{n2['nmad']:.3f} vs {METHOD_LABELS[verdict['best_competitor']]} "
                         f"{n2['nmad'] - verdict['difference']:.3f} ({verdict['difference']:+.3f} "
                         f"[{verdict['lo']:+.3f}, {verdict['hi']:+.3f}])", _verdict(verdict["beats"])])
        rows.append([instrument, f"S/N {label}: abs(bias) <= {BIAS_TARGET_DEX} dex", f"{n2['bias']:+.3f}",
                     _verdict(abs(n2["bias"]) <= BIAS_TARGET_DEX)])
        rows.append([instrument, f"S/N {label}: calibration slope {CALIBRATION_TARGET[0]}-{CALIBRATION_TARGET[1]}",
                     format_number(n2["calibration_slope"], ".2f"),
                     _verdict(CALIBRATION_TARGET[0] <= n2["calibration_slope"] <= CALIBRATION_TARGET[1])])
        cov = b["coverage"]["n2"].get("specsr", {})
        for level, (lo, hi) in (("68", COVERAGE_68_TARGET), ("95", COVERAGE_95_TARGET)):
            value = cov.get(level, math.nan)
            rows.append([instrument, f"S/N {label}: {level} % coverage {lo}-{hi}", format_number(value, ".2f"),
                         _verdict(lo <= value <= hi)])
    bright = bins["snr"].get(">20", {})
    if bright.get("n", 0) >= 30:
        slope = bright["n2"]["specsr"]["slope"]
        rows.append([instrument, f"slope {SLOPE_TARGET[0]}-{SLOPE_TARGET[1]} at S/N > 20",
                     format_number(slope, ".2f"), _verdict(SLOPE_TARGET[0] <= slope <= SLOPE_TARGET[1])])
    return rows


def _verdict(met: bool) -> str:
    return "yes" if met else "**no**"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
