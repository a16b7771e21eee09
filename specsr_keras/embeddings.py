"""Shared-space embeddings of images and spectra from a trained run (public Python API).

`embed_images(images, run_dir)` and `embed_spectra(flux, ivar, mask, instrument, run_dir)`
load the run's `ContrastiveAligner` (`models/contrastive.keras`) once per process and
return unit vectors (N, D) float32 in the shared space, so cosine similarity = dot
product. Images (N, 64, 64, 4) are raw cutouts [nJy / pixel] (normalised here with
`models.preprocess.normalise_image`); spectra (N, L) are low-res spectra on the grid of
`instrument` [1e-17 erg s^-1 cm^-2 Å^-1] with ivar and mask (True = bad), normalised and
resampled onto the encoder grid by `models.preprocessor.lowres_inputs`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

__all__ = ["aligner_path", "embed_images", "embed_spectra", "load_aligner"]


def aligner_path(run_dir) -> Path:
    """`models/contrastive.keras` of a run directory (or the .keras file itself)."""
    path = Path(run_dir)
    file = path / "models" / "contrastive.keras" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{run_dir}: no trained contrastive aligner (expected {file})")
    return file.resolve()


@functools.cache
def _load(file: str):
    import keras

    import specsr_keras.models  # noqa: F401 - registers the specsr classes

    return keras.saving.load_model(file, safe_mode=True)


def load_aligner(run_dir):
    """The run's ContrastiveAligner, loaded once per process."""
    return _load(str(aligner_path(run_dir)))


def _batched(function, arrays: tuple, batch: int, dim: int) -> np.ndarray:
    import keras

    n = len(arrays[0])
    out = np.zeros((n, dim), np.float32)
    for start in range(0, n, batch):
        part = [a[start:start + batch] for a in arrays]
        out[start:start + batch] = keras.ops.convert_to_numpy(function(*part))
    return out


def embed_images(images, run_dir, *, batch: int = 256) -> np.ndarray:
    """Unit embeddings (N, D) of raw image cutouts (N, 64, 64, 4) [nJy / pixel]."""
    from keras import ops

    from specsr_keras.models.preprocess import image_level, normalise_image

    aligner = load_aligner(run_dir)
    images = np.asarray(images, np.float32)
    expected = tuple(aligner.image_encoder.image_shape)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), "
                         f"got {images.shape}")
    return _batched(lambda x: aligner.embed_image(normalise_image(x), ops.log10(image_level(x))), (images,), batch,
                    aligner.embedding_dim)


def embed_spectra(flux, ivar, mask, instrument, run_dir, *, instrument_id=None,
                  batch: int = 256) -> np.ndarray:
    """Unit embeddings (N, D) of low-res spectra (N, L) on `instrument`'s grid.

    instrument: the grid's instrument name; instrument_id (N,) int: the instrument that
    observed each row (default: the grid's), as the superres predictor passes it.
    """
    from specsr_keras.instruments import get_instrument
    from specsr_keras.models.preprocessor import lowres_inputs

    aligner = load_aligner(run_dir)
    grid = get_instrument(instrument)
    flux = np.asarray(flux, np.float32)
    if flux.ndim != 2 or flux.shape[1] != grid.grid.n_pixels:
        raise ValueError(f"flux must have shape (N, {grid.grid.n_pixels}) on the {grid.name} "
                         f"grid, got {flux.shape}")
    mask = np.zeros(flux.shape, bool) if mask is None else np.asarray(mask, bool)
    inputs = lowres_inputs(flux, np.asarray(ivar, np.float32), mask, grid,
                           np.zeros(len(flux)))
    ids = inputs["instrument"] if instrument_id is None else np.asarray(instrument_id, np.int32)
    return _batched(aligner.embed_spectrum, (inputs["lowres"], inputs["lowres_weight"], ids, inputs["log_scale"]),
                    batch, aligner.embedding_dim)
