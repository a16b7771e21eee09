"""Embedding files: HDF5 with the shared-space embeddings of one catalog and one modality.

Datasets: `ids` (N,) str, `rows` (N,) int64 catalog rows, `embedding` (N, D) float32 unit
vectors, `quarantine_ids`, `quarantine_rows`, `quarantine_reasons` (rows that could not
be embedded, with a reason). Attributes: model, modality, catalog, embedding_dim,
software_version. `embed_catalog` streams a catalog in chunks into such a file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import specsr_keras
from specsr_keras.reporting import Reporter

__all__ = ["EmbeddingSet", "embed_catalog", "read_embeddings"]

MODALITIES = ("image", "spectrum")
_STR = None  # h5py string dtype, set on first use


@dataclass
class EmbeddingSet:
    """An embedding file in memory (see module doc); embedding rows are unit vectors."""

    ids: np.ndarray
    rows: np.ndarray
    embedding: np.ndarray
    attrs: dict
    quarantine_ids: np.ndarray
    quarantine_reasons: np.ndarray

    @property
    def modality(self) -> str:
        return str(self.attrs.get("modality", ""))

    def position(self, object_id: str) -> int:
        """Row of `object_id` in this set; ValueError if absent."""
        hits = np.flatnonzero(self.ids == str(object_id))
        if not hits.size:
            raise ValueError(f"{object_id!r} is not in the {self.modality} index "
                           f"({len(self.ids)} objects)")
        return int(hits[0])


def _str_dtype():
    import h5py

    return h5py.string_dtype()


def read_embeddings(path) -> EmbeddingSet:
    """An embedding file written by `embed_catalog`."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such embedding file")
    with h5py.File(path, "r") as handle:
        if "embedding" not in handle or "ids" not in handle:
            raise ValueError(f"{path}: not an embedding file (needs 'ids' and 'embedding')")
        text = lambda name: np.array(handle[name].asstr()[:], dtype=str) if name in handle \
            else np.zeros(0, str)  # noqa: E731
        emb = np.asarray(handle["embedding"][:], np.float32)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        return EmbeddingSet(ids=text("ids"), rows=np.asarray(handle["rows"][:]),
                            embedding=emb / np.maximum(norm, 1e-12),
                            attrs={k: (v.decode() if isinstance(v, bytes) else v)
                                   for k, v in handle.attrs.items()},
                            quarantine_ids=text("quarantine_ids"),
                            quarantine_reasons=text("quarantine_reasons"))


class _Writer:
    """Appends chunks to resizable datasets of a temporary file, renamed when complete."""

    def __init__(self, path: Path, dim: int, attrs: dict):
        import h5py

        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.handle = h5py.File(self.tmp, "w")
        self.handle.attrs.update(attrs)
        s = _str_dtype()
        make = lambda name, shape, dtype: self.handle.create_dataset(  # noqa: E731
            name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=True)
        self.sets = {"ids": make("ids", (), s), "rows": make("rows", (), np.int64),
                     "embedding": make("embedding", (dim,), np.float32),
                     "quarantine_ids": make("quarantine_ids", (), s),
                     "quarantine_rows": make("quarantine_rows", (), np.int64),
                     "quarantine_reasons": make("quarantine_reasons", (), s)}

    def append(self, **arrays):
        for name, values in arrays.items():
            dataset = self.sets[name]
            n = len(dataset)
            dataset.resize(n + len(values), axis=0)
            if len(values):
                dataset[n:] = values

    def close(self):
        self.handle.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def embed_catalog(catalog_path, run_dir, modality: str, out, *, chunk_rows: int = 4096,
                  batch: int = 256, instrument: str | None = None,
                  reporter: Reporter | None = None) -> dict:
    """Embed every usable row of a catalog into `out` (HDF5, see module doc), in chunks.

    modality "image": the catalog's `image` cutouts (rows with NaN-filled, blank or
    wrongly shaped cutouts are quarantined); "spectrum": its low-res spectra, validated
    and put on the grid of `instrument` (default: the catalog's, else Euclid NISP) by
    `catalog.prepare_rows`. Memory is bounded by chunk_rows. Returns counts.
    """
    from specsr_keras.embeddings import embed_images, embed_spectra, load_aligner
    from specsr_keras.inference.catalog import open_catalog, prepare_rows
    from specsr_keras.inference.images import prepare_image_rows
    from specsr_keras.inference.predictors import DEFAULT_INSTRUMENT

    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    started, reporter = time.perf_counter(), reporter or Reporter()
    catalog = open_catalog(catalog_path, modality)
    aligner = load_aligner(run_dir)
    grid = instrument or catalog.instrument or DEFAULT_INSTRUMENT
    image_shape = tuple(aligner.image_encoder.image_shape)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"model": str(Path(run_dir).resolve()), "modality": modality,
             "catalog": str(catalog.path), "embedding_dim": aligner.embedding_dim,
             "software_version": specsr_keras.__version__}
    if modality == "spectrum":
        attrs["instrument"] = grid
    writer = _Writer(out, aligner.embedding_dim, attrs)
    counts = {"rows_in": 0, "rows_out": 0, "rows_quarantined": 0}
    try:
        description = f"embed {Path(catalog.path).name} ({modality})"
        with reporter.task(description, catalog.n_units) as advance:
            for start in range(0, catalog.n_units, chunk_rows):
                raw = catalog.read(start, start + chunk_rows)
                if modality == "image":
                    prepared = prepare_image_rows(raw, image_shape)
                    emb = embed_images(prepared.batch["image"], run_dir, batch=batch) \
                        if len(prepared.batch["row"]) else np.zeros((0, aligner.embedding_dim))
                else:
                    prepared = prepare_rows(raw, grid)
                    b = prepared.batch
                    emb = embed_spectra(b["lowres_flux"], b["lowres_ivar"], b["lowres_mask"],
                                        grid, run_dir, instrument_id=b["instrument_id"],
                                        batch=batch) if len(b["row"]) \
                        else np.zeros((0, aligner.embedding_dim))
                q = prepared.quarantine
                writer.append(ids=prepared.batch["object_id"].astype(str).astype(object),
                              rows=prepared.batch["row"], embedding=emb,
                              quarantine_ids=np.array([e[1] for e in q], dtype=object),
                              quarantine_rows=np.array([e[0] for e in q], np.int64),
                              quarantine_reasons=np.array([e[2] for e in q], dtype=object))
                counts["rows_out"] += len(prepared.batch["row"])
                counts["rows_quarantined"] += len(q)
                counts["rows_in"] += len(raw.row) + len(raw.rejects)
                advance(min(chunk_rows, catalog.n_units - start),
                        quarantined=counts["rows_quarantined"])
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {**counts, "out": str(out), "seconds": time.perf_counter() - started}
