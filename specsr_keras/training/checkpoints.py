"""Resumable checkpoints: model variables (incl. RNG states) + optimizer state + step.

A checkpoint is `ckpt-<step>.npz` (every variable, by position) and `ckpt-<step>.json`
(step, sha256 of the npz, free-form `extra`). The JSON is written last and atomically,
so a checkpoint without a matching JSON or with a wrong checksum is partial and skipped:
`latest()` falls back to the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np


@dataclass(frozen=True)
class Checkpoint:
    step: int
    weights_path: Path
    extra: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _state_variables(model: keras.Model) -> list:
    """Every variable whose value a resumed run needs: model (weights, RNG) then optimizer."""
    variables = list(model.variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return variables


class CheckpointManager:
    """Writes, validates and restores checkpoints in one directory, keeping the newest `keep`."""

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def save(self, model: keras.Model, step: int, extra: dict | None = None) -> Checkpoint:
        """Save all state of `model` (built and compiled) at global `step`."""
        weights_path = self.directory / f"ckpt-{step:08d}.npz"
        arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_state_variables(model))}
        tmp = weights_path.with_suffix(".npz.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, weights_path)
        meta = {"step": step, "sha256": _sha256(weights_path), "n_variables": len(arrays), "extra": extra or {}}
        _atomic_write_bytes(weights_path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
        self._prune()
        return Checkpoint(step, weights_path, meta["extra"])

    def checkpoints(self) -> list[Checkpoint]:
        """All complete, checksum-valid checkpoints, oldest first."""
        found = []
        for meta_path in sorted(self.directory.glob("ckpt-*.json")):
            weights_path = meta_path.with_suffix(".npz")
            try:
                meta = json.loads(meta_path.read_text())
                valid = weights_path.exists() and _sha256(weights_path) == meta["sha256"]
            except (OSError, ValueError, KeyError):
                valid = False
            if valid:
                found.append(Checkpoint(int(meta["step"]), weights_path, meta.get("extra", {})))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        valid = self.checkpoints()
        return valid[-1] if valid else None

    def restore(self, model: keras.Model, checkpoint: Checkpoint) -> None:
        """Load `checkpoint` into `model`, whose optimizer must already be built."""
        variables = _state_variables(model)
        with np.load(checkpoint.weights_path) as data:
            if len(data.files) != len(variables):
                raise ValueError(
                    f"{checkpoint.weights_path}: holds {len(data.files)} variables, "
                    f"the model has {len(variables)} (different preset or stage?)"
                )
            _assign(variables, data, checkpoint)

    def restore_weights(self, model: keras.Model, checkpoint: Checkpoint) -> None:
        """Load only the model's own variables of `checkpoint` (saved first, before the
        optimizer's) into `model`, e.g. a loaded `.keras` model without an optimizer."""
        with np.load(checkpoint.weights_path) as data:
            if len(data.files) < len(model.variables):
                raise ValueError(f"{checkpoint.weights_path}: holds {len(data.files)} variables, "
                                 f"the model alone has {len(model.variables)}")
            _assign(model.variables, data, checkpoint)

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.keep]:
            old.weights_path.unlink(missing_ok=True)
            old.weights_path.with_suffix(".json").unlink(missing_ok=True)


def _assign(variables: list, data, checkpoint: Checkpoint) -> None:
    """Assign the checkpoint's arrays to `variables` by position, checking every shape."""
    for i, variable in enumerate(variables):
        value = data[f"v{i:05d}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{checkpoint.weights_path}: variable {variable.path} has shape "
                f"{tuple(variable.shape)}, checkpoint {value.shape}"
            )
        variable.assign(value)
