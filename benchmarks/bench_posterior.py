"""Posterior variants of the super-resolver on held-out sets, against every baseline, in one table.

Variants (sampler settings of one trained model, `models/samplers.py`):
- `amortised`: the denoiser conditioned on the low-res spectrum, no data-consistency step
  (the map low-res -> hi-res of specsr/2);
- `guided`: the prior given the image, amplitudes, catalogue mass and z (spectrum modality
  off), every clean estimate conditioned on the observed pixels (the default);
- `guided+amortised`: both (counts the data twice, see the module docstring of samplers);
- `... + draws`: eta = 1 and x0 drawn from the Gaussian posterior at every step;
- `... + half / double prior`: the prior covariance of the data step halved (the data
  step pulls the denoiser's estimate less toward the observed pixels) or doubled (more);
- `... + K32`: 32 posterior samples per galaxy instead of 8 (the median of K draws carries
  Monte Carlo noise ~1.25 / sqrt(K) of the posterior width).
Each variant runs `specsr_keras.evaluation.evaluate` over the sets (reports under
`--out/<variant>/`), and the benchmark collects per set and Hα S/N bin: N2 NMAD and bias
(bootstrap 68 % intervals), estimate-vs-truth and calibration slopes, 68 / 95 % coverage, Hα
flux bias, and the verdict against the best competitor; plus the sampling speed of each
variant (posterior samples/s on one batch, compile excluded). Writes
benchmarks/results/posterior.json and posterior.md (a later run on the same weights and data
adds its variants to the file).

    python -m benchmarks.bench_posterior --model runs/default \\
        --data datasets/sim/heldout-euclid,datasets/sim/heldout-euclid-bright,... [--max-examples N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, machine, write_report

RESULTS = RESULTS_DIR / "posterior.json"
# Every setting is given, so a variant does not depend on the sampler saved with the model.
_DETERMINISTIC = {"eta": 0.0, "posterior_draws": False}
_DRAWS = {"eta": 1.0, "posterior_draws": True}
VARIANTS = {
    "amortised": {"amortised": True, "data_consistency": False, **_DETERMINISTIC},
    "guided": {"amortised": False, "data_consistency": True, **_DETERMINISTIC},
    "guided+amortised": {"amortised": True, "data_consistency": True, **_DETERMINISTIC},
    "guided + draws": {"amortised": False, "data_consistency": True, **_DRAWS},
    "guided+amortised + draws": {"amortised": True, "data_consistency": True, **_DRAWS},
    "guided+amortised + half prior": {"amortised": True, "data_consistency": True, "prior_scale": 0.5,
                                      **_DETERMINISTIC},
    "guided+amortised + draws + half prior": {"amortised": True, "data_consistency": True, "prior_scale": 0.5,
                                              **_DRAWS},
    "guided+amortised + draws + double prior": {"amortised": True, "data_consistency": True, "prior_scale": 2.0,
                                                **_DRAWS},
    "guided + draws + half prior": {"amortised": False, "data_consistency": True, "prior_scale": 0.5, **_DRAWS},
    "guided+amortised + draws + K32": {"amortised": True, "data_consistency": True, "samples": 32, **_DRAWS},
}
METHODS = ("specsr", "lowres_fit", "fit_population", "fit_faisst", "faisst", "constant", "ceiling")


def sampling_speed(model: str, changes: dict, rows: int = 64, repeats: int = 2) -> float:
    """Posterior samples per second of one variant on `rows` simulated Euclid galaxies."""
    from specsr_keras.evaluation.heldout import predictor_for
    from specsr_keras.simulate import simulate_galaxies

    predictor = predictor_for(model, "euclid_nisp_red", changes)
    galaxies = simulate_galaxies(rows, "euclid_nisp_red", seed=7)
    batch = {k: galaxies[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["instrument_id"] = np.full(rows, 1)
    predictor.generate(batch, seed=0)  # compile
    start = time.perf_counter()
    for seed in range(repeats):
        predictor.generate(batch, seed=seed + 1)
    return rows * predictor.samples * repeats / (time.perf_counter() - start)


def model_fingerprint(model: str) -> str:
    """sha1 of the file that identifies a model's weights (a run's models/superres.keras, a
    SavedModel's fingerprint.pb; the name itself for "baseline"): variants are merged only
    with earlier ones of the same weights, not of the same path."""
    path = Path(model)
    for candidate in (path / "models" / "superres.keras", path / "fingerprint.pb", path):
        if candidate.is_file():
            return hashlib.sha1(candidate.read_bytes()).hexdigest()
    return model


def collect(metrics: dict) -> dict:
    """Per set and S/N bin: the numbers of the comparison table."""
    out = {}
    for name, bins in metrics["bins"].items():
        out[name] = {}
        for label, b in bins["snr"].items():
            if not b["n"]:
                continue
            n2 = b["n2"]
            entry = {"n": b["n"], "verdict": b.get("n2_verdict", {})}
            for method in METHODS:
                if method in n2:
                    entry[method] = {k: n2[method][k] for k in ("nmad", "nmad_lo", "nmad_hi", "bias", "bias_lo",
                                                                 "bias_hi", "slope", "calibration_slope")}
            coverage = b["coverage"]["n2"].get("specsr", {})
            entry["specsr_coverage"] = {k: coverage.get(k) for k in ("68", "68_lo", "68_hi", "95", "95_lo", "95_hi")}
            ha = b["ha_flux"].get("specsr", {})
            entry["specsr_ha_bias"] = ha.get("bias")
            out[name][label] = entry
    return out


def markdown(report: dict) -> str:
    """The comparison table: one row per variant, set and S/N bin."""
    lines = ["| variant | set | S/N | N | specsr N2 NMAD | bias | slope | cal. slope | 68 % cov. | 95 % cov. | "
             "Hα bias | best competitor | its NMAD | verdict |", "|" + "---|" * 14]
    for variant, result in report["variants"].items():
        for name, bins in result["sets"].items():
            for label, e in bins.items():
                s = e.get("specsr", {})
                v = e.get("verdict") or {}
                best = v.get("best_competitor", "")
                outcome = ("beats" if v.get("beats") else "ties" if v.get("ties") else "loses") if v else "—"
                cover = {k: np.nan if v is None else v for k, v in e["specsr_coverage"].items()}
                ha_bias = np.nan if e["specsr_ha_bias"] is None else e["specsr_ha_bias"]
                lines.append(
                    f"| {variant} | {name} | {label} | {e['n']} | {s.get('nmad', np.nan):.3f} "
                    f"[{s.get('nmad_lo', np.nan):.3f}, {s.get('nmad_hi', np.nan):.3f}] | "
                    f"{s.get('bias', np.nan):+.3f} | {s.get('slope', np.nan):.2f} | "
                    f"{s.get('calibration_slope', np.nan):.2f} | {cover['68']:.2f} | {cover['95']:.2f} | "
                    f"{ha_bias:+.3f} | {best} | {e.get(best, {}).get('nmad', np.nan):.3f} | {outcome} |")
    speeds = ", ".join(f"{k}: {v['samples_per_s']:.1f}" for k, v in report["variants"].items())
    lines += ["", f"Posterior samples/s (Euclid, batch 64, this CPU): {speeds}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="held-out shard directories, comma-separated")
    parser.add_argument("--out", default="reports/variants")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    from specsr_keras.evaluation import evaluate

    dirs = [d for d in args.data.split(",") if d]
    report = {"machine": machine(), "model": args.model, "model_fingerprint": model_fingerprint(args.model),
              "data": dirs, "max_examples": args.max_examples, "variants": {}}
    if RESULTS.is_file():  # add to the variants of an earlier run on the same model and data
        earlier = json.loads(RESULTS.read_text())
        if all(earlier.get(k) == report[k] for k in ("model_fingerprint", "data", "max_examples")):
            report["variants"] = earlier["variants"]
    for variant in args.variants.split(","):
        changes = VARIANTS[variant]
        started = time.perf_counter()
        metrics = evaluate(args.model, dirs, Path(args.out) / variant.replace(" ", "").replace(",", "-"),
                           max_examples=args.max_examples, sampler=changes)
        report["variants"][variant] = {"sampler": changes, "seconds": round(time.perf_counter() - started, 1),
                                       "samples_per_s": sampling_speed(args.model, changes), "sets": collect(metrics)}
        write_report(RESULTS, report)
        RESULTS.with_suffix(".md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    main()
