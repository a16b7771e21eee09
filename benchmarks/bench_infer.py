"""Benchmark `specsr infer` with the baseline predictor: rows/s and peak RSS per catalog size,
and the Dask scale-out on the smallest catalog.

For each size a simulated Euclid catalog is written with `simulate_catalog` (its rows/s
are recorded too), then inferred in a fresh subprocess, so the peak RSS (VmHWM) is that
run's alone. Bounded-memory streaming shows as an RSS ratio (largest / smallest size)
near 1 once both sizes exceed one chunk; the target is <= 1.2. Then the smallest catalog
runs on a local Dask cluster of 1 and of `--dask-workers` single-threaded workers (chunks
of DASK_CHUNK_ROWS rows, so every worker has several): rows/s and the speed-up between
them, which on a machine with as many free cores as workers should approach the worker
ratio. Writes benchmarks/results/infer.json.

    python -m benchmarks.bench_infer [--sizes 10000,100000] [--dask-workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, machine, run_child, write_report

RESULTS = RESULTS_DIR / "infer.json"
RSS_RATIO_TARGET = 1.2
CHUNK_ROWS, BATCH = 4096, 256
DASK_CHUNK_ROWS = 1024


def child(catalog: str, run_dir: str, workers: str = "0") -> None:
    """Run inference once (workers > 0: on a local Dask cluster of that many workers) and
    print {"rows", "seconds", "rows_per_s", "peak_rss_mb"} (this process's) as JSON."""
    from specsr_keras.inference.runner import InferConfig, run_inference

    workers = int(workers) or None
    config = InferConfig(chunk_rows=DASK_CHUNK_ROWS if workers else CHUNK_ROWS, batch=BATCH)
    started = time.perf_counter()
    summary = run_inference(catalog, "baseline", run_dir, config, workers=workers, overwrite=True)
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
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
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
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    report = {"benchmark": "specsr infer, baseline predictor, single process",
              "chunk_rows": CHUNK_ROWS, "batch": BATCH, "runs": runs,
              "rss_ratio_largest_to_smallest": round(ratio, 3),
              "rss_ratio_target": RSS_RATIO_TARGET, "dask": dask, "machine": machine()}
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


if __name__ == "__main__":
    main()
