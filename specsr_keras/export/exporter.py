"""`export_run`: a training run -> `saved_models/<name>/<version>/` for TensorFlow Serving.

Backend choice. A SavedModel is a TensorFlow artefact, so the export always runs under
the TensorFlow backend: the `.keras` files of a run are backend-neutral (config +
weights, loaded with safe_mode=True), so they load unchanged under TF whichever backend
trained them. When the calling process is not TensorFlow (KERAS_BACKEND=jax), or the
run was trained on another backend (`run.json` "backend"), `export_run` re-runs itself in
a subprocess with KERAS_BACKEND=tensorflow (`python -m specsr_keras.export.exporter`), so
the export sees a clean TF process (no JAX state, no dtype policy left over from
training) and this module never needs jax2tf. Only `specsr_keras/export/` imports
TensorFlow.

Layout written (TF Serving's model-server layout):

    saved_models/models.config               model_config_list naming every exported model
    saved_models/<name>/<version>/saved_model.pb, variables/, assets/
    saved_models/<name>/<version>/signatures.json   endpoints (inputs/outputs with shapes
                                             and units) + export metadata

A version is never overwritten: the SavedModel is written to a hidden temporary directory
next to it (TF Serving ignores non-numeric names) and renamed into place when complete;
an existing version is refused. `models.config` is rewritten from what is on disk.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import specsr_keras
from specsr_keras.export.signatures import (
    ANOMALY_WEIGHTS,
    DEFAULT_ENDPOINT,
    ENDPOINTS,
    SIGNATURES_FILE,
    resolve_endpoints,
)
from specsr_keras.instruments import ENCODER_GRID, TARGET_GRID, get_instrument
from specsr_keras.physics import N2_RANGE
from specsr_keras.reporting import Reporter
from specsr_keras.units import FLUX

MODEL_FILES = ("superres", "contrastive")
MODELS_CONFIG = "models.config"
# Where `docker run -v $PWD/saved_models:/models` mounts the export root in the container.
SERVING_ROOT = "/models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def version_dir(out: str | Path, name: str, version: int) -> Path:
    return Path(out) / name / str(int(version))


def check_target(out: str | Path, name: str, version: int) -> Path:
    """The version directory to write; ValueError / FileExistsError (one line) if not allowed."""
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = version_dir(out, name, version)
    if target.exists():
        taken = sorted(int(p.name) for p in target.parent.iterdir() if p.name.isdigit())
        raise FileExistsError(
            f"{target} exists: exported versions are never overwritten; "
            f"use --version {taken[-1] + 1}"
        )
    return target


def read_run(run_dir: str | Path) -> dict:
    """run.json of a finished run (FileNotFoundError if the run or a model is missing)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no run.json (not a finished training run)")
    missing = [
        f"models/{m}.keras"
        for m in MODEL_FILES
        if not (run_dir / "models" / f"{m}.keras").is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing {', '.join(missing)}")
    return json.loads((run_dir / "run.json").read_text())


def export_run(
    run_dir: str | Path,
    *,
    name: str = "specsr",
    version: int,
    out: str | Path = "saved_models",
    instrument: str = "euclid_nisp_red",
    sampler: dict | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Export the run's super-resolver and aligner; returns a summary dict.

    sampler: changes to the super-resolver's own `Sampler` settings (e.g. {"steps": 20};
    None values are ignored), saved in signatures.json. Summary: path, size_bytes, seconds,
    endpoints, backend_trained_on, subprocess (bool).
    """
    import keras

    reporter = reporter or Reporter()
    run = read_run(run_dir)
    check_target(out, name, version)
    instrument = get_instrument(instrument).name
    trained_on = run.get("backend", "unknown")
    options = dict(name=name, version=int(version), out=str(out), instrument=instrument, sampler=sampler or {})
    if keras.backend.backend() == "tensorflow" and trained_on in ("tensorflow", "unknown"):
        summary = _export_here(str(run_dir), run, **options)
        summary["subprocess"] = False
    else:
        reporter.info(
            f"exporting under TensorFlow in a subprocess (run trained on {trained_on}, "
            f"this process: {keras.backend.backend()})"
        )
        summary = _export_subprocess(str(run_dir), options)
        summary["subprocess"] = True
    write_models_config(out)
    reporter.info(
        f"exported {summary['path']} ({summary['size_bytes'] / 1e6:.1f} MB, "
        f"{summary['seconds']:.0f} s)"
    )
    return summary


def _export_subprocess(run_dir: str, options: dict) -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = [sys.executable, "-m", "specsr_keras.export.exporter", run_dir, json.dumps(options)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ValueError(f"export subprocess failed: {lines[-1] if lines else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_models(run_dir: str | Path) -> dict:
    """The run's super-resolver and aligner (safe_mode=True) in this backend."""
    import keras

    import specsr_keras.models  # noqa: F401  (registers the specsr classes)

    return {
        m: keras.saving.load_model(Path(run_dir) / "models" / f"{m}.keras", safe_mode=True)
        for m in MODEL_FILES
    }


def _export_here(run_dir: str, run: dict, *, name, version, out, instrument, sampler: dict) -> dict:
    """Build the serving graph and write the SavedModel (TensorFlow backend only)."""
    import keras

    from specsr_keras.export.graph import ServingGraph

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("_export_here needs KERAS_BACKEND=tensorflow")
    started = time.perf_counter()
    target = check_target(out, name, version)
    inst = get_instrument(instrument)
    models = load_models(run_dir)
    settings = models["superres"].sampler.for_instrument(inst.name).replace(**sampler)
    graph = ServingGraph(models["superres"], models["contrastive"], inst, settings)
    sizes = {"L": inst.bin_edges.size - 1, "K": settings.samples, "D": models["contrastive"].embedding_dim}
    endpoints = resolve_endpoints(sizes)

    # Endpoints are traced once here and handed to the archive as traced tf.functions
    # (its fast path): given input signatures instead, write_out traces every endpoint
    # twice. The variables they use are tracked by add_endpoint; track(model) on top
    # would make write_out walk every Keras layer (minutes on this CPU, nothing gained).
    functions = graph.trace(endpoints)
    archive = keras.export.ExportArchive()
    for endpoint in (DEFAULT_ENDPOINT, *(e for e in ENDPOINTS if e != DEFAULT_ENDPOINT)):
        archive.add_endpoint(endpoint, functions[endpoint])

    temporary = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.parent.mkdir(parents=True, exist_ok=True)
    try:
        archive.write_out(str(temporary), verbose=False)
        metadata = _metadata(run_dir, run, name=name, version=version, inst=inst, sampling=settings, sizes=sizes)
        document = {
            "format": "specsr-savedmodel/1",
            "default_endpoint": DEFAULT_ENDPOINT,
            "signature_aliases": {"serving_default": DEFAULT_ENDPOINT},
            "endpoints": endpoints,
            "metadata": metadata,
        }
        (temporary / SIGNATURES_FILE).write_text(json.dumps(document, indent=1))
        if target.exists():  # someone else wrote it meanwhile
            raise FileExistsError(f"{target} exists: exported versions are never overwritten")
        os.rename(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    return {
        "path": str(target),
        "size_bytes": size,
        "seconds": round(time.perf_counter() - started, 1),
        "endpoints": list(ENDPOINTS),
        "backend_trained_on": run.get("backend", "unknown"),
    }


def _metadata(run_dir, run, *, name, version, inst, sampling, sizes) -> dict:
    import keras
    import tensorflow as tf

    from specsr_keras.spectral import lines

    return {
        "specsr_version": specsr_keras.__version__,
        "name": name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": str(Path(run_dir).resolve()),
        "preset": run.get("preset"),
        "backend_trained_on": run.get("backend", "unknown"),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "instrument": inst.describe(),
        "lowres_bin_edges": [float(e) for e in inst.bin_edges],
        "target_grid": TARGET_GRID.describe(),
        "encoder_grid": ENCODER_GRID.describe(),
        "flux_unit": FLUX,
        "sizes": sizes,
        "sampler": sampling.get_config(),
        "samples": sampling.samples,
        "sampler_description": sampling.describe(),
        "seed_convention": "per row: noise kind i (Sampler.noise_shapes order) = "
        "stateless_normal((K, *shape), seed=[seed[b] + i, 0])",
        "anomaly": {
            **ANOMALY_WEIGHTS,
            "formula": "disagreement_weight * (1 - cos) + reconstruction_weight * "
            "ln(max(reconstruction_chi2, 1))",
            "calibrated": False,
        },
        "line_estimator": {
            "kind": "per-sample least-squares fit of Hα, [NII], [SII], Hα absorption and a linear "
            "continuum (spectral/lines.py; the same code as specsr infer)",
            "max_dv_kms": lines.MAX_DV_KMS,
            "absorption_sigma_rest": lines.ABSORPTION_SIGMA_REST,
            "n2_range": list(N2_RANGE),
        },
    }


def write_models_config(out: str | Path, serving_root: str = SERVING_ROOT) -> Path:
    """Rewrite `<out>/models.config` naming every model directory holding a SavedModel version."""
    out = Path(out)
    names = sorted(
        d.name
        for d in out.iterdir()
        if d.is_dir()
        and any(v.name.isdigit() and (v / "saved_model.pb").is_file() for v in d.iterdir())
    )
    blocks = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{serving_root}/{n}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for n in names
    )
    path = out / MODELS_CONFIG
    path.write_text(f"model_config_list {{\n{blocks}}}\n")
    return path


def _main(argv: list[str]) -> None:
    """Subprocess entry: `python -m specsr_keras.export.exporter RUN_DIR OPTIONS_JSON`."""
    run_dir, options = argv[0], json.loads(argv[1])
    summary = _export_here(run_dir, read_run(run_dir), **options)
    print(json.dumps(summary))


if __name__ == "__main__":
    _main(sys.argv[1:])
