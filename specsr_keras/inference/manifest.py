"""The run directory of `specsr infer` and its manifest: what makes reruns idempotent.

Layout of RUN/: `manifest.json` (input fingerprint, model, config, one entry per finished
chunk), `chunks/chunk_<index>.fits` (HDU RESULTS and HDU QUARANTINE of one chunk),
and after the merge `results.fits` and `quarantine.fits`. Every file is written to a
temporary name and renamed, so a killed run leaves either a whole file or none. A chunk
counts as done only once the manifest lists it; its file name is fixed by its index, so
a redone chunk replaces its file and never duplicates rows. Each chunk's entry records
the size and sha256 of its file; a resumed run recomputes every chunk whose file is missing
or differs (`Manifest.damaged_chunks`), and the merge refuses such files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import specsr_keras
from specsr_keras.data.fits_table import atomic_path

__all__ = ["MANIFEST_NAME", "Manifest", "chunk_path", "clear_run", "file_checksum", "input_fingerprint"]

MANIFEST_NAME = "manifest.json"
CHUNK_DIR = "chunks"
RESULTS_NAME = "results.fits"
QUARANTINE_NAME = "quarantine.fits"
MANIFEST_VERSION = 1
# Bytes hashed at each end of an input file for its fingerprint.
_HASH_BYTES = 1 << 20


def chunk_path(run_dir, index: int) -> Path:
    """Output file of chunk `index`."""
    return Path(run_dir) / CHUNK_DIR / f"chunk_{index:06d}.fits"


def file_checksum(path) -> dict:
    """{"bytes", "sha256"} of a whole file (a chunk file: MBs, read once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def _head_tail_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        digest.update(handle.read(_HASH_BYTES))
        if size > _HASH_BYTES:
            handle.seek(max(size - _HASH_BYTES, _HASH_BYTES))
            digest.update(handle.read())
    return digest.hexdigest()


def input_fingerprint(catalog) -> dict:
    """Cheap identity of the input: size, mtime and sha256 of the first and last MiB of a
    table file, or of the sorted (name, size, mtime) listing in directory mode."""
    if catalog.kind == "files":
        digest = hashlib.sha256()
        for name in catalog.files:
            stat = os.stat(name)
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return {"kind": "files", "n_files": len(catalog.files),
                "listing_sha256": digest.hexdigest()}
    path = Path(catalog.path)
    stat = path.stat()
    return {"kind": catalog.kind, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_tail_sha256": _head_tail_sha256(path)}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary sibling, fsync, and rename over `path`."""
    tmp = atomic_path(path)
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def clear_run(run_dir) -> None:
    """Remove what `specsr infer` wrote in run_dir (and nothing else)."""
    run_dir = Path(run_dir)
    for name in (MANIFEST_NAME, RESULTS_NAME, QUARANTINE_NAME):
        (run_dir / name).unlink(missing_ok=True)
    remove_stale_temporaries(run_dir)
    for path in (run_dir / CHUNK_DIR).glob("chunk_*.fits"):
        path.unlink()


def remove_stale_temporaries(run_dir) -> None:
    """Delete half-written files a killed run left (only call when no run is active)."""
    run_dir = Path(run_dir)
    for directory in (run_dir, run_dir / CHUNK_DIR):
        for path in directory.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)


class Manifest:
    """manifest.json of a run: `identity` (input, model, config) and finished `chunks`."""

    def __init__(self, run_dir, data: dict):
        self.run_dir = Path(run_dir)
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    @classmethod
    def load(cls, run_dir) -> Manifest | None:
        """The run's manifest, or None if there is none yet."""
        path = Path(run_dir) / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            return cls(run_dir, json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: unreadable manifest ({exc}); rerun with --overwrite") \
                from None

    @classmethod
    def open_or_create(cls, run_dir, identity: dict, n_chunks: int, n_units: int) -> Manifest:
        """Resume the run in run_dir if it has the same identity, else start one.

        Raises ValueError naming what differs when run_dir holds another run.
        """
        existing = cls.load(run_dir)
        if existing is not None:
            recorded = existing.data["identity"]
            differs = [key for key in identity if recorded.get(key) != identity[key]]
            if differs:
                raise ValueError(
                    f"{run_dir} holds a run with a different {', '.join(differs)}; "
                    "use --overwrite to start over or choose another --out")
            return existing
        Path(run_dir, CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        manifest = cls(run_dir, {"manifest_version": MANIFEST_VERSION,
                                 "specsr_version": specsr_keras.__version__, "identity": identity,
                                 "n_chunks": n_chunks, "n_units": n_units, "chunks": {},
                                 "merged": None})
        manifest.save()
        return manifest

    @property
    def n_chunks(self) -> int:
        return self.data["n_chunks"]

    @property
    def done(self) -> dict[int, dict]:
        """Finished chunks: index -> summary (rows_in, rows_out, rows_quarantined, ...)."""
        return {int(index): entry for index, entry in self.data["chunks"].items()}

    def damaged_chunks(self) -> dict[int, str]:
        """Done chunks whose file is missing or not the one recorded: index -> why."""
        damaged = {}
        for index, entry in self.done.items():
            path = chunk_path(self.run_dir, index)
            if not path.is_file():
                damaged[index] = f"{path}: missing"
            elif path.stat().st_size != entry.get("bytes") or file_checksum(path)["sha256"] != entry.get("sha256"):
                damaged[index] = f"{path}: size or checksum differs from the manifest"
        return damaged

    def forget_chunks(self, indices) -> None:
        """Mark chunks not done (to recompute them) and save."""
        for index in indices:
            self.data["chunks"].pop(str(index), None)
        if indices:
            self.data["merged"] = None
            self.save()

    def record_chunk(self, summary: dict) -> None:
        """Mark a chunk done (its file is already in place) and save."""
        self.data["chunks"][str(summary["index"])] = summary
        self.data["merged"] = None
        self.save()

    def record_merge(self, merged: dict) -> None:
        self.data["merged"] = merged
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
