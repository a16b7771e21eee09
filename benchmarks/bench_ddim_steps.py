"""Speed/accuracy of super-resolution vs sampler steps: spectra/s and log([NII]/Hα) NMAD.

A fixed held-out set (`--n` Euclid galaxies, seed 2024, `snr_weight_power` 2 so the bright
bins are populated) is simulated in memory (`simulate_galaxies`, deterministic), and the
trained super-resolver samples it with DDIM at each of `--ddim-steps` and DPM-Solver++(2M)
at each of `--dpm-steps` (the model's `Sampler` with another kind and steps, K samples per
galaxy, the same seeds, data-consistent as the model's sampler says). Per setting:
posterior samples/s including the in-graph line fits (`SuperResolver.generate`; the first
batch, which compiles, excluded), and the N2 = log([NII]6585/Hα) bias/NMAD [dex] and 68/95 % interval
coverage (`evaluation.metrics`), over all galaxies and at Hα S/N >= 10. Also the
simulator's galaxies/s. Writes benchmarks/results/ddim_steps.json and ddim_steps.png.

The model: `--model` (a training run directory or a superres.keras file), else the
shipped saved_models/specsr/run, else demo/runs/quick; with none of them the model part
is skipped (the JSON says so).

    python -m benchmarks.bench_ddim_steps [--model PATH] [--n 256] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, ROOT, machine, run_child, write_report

RESULTS = RESULTS_DIR / "ddim_steps.json"
DEFAULT_MODELS = (ROOT / "saved_models" / "specsr" / "run", ROOT / "demo" / "runs" / "quick")
HELDOUT_SEED = 2024
SNR_WEIGHT_POWER = 2.0
INSTRUMENT = "euclid_nisp_red"
PREDICTOR_KEYS = ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior", "instrument_id")
TRUTH_KEYS = ("z", "n2", "ha_flux", "nii_6585_flux", "ha_snr")
MIN_SNR = 10.0


def find_model(model: str | None) -> Path | None:
    """`model` if given (must exist), else the first default run that holds a super-resolver."""
    if model:
        if not Path(model).exists():
            raise FileNotFoundError(f"{model}: no such model")
        return Path(model)
    return next((m for m in DEFAULT_MODELS if (m / "models" / "superres.keras").is_file()), None)


def n2_metrics(truth: dict, columns: dict, mask) -> dict:
    """N2 error stats [dex] and interval coverage of the rows in `mask`."""
    from specsr_keras.evaluation.metrics import coverage, error_of, error_stats

    rows = {k: np.asarray(v)[mask] for k, v in columns.items()}
    stats = error_stats(error_of("n2", rows["n2_p50"], truth["n2"][mask]))
    cover = coverage(truth["n2"][mask], rows, "n2")
    return {**stats, "coverage_68": cover["68"], "coverage_95": cover["95"]}


def run_setting(model, model_id: str, galaxies: dict, sampler: str, steps: int, samples: int,
                batch: int) -> dict:
    """Generate and measure the held-out set with one sampler/step count; timings and metrics.

    The data-consistent posterior (`SuperResolver.generate`: sampling, data step and the
    per-sample line fits in one compiled call) is timed as a whole."""
    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor
    from specsr_keras.measure.columns import sample_columns

    settings = model.sampler.replace(kind=sampler, steps=steps, samples=samples, eta=0.0, posterior_draws=False)
    predictor = SuperResolutionPredictor(model, INSTRUMENT, model_id, settings)
    n = len(galaxies["z"])
    parts, seconds = [], []
    for number, start in enumerate(range(0, n, batch)):
        rows = {k: galaxies[k][start:start + batch] for k in PREDICTOR_KEYS}
        started = time.perf_counter()
        generated, flags = predictor.generate(rows, seed=HELDOUT_SEED + number)
        seconds.append(time.perf_counter() - started)
        parts.append(sample_columns(generated, flags) | {"ok_fraction": generated["ok"].mean(axis=1)})
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    warm = slice(1, None) if len(seconds) > 1 else slice(None)  # the first batch compiles
    warm_rows = n - batch if len(seconds) > 1 else n
    truth = {k: np.asarray(galaxies[k], float) for k in TRUTH_KEYS}
    return {
        "sampler": sampler, "steps": steps, "network_calls": steps + 1,
        "spectra_per_s": round(warm_rows * samples / sum(seconds[warm]), 2),
        "galaxies_per_s_with_fits": round(warm_rows / sum(seconds[warm]), 2),
        "first_batch_seconds": round(seconds[0], 2),
        "fit_ok_fraction": float(np.mean(columns["ok_fraction"])),
        "n2_all": n2_metrics(truth, columns, np.ones(n, bool)),
        "n2_snr_ge_10": n2_metrics(truth, columns, truth["ha_snr"] >= MIN_SNR),
    }


def simulate_rate(n: int = 512) -> float:
    """Galaxies/s of the simulator (Euclid, flux-limited, images included)."""
    from specsr_keras.simulate import simulate_galaxies

    started = time.perf_counter()
    simulate_galaxies(n, INSTRUMENT, seed=1)
    return n / (time.perf_counter() - started)


def child(args) -> dict:
    """All measurements in this process's Keras backend."""
    import keras

    import specsr_keras.models  # noqa: F401  (registers the specsr classes)
    from specsr_keras.instruments import get_instrument
    from specsr_keras.simulate import simulate_galaxies

    report = {"backend": keras.backend.backend(), "simulate_galaxies_per_s": round(simulate_rate(), 1)}
    path = find_model(args.model)
    if path is None:
        return report | {"skipped": "no model: pass --model, or train saved_models/specsr/run or demo/runs/quick"}
    started = time.perf_counter()
    galaxies = simulate_galaxies(args.n, INSTRUMENT, seed=HELDOUT_SEED, snr_weight_power=SNR_WEIGHT_POWER)
    galaxies["instrument_id"] = np.full(args.n, get_instrument(INSTRUMENT).instrument_id)
    report["heldout_simulate_seconds"] = round(time.perf_counter() - started, 2)
    file = path / "models" / "superres.keras" if path.is_dir() else path
    model = keras.saving.load_model(file, safe_mode=True)
    settings = [("ddim", int(s)) for s in args.ddim_steps.split(",")]
    settings += [("dpm++2m", int(s)) for s in args.dpm_steps.split(",") if s]
    report["model"] = str(path)
    report["settings"] = [run_setting(model, str(path), galaxies, sampler, steps, args.samples, args.batch)
                          for sampler, steps in settings]
    return report


def plot(report: dict, path: Path) -> None:
    """N2 NMAD (all, S/N >= 10) and 68 % coverage (all) against spectra/s, one colour per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (nmad_axis, coverage_axis) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    for sampler, colour in (("ddim", "C0"), ("dpm++2m", "C3")):
        rows = [s for s in report["settings"] if s["sampler"] == sampler]
        if not rows:
            continue
        speed = [s["spectra_per_s"] for s in rows]
        for key, style, label in (("n2_all", "-o", "all"), ("n2_snr_ge_10", ":s", "S/N>=10")):
            nmad_axis.plot(speed, [s[key]["nmad"] for s in rows], style, color=colour, label=f"{sampler}, {label}")
        coverage_axis.plot(speed, [s["n2_all"]["coverage_68"] for s in rows], "-o", color=colour, label=sampler)
        for s in rows:
            for axis, value in ((nmad_axis, s["n2_all"]["nmad"]), (coverage_axis, s["n2_all"]["coverage_68"])):
                axis.annotate(str(s["steps"]), (s["spectra_per_s"], value), textcoords="offset points",
                              xytext=(4, 4), fontsize=8, color=colour)
    coverage_axis.axhline(0.68, color="grey", lw=0.8, ls="--")
    coverage_axis.set_xscale("log")
    coverage_axis.set_xlabel(f"super-resolved spectra / s ({report['backend']}, {machine()['cpus']} CPUs)")
    nmad_axis.set_ylabel("log([NII]/Hα) NMAD [dex]")
    coverage_axis.set_ylabel("68 % interval coverage (all)")
    nmad_axis.set_title(f"speed vs accuracy, labels = steps ({report['galaxies']} galaxies x "
                        f"{report['samples']} samples)", fontsize=9)
    nmad_axis.legend(fontsize=8)
    coverage_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Run directory or superres.keras (default: shipped, else demo run).")
    parser.add_argument("--n", type=int, default=256, help="Held-out galaxies.")
    parser.add_argument("--samples", type=int, default=4, help="Diffusion samples per galaxy.")
    parser.add_argument("--batch", type=int, default=128, help="Galaxies per sampling call.")
    parser.add_argument("--ddim-steps", default="5,10,20,50")
    parser.add_argument("--dpm-steps", default="5,10,20", help="DPM++2M step counts ('' = none).")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--quick", action="store_true", help="Smoke run: 16 galaxies, 2 samples, steps 2 and 4.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.samples, args.batch, args.ddim_steps, args.dpm_steps = 16, 2, 8, "2,4", "2"
    if args.child:
        print(json.dumps(child(args)))
        return {}
    forwarded = ["--n", str(args.n), "--samples", str(args.samples), "--batch", str(args.batch),
                 "--ddim-steps", args.ddim_steps, "--dpm-steps", args.dpm_steps,
                 *(["--model", str(Path(args.model).resolve())] if args.model else []), "--child"]
    report = {"benchmark": "super-resolution speed vs accuracy per sampler and step count",
              "galaxies": args.n, "samples": args.samples, "batch": args.batch, "instrument": INSTRUMENT,
              "heldout": {"seed": HELDOUT_SEED, "snr_weight_power": SNR_WEIGHT_POWER},
              **run_child("benchmarks.bench_ddim_steps", forwarded, args.backend), "machine": machine()}
    if "skipped" in report:
        print(f"ddim_steps: skipped ({report['skipped']})")
    else:
        png = args.out.with_suffix(".png")
        report["plot"] = png.name  # next to the JSON
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(report, png)
        for s in report["settings"]:
            print(f"{s['sampler']:>8} {s['steps']:>3} steps: {s['spectra_per_s']:8.1f} spectra/s, "
                  f"N2 NMAD {s['n2_snr_ge_10']['nmad']:.3f} (S/N>=10), {s['n2_all']['nmad']:.3f} (all), "
                  f"68% coverage {s['n2_snr_ge_10']['coverage_68']:.2f}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
