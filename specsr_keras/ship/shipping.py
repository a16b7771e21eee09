"""Ship a trained model inside the package tree: `saved_models/<name>/run/` (the Keras
models for fine-tuning and multi-instrument inference, no optimizer state) next to the
exported SavedModel `saved_models/<name>/<version>/`, its held-out evaluation reports
(`evaluation/<report>/`: report.md, metrics.json, figures) and `MODEL_CARD.md`."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import keras

import specsr_keras.models  # noqa: F401  (registers the model classes for loading)
from specsr_keras.data.shards import read_manifest
from specsr_keras.export.signatures import SIGNATURES_FILE
from specsr_keras.ship.model_card import MODEL_NAMES, data_directories, manifest_copy, write_model_card

RUN_FILES = ("config.toml", "run.json", "validation.json")
REPORT_FILES = ("report.md", "metrics.json")  # report.html repeats the figures inline


def copy_inference_run(run_dir: Path, dest: Path) -> Path:
    """Copy the run's config, summaries, final models (optimizer state dropped) and the
    manifests of its training data (for the model card) to dest."""
    run_dir, dest = Path(run_dir), Path(dest)
    missing = [n for n in MODEL_NAMES if not (run_dir / "models" / f"{n}.keras").is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no final models {missing}; has the run finished?")
    _empty_dir(dest / "models")  # a model an earlier ship left there is not this run's
    _empty_dir(dest / "data_manifests")
    for name in RUN_FILES:
        shutil.copy2(run_dir / name, dest / name)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    for _, directory, _ in data_directories(config):
        copy = manifest_copy(dest, directory)
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(json.dumps(read_manifest(directory), indent=1))
    for name in MODEL_NAMES:  # loaded uncompiled, so saved without optimizer state
        keras.saving.load_model(run_dir / "models" / f"{name}.keras", compile=False).save(
            dest / "models" / f"{name}.keras")
    return dest


def point_export_at(saved_model: Path, run_copy: Path) -> None:
    """Make the export's signatures.json name its run by a path relative to the SavedModel
    (e.g. "../run"), so that `specsr serving-check` finds it wherever the tree is checked out."""
    path = Path(saved_model) / SIGNATURES_FILE
    document = json.loads(path.read_text())
    document["metadata"]["run"] = os.path.relpath(run_copy, saved_model)
    path.write_text(json.dumps(document, indent=1))


def copy_report(report_dir: Path, dest: Path) -> Path:
    """Copy a `specsr evaluate` report (Markdown, metrics, figures) to dest."""
    report_dir, dest = Path(report_dir), Path(dest)
    if not (report_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{report_dir}: no metrics.json; run `specsr evaluate` first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        shutil.copy2(report_dir / name, dest / name)
    if (dest / "figures").is_dir():
        shutil.rmtree(dest / "figures")  # an earlier report's figures are not this report's
    if (report_dir / "figures").is_dir():
        shutil.copytree(report_dir / "figures", dest / "figures")
    return dest


def _empty_dir(path: Path) -> None:
    """Make `path` an empty directory (removing what it held)."""
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def ship_model(run_dir: Path, name: str, version: int, reports: list[Path],
               root: Path = Path("saved_models")) -> dict[str, Path]:
    """Copy the run next to the export `root/name/version` and write its model card."""
    home = Path(root) / name
    saved_model = home / str(version)
    if not (saved_model / SIGNATURES_FILE).is_file():
        raise FileNotFoundError(f"{saved_model}: no export there; run `specsr export` first")
    run_copy = copy_inference_run(run_dir, home / "run")
    point_export_at(saved_model, run_copy)
    report_copies = [copy_report(r, home / "evaluation" / Path(r).name) for r in reports]
    card = write_model_card(run_copy, report_copies, home / "MODEL_CARD.md", saved_model=saved_model,
                            title=f"{name}/{version}")
    return {"run": run_copy, "saved_model": saved_model, "card": card}
