"""Collect the benchmark results into benchmarks/results/summary.json and the README table.

Reads roofline.json, ddim_steps.json, train.json and infer.json (and gpu/roofline.json
when benchmarks/gpu.sh results were copied there) from benchmarks/results/, writes the
flat `summary.json` and regenerates the table between the markers in benchmarks/README.md.
Keys missing from the results (a benchmark not run or skipped) are left out; nothing is
estimated: a GPU figure appears only when benchmarks/gpu.sh measured it.

    python -m benchmarks.summarize [--results DIR] [--readme PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS_DIR, ROOT, write_report
from specsr_keras.models.samplers import Sampler

README = ROOT / "benchmarks" / "README.md"
# The sampler of `specsr export`, `specsr infer` and `evaluate` (DDIM, 10 steps), and two
# alternatives for comparison.
DEFAULT_SAMPLER, DEFAULT_STEPS = Sampler().kind, Sampler().steps
COMPARED = {"ddim10": (DEFAULT_SAMPLER, DEFAULT_STEPS), "dpm10": ("dpm++2m", 10), "ddim20": ("ddim", 20)}
BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"
# key -> (description, unit) for the README table, in table order.
DESCRIPTIONS = {
    "cpu_matmul_gflops": ("dense float32 matmul, best backend", "GFLOP/s"),
    "cpu_matmul_bf16_gflops": ("dense bfloat16 matmul, best backend (AMX)", "GFLOP/s"),
    "sr_mfu_cpu": ("MFU of sample(), best variant at the largest batch", ""),
    "sr_best_variant_cpu": ("that variant", ""),
    "sr_spectra_per_s_cpu": ("super-resolved spectra/s, default sampler (DDIM 10 steps), trained model", "1/s"),
    "sr_spectra_per_s_cpu_estimate": ("same, from the roofline's sample() time scaled to 10 steps", "1/s"),
    "sr_nmad_ddim10": ("log([NII]/Hα) NMAD, held-out set (ddim_steps.json), DDIM 10 steps", "dex"),
    "sr_coverage68_ddim10": ("its 68 % predictive-interval coverage", ""),
    "sr_nmad_dpm10": ("same, DPM++2M 10 steps", "dex"),
    "sr_coverage68_dpm10": ("its 68 % predictive-interval coverage", ""),
    "sr_nmad_ddim20": ("same, DDIM 20 steps", "dex"),
    "sr_coverage68_ddim20": ("its 68 % predictive-interval coverage", ""),
    "sr_spectra_per_s_gpu": ("super-resolved spectra/s on the GPU, 10 steps (gpu.sh)", "1/s"),
    "train_samples_per_s_tiny_tf": ("super-resolver training, tiny, TensorFlow, batch 32", "1/s"),
    "train_samples_per_s_tiny_jax": ("same, JAX", "1/s"),
    "infer_rows_per_s": ("`specsr infer` baseline predictor, largest catalog", "rows/s"),
    "infer_rss_ratio": ("peak RSS, largest / smallest catalog", ""),
    "infer_dask_speedup": ("`specsr infer` rows/s on 2 local Dask workers / on 1", ""),
    "infer_model_galaxies_per_s": ("`specsr infer` with the shipped SavedModel, steady state", "1/s"),
    "infer_to_sampler_ratio": ("that / (its sampler's samples/s ÷ K), same run (target >= 0.8)", ""),
    "infer_model_rss_ratio": ("peak RSS of those runs, 640 / 128 rows in 64-row chunks (target <= 1.2)", ""),
    "sim_galaxies_per_s": ("simulator, Euclid, images included", "1/s"),
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _setting(ddim: dict, sampler: str, steps: int) -> dict:
    return next((s for s in ddim.get("settings", []) if s["sampler"] == sampler and s["steps"] == steps), {})


def summarize(results: Path = RESULTS_DIR) -> dict:
    """The flat summary of whatever results are in `results`."""
    roofline, ddim = _load(results / "roofline.json"), _load(results / "ddim_steps.json")
    train, infer = _load(results / "train.json"), _load(results / "infer.json")
    gpu = _load(results / "gpu" / "roofline.json")
    out = {}
    if roofline:
        peak, best = roofline["peak_gflops_per_s"], roofline["best_sample"]
        out.update(cpu_matmul_gflops=peak["float32"], cpu_matmul_bf16_gflops=peak.get("bfloat16"),
                   sr_mfu_cpu=best["mfu"], sr_best_variant_cpu=best["variant"])
        if not _setting(ddim, DEFAULT_SAMPLER, DEFAULT_STEPS):
            out["sr_spectra_per_s_cpu_estimate"] = round(
                best["spectra_per_s"] * (roofline["steps"] + 1) / (DEFAULT_STEPS + 1), 2)
        if gpu.get("steps") == DEFAULT_STEPS:
            out["sr_spectra_per_s_gpu"] = gpu["best_sample"]["spectra_per_s"]
    for short, (sampler, steps) in COMPARED.items():
        setting = _setting(ddim, sampler, steps)
        if setting:
            out[f"sr_nmad_{short}"] = round(setting["n2_all"]["nmad"], 4)
            out[f"sr_coverage68_{short}"] = round(setting["n2_all"]["coverage_68"], 3)
    default = _setting(ddim, DEFAULT_SAMPLER, DEFAULT_STEPS)
    if default:
        out["sr_spectra_per_s_cpu"] = default["spectra_per_s"]
    for backend, short in (("tensorflow", "tf"), ("jax", "jax")):
        run = train.get("runs", {}).get(backend, {}).get("tiny", {})
        if "samples_per_s" in run:
            out[f"train_samples_per_s_tiny_{short}"] = run["samples_per_s"]
    if infer:
        out.update(infer_rows_per_s=infer["runs"][-1]["rows_per_s"],
                   infer_rss_ratio=infer["rss_ratio_largest_to_smallest"],
                   infer_dask_speedup=(infer.get("dask") or {}).get("speedup"),
                   infer_model_galaxies_per_s=(infer.get("model") or {}).get("infer_galaxies_per_s"),
                   infer_to_sampler_ratio=(infer.get("model") or {}).get("infer_to_sampler_ratio"),
                   infer_model_rss_ratio=(infer.get("model") or {}).get("rss_ratio_largest_to_smallest"))
    if "simulate_galaxies_per_s" in ddim:
        out["sim_galaxies_per_s"] = ddim["simulate_galaxies_per_s"]
    return {k: v for k, v in out.items() if v is not None}


def table(summary: dict) -> str:
    """The summary as a markdown table (key, value, what it is)."""
    lines = ["| key | value | what |", "|---|---|---|"]
    for key, (what, unit) in DESCRIPTIONS.items():
        if key in summary:
            value = summary[key]
            if isinstance(value, str):
                shown = value
            else:
                shown = f"{value:.3g}" if abs(value) < 1 else f"{value:,}"
            lines.append(f"| `{key}` | {shown}{' ' + unit if unit else ''} | {what} |")
    return "\n".join(lines)


def update_readme(readme: Path, summary: dict) -> None:
    """Replace the text between the summary markers of `readme` by the generated table."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{table(summary)}\n{END}{tail}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    summary = summarize(args.results)
    write_report(args.results / "summary.json", summary)
    update_readme(args.readme, summary)
    print(table(summary))
    return summary


if __name__ == "__main__":
    main()
