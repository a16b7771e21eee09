"""HDF5 shards: one dataset per field (first axis = example) plus a JSON manifest.

Layout of a shard directory (docs/contracts.md):
    shard-00000.h5, shard-00001.h5, ...   datasets chunked by example, file attrs
    manifest.json                         written last, atomically (temp file + rename)
Every problem with a shard or the manifest raises a one-line ValueError naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

MANIFEST_NAME = "manifest.json"
SHARD_TEMPLATE = "shard-{:05d}.h5"
# Target size of one HDF5 chunk [bytes]: whole examples, at least one per chunk.
CHUNK_BYTES = 1 << 18
_REQUIRED_KEYS = ("count", "shards", "fields")


class ShardError(ValueError):
    """A missing, corrupt or inconsistent shard or manifest; str() is "PATH: problem"."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _ShardWriter:
    """Appends batches to the current shard file, rolling to a new one every shard_size."""

    def __init__(self, out_dir: Path, shard_size: int, attrs: dict, compression: str | None):
        self.out_dir, self.shard_size = out_dir, shard_size
        self.attrs, self.compression = attrs, compression
        self.shards: list[dict] = []
        self.file: h5py.File | None = None
        self.count = 0

    def _open_next(self, batch: dict[str, np.ndarray]) -> None:
        name = SHARD_TEMPLATE.format(len(self.shards))
        self.file = h5py.File(self.out_dir / (name + ".tmp"), "w")
        for key, value in self.attrs.items():
            self.file.attrs[key] = value
        for field, array in batch.items():
            row_bytes = max(array[0].nbytes, 1)
            rows = int(np.clip(CHUNK_BYTES // row_bytes, 1, self.shard_size))
            self.file.create_dataset(field, shape=(0,) + array.shape[1:], dtype=array.dtype,
                                     maxshape=(None,) + array.shape[1:],
                                     chunks=(rows,) + array.shape[1:],
                                     compression=self.compression)
        self.shards.append({"file": name, "count": 0})
        self.count = 0

    def _close(self) -> None:
        self.file.attrs["count"] = self.count
        self.file.close()
        name = self.shards[-1]["file"]
        os.replace(self.out_dir / (name + ".tmp"), self.out_dir / name)
        self.shards[-1]["count"] = self.count
        self.file = None

    def write(self, batch: dict[str, np.ndarray]) -> None:
        start, total = 0, len(next(iter(batch.values())))
        while start < total:
            if self.file is None:
                self._open_next(batch)
            stop = min(total, start + self.shard_size - self.count)
            for field, array in batch.items():
                dataset = self.file[field]
                dataset.resize(self.count + stop - start, axis=0)
                dataset[self.count:] = array[start:stop]
            self.count += stop - start
            start = stop
            if self.count == self.shard_size:
                self._close()

    def finish(self) -> list[dict]:
        if self.file is not None:
            self._close()
        return self.shards


def _check_batch(batch: dict[str, np.ndarray], fields: list[str] | None) -> None:
    names = list(batch)
    if fields is not None and names != fields:
        raise ValueError(f"batch fields {names} differ from the first batch's {fields}")
    lengths = {len(np.asarray(value)) for value in batch.values()}
    if len(lengths) != 1:
        raise ValueError(f"batch fields have different lengths: {sorted(lengths)}")


def write_shards(out_dir, batches_iter: Iterable[dict[str, np.ndarray]], manifest_extra=None,
                 shard_size: int = 4096, attrs=None, compression: str | None = None,
                 overwrite: bool = False) -> dict:
    """Write batches (dicts of arrays sharing their first axis) as shards plus manifest.json.

    manifest_extra: JSON-ready keys merged into the manifest (kind, instrument, grids, ...);
    attrs: file attributes of every shard (arrays or strings, e.g. wavelength grids);
    compression: h5py filter name (None, "lzf", "gzip"). Refuses a directory that already
    holds a manifest unless `overwrite`. Returns the manifest.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists():
        if not overwrite:
            raise ShardError(f"{manifest_path}: a dataset is already there (use overwrite)")
        manifest_path.unlink()  # first, so a crash never leaves a manifest of mixed shards
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out_dir, shard_size, dict(attrs or {}), compression)
    fields, field_info = None, {}
    for batch in batches_iter:
        batch = {name: np.asarray(value) for name, value in batch.items()}
        _check_batch(batch, fields)
        if fields is None:
            fields = list(batch)
            field_info = {name: {"shape": list(value.shape[1:]), "dtype": value.dtype.str}
                          for name, value in batch.items()}
        writer.write(batch)
    shards = writer.finish()
    written = {shard["file"] for shard in shards}
    for stale in out_dir.glob("shard-*.h5"):
        if stale.name not in written:
            stale.unlink()
    manifest = {**(manifest_extra or {}), "count": sum(s["count"] for s in shards),
                "shards": shards, "fields": fields or [], "field_info": field_info}
    temp = manifest_path.with_suffix(".json.tmp")
    temp.write_text(json.dumps(manifest, indent=2, default=_json_default))
    os.replace(temp, manifest_path)
    return manifest


def _json_default(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_manifest(directory) -> dict:
    """The manifest of a shard directory (ValueError naming the file if missing or corrupt)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: missing (not a shard directory?)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({_one_line(exc)})") from None
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ShardError(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


def _select_fields(manifest: dict, directory, fields) -> list[str]:
    if fields is None:
        return list(manifest["fields"])
    unknown = [name for name in fields if name not in manifest["fields"]]
    if unknown:
        raise ShardError(f"{Path(directory) / MANIFEST_NAME}: no field(s) {', '.join(unknown)}")
    return list(fields)


def _read_shard(path: Path, expected_count: int, fields: list[str], start=0, stop=None):
    """Rows [start, stop) of the fields of one shard, checked against the manifest."""
    try:
        with h5py.File(path, "r") as handle:
            for name in fields:
                if name not in handle:
                    raise ShardError(f"{path}: no dataset {name!r}")
                if handle[name].shape[0] != expected_count:
                    raise ShardError(f"{path}: {name} holds {handle[name].shape[0]} examples, "
                                     f"the manifest says {expected_count}")
            return {name: handle[name][start:stop] for name in fields}
    except ShardError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable HDF5 shard ({_one_line(exc)})") from None


def load_shards(directory, fields=None, max_examples=None) -> dict[str, np.ndarray]:
    """All (or the first max_examples) examples of a shard directory as one dict of arrays."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    fields = _select_fields(manifest, directory, fields)
    remaining = manifest["count"] if max_examples is None else min(max_examples, manifest["count"])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fields}
    for shard in manifest["shards"]:
        if remaining <= 0:
            break
        take = min(remaining, shard["count"])
        data = _read_shard(directory / shard["file"], shard["count"], fields, 0, take)
        for name in fields:
            parts[name].append(data[name])
        remaining -= take
    info = manifest.get("field_info", {})

    def empty(name):
        field = info.get(name, {})
        return np.empty([0, *field.get("shape", [])], field.get("dtype", float))

    return {name: np.concatenate(arrays) if arrays else empty(name)
            for name, arrays in parts.items()}


def iter_shard_batches(directory, batch_size: int, fields=None) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive batches of batch_size examples across shards (the last may be smaller).

    Reads one batch at a time, so memory stays bounded by the batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    directory = Path(directory)
    manifest = read_manifest(directory)
    fields = _select_fields(manifest, directory, fields)
    pending: list[dict[str, np.ndarray]] = []
    pending_count = 0
    for shard in manifest["shards"]:
        start = 0
        while start < shard["count"]:
            stop = min(shard["count"], start + batch_size - pending_count)
            pending.append(_read_shard(directory / shard["file"], shard["count"], fields, start,
                                       stop))
            pending_count += stop - start
            start = stop
            if pending_count == batch_size:
                yield _join(pending)
                pending, pending_count = [], 0
    if pending:
        yield _join(pending)


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
