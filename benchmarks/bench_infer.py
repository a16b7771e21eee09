"""Benchmark `specsr infer`: rows/s and peak RSS per catalog size with the baseline predictor,
the Dask scale-out on the smallest catalog, and infer's speed against its model's sampler.

For each size a simulated Euclid catalog is written with `simulate_catalog` (its rows/s
are recorded too), then inferred in a fresh subprocess, so the peak RSS (VmHWM) is that
run's alone. Bounded-memory streaming shows as an RSS ratio (largest / smallest size)
near 1 once both sizes exceed one chunk; the target is <= 1.2. Then the smallest catalog
runs on a local Dask cluster of 1 and of `--dask-workers` single-threaded workers (chunks
of DASK_CHUNK_ROWS rows, so every worker has several): rows/s and the speed-up between
them, which on a machine with as many free cores as workers should approach the worker
ratio. With `--model` (an exported SavedModel), the model's own speed against `specsr
infer`'s, in one run: the served `super_resolve` graph alone on batches of the catalog
(posterior samples/s, compile excluded) and `specsr infer` with that model on
MODEL_ROWS[0] and MODEL_ROWS[1] rows; the difference of the two runs gives infer's
steady-state galaxies/s (loading and compiling cancel), whose ratio to samples/s ÷ K is
the share of the sampler's speed that the whole command keeps (target >= 0.8). Those two
runs stream chunks of MODEL_CHUNK_ROWS rows (2 and 10 chunks), so their peak-RSS ratio
shows whether memory grows with the catalog when the super-resolver runs (target <= 1.2;
10^5 rows with the model would take hours on this CPU). Writes benchmarks/results/infer.json.

    python -m benchmarks.bench_infer [--sizes 10000,100000] [--dask-workers 2] [--data DIR]
        [--model saved_models/specsr/11]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, best_seconds, machine, run_child, write_report

RESULTS = RESULTS_DIR / "infer.json"
RSS_RATIO_TARGET = 1.2
CHUNK_ROWS, BATCH = 4096, 256
DASK_CHUNK_ROWS = 1024
# Catalog rows of the two `specsr infer` runs with a model, and rows per model call.
MODEL_ROWS = (128, 640)
MODEL_BATCH = 64
MODEL_CHUNK_ROWS = 64
INFER_RATIO_TARGET = 0.8


def child(catalog: str, run_dir: str, workers: str = "0", model: str = "baseline") -> None:
    """Run inference once (workers > 0: on a local Dask cluster of that many workers) and
    print {"rows", "seconds", "rows_per_s", "peak_rss_mb"} (this process's) as JSON."""
    from specsr_keras.inference.runner import InferConfig, run_inference

    workers = int(workers) or None
    if model == "baseline":
        config = InferConfig(chunk_rows=DASK_CHUNK_ROWS if workers else CHUNK_ROWS, batch=BATCH)
    else:
        config = InferConfig(chunk_rows=MODEL_CHUNK_ROWS, batch=MODEL_BATCH)
    started = time.perf_counter()
    summary = run_inference(catalog, model, run_dir, config, workers=workers, overwrite=True)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": summary.rows_in, "rows_out": summary.rows_out,
                      "seconds": round(seconds, 2),
                      "rows_per_s": round(summary.rows_in / seconds, 1),
                      "peak_rss_mb": round(peak_rss_kib() / 1024, 1)}))


def peak_rss_kib() -> int:
    """Peak resident memory of this process [KiB]: VmHWM, which (unlike ru_maxrss) does
    not carry over the parent's peak across fork + exec; ru_maxrss where there is no /proc."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def catalog_for(size: int, data_dir: Path) -> tuple[Path, float | None]:
    """A simulated catalog of `size` rows in data_dir (reused if there); simulate rows/s."""
    from astropy.io import fits

    from specsr_keras.simulate.catalog import simulate_catalog

    path = data_dir / f"bench_{size}.fits"
    if path.exists() and fits.getheader(path, 1)["NAXIS2"] == size:
        return path, None
    result = simulate_catalog(size, "euclid", path, seed=size, workers=2)
    return path, size / result["seconds"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated row counts.")
    parser.add_argument("--dask-workers", type=int, default=2, help="Workers of the Dask comparison (0: skip).")
    parser.add_argument("--data", type=Path, help="Keep/reuse catalogs here (default: temp).")
    parser.add_argument("--model", help="Also compare this SavedModel's sampler with `specsr infer` on it.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", nargs=2, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    if args.sampler:
        print(json.dumps(sampler_speed(*args.sampler)))
        return {}

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data or Path(scratch)
        data_dir.mkdir(parents=True, exist_ok=True)
        runs, catalogs = [], []
        for size in sizes:
            catalog, simulate_rate = catalog_for(size, data_dir)
            catalogs.append(catalog)
            run_dir = Path(scratch) / f"run_{size}"
            run = run_child("benchmarks.bench_infer", ["--child", str(catalog), str(run_dir)])
            run["simulate_rows_per_s"] = simulate_rate and round(simulate_rate, 1)
            runs.append(run)
            print(f"{size:>8} rows: {run['rows_per_s']:8.1f} rows/s, "
                  f"peak RSS {run['peak_rss_mb']:7.1f} MB")
        dask = dask_comparison(catalogs[0], args.dask_workers, Path(scratch))
        model = args.model and model_throughput(args.model, data_dir, Path(scratch))
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    report = {"benchmark": "specsr infer, baseline predictor, single process (model: the SavedModel vs its sampler)",
              "chunk_rows": CHUNK_ROWS, "batch": BATCH, "runs": runs,
              "rss_ratio_largest_to_smallest": round(ratio, 3),
              "rss_ratio_target": RSS_RATIO_TARGET, "dask": dask, "model": model, "machine": machine()}
    print(f"RSS ratio {ratio:.3f} (target <= {RSS_RATIO_TARGET})")
    write_report(args.out, report)
    return report


def dask_comparison(catalog: Path, workers: int, scratch: Path) -> dict | None:
    """rows/s of the catalog on local Dask clusters of 1 and `workers` workers, and their ratio."""
    if workers < 2:
        return None
    runs = {}
    for n in (1, workers):
        runs[n] = run_child("benchmarks.bench_infer", ["--child", str(catalog), str(scratch / f"dask_{n}"), str(n)])
        print(f"Dask, {n} worker(s): {runs[n]['rows_per_s']:8.1f} rows/s")
    speedup = runs[workers]["rows_per_s"] / runs[1]["rows_per_s"]
    print(f"Dask speed-up {workers} vs 1 worker(s): {speedup:.2f}")
    return {"chunk_rows": DASK_CHUNK_ROWS, "rows": runs[1]["rows"],
            "runs": [{"workers": n, **run} for n, run in runs.items()],
            "speedup": round(speedup, 3), "workers": workers}


def sampler_speed(model: str, catalog: Path, rows: int = MODEL_BATCH, repeats: int = 3) -> dict:
    """Posterior samples/s of the SavedModel's `super_resolve` graph alone on the catalog's
    first `rows` rows (their z prior given; compile excluded), and its K."""
    from specsr_keras.export.predictor import SavedModelPredictor
    from specsr_keras.inference.catalog import open_catalog, prepare_rows

    predictor = SavedModelPredictor(model)
    batch = prepare_rows(open_catalog(catalog).read(0, rows), predictor.instrument).batch
    seconds = best_seconds(lambda: predictor.call_graph(batch, batch["z_prior"], seed=0), repeats)
    return {"rows": rows, "samples": predictor.samples, "seconds": round(seconds, 3),
            "samples_per_s": round(rows * predictor.samples / seconds, 1)}


def model_throughput(model: str, data_dir: Path, scratch: Path) -> dict:
    """The SavedModel's sampler speed and `specsr infer`'s steady-state galaxies/s, one run."""
    small, large = (catalog_for(size, data_dir)[0] for size in MODEL_ROWS)
    runs = [run_child("benchmarks.bench_infer", ["--child", str(catalog), str(scratch / f"model_{i}"), "0", model])
            for i, catalog in enumerate((small, large))]
    steady = (runs[1]["rows"] - runs[0]["rows"]) / (runs[1]["seconds"] - runs[0]["seconds"])
    sampler = run_child("benchmarks.bench_infer", ["--sampler", model, str(small)])
    ratio = steady / (sampler["samples_per_s"] / sampler["samples"])
    rss_ratio = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    print(f"{model}: sampler {sampler['samples_per_s']:.1f} samples/s (K = {sampler['samples']}), "
          f"infer {steady:.2f} galaxies/s steady: ratio {ratio:.2f} (target >= {INFER_RATIO_TARGET}); "
          f"peak RSS {MODEL_ROWS[1]} / {MODEL_ROWS[0]} rows {rss_ratio:.3f} (target <= {RSS_RATIO_TARGET})")
    return {"model": model, "batch": MODEL_BATCH, "chunk_rows": MODEL_CHUNK_ROWS, "infer_runs": runs,
            "sampler": sampler, "infer_galaxies_per_s": round(steady, 2), "infer_to_sampler_ratio": round(ratio, 3),
            "target": INFER_RATIO_TARGET, "rss_ratio_largest_to_smallest": round(rss_ratio, 3)}


if __name__ == "__main__":
    main()
