"""Preprocessor (keras-hub style): shard fields -> normalised model inputs (numpy), shared by
training, evaluation and inference.
Every spectrum of an object is divided by one scale measured on its low-res spectrum
(`models.preprocess.spectrum_scale`), so models never see physical units. Placement:
the hi-res window is TARGET_GRID (rest) times (1 + z_place), with z_place the catalogue
/ grism redshift prior, never the true redshift; the low-res spectrum is resampled onto
that window (model input channels) and onto ENCODER_GRID (encoder input), and a hi-res
truth given on its own frame (`hires_z`) is moved onto the same window, so inputs and
target agree and a fit of the output refines the redshift.

Output keys (N = rows): "lowres", "lowres_weight" (N, 512); "instrument" (N,) int32;
"lowres_on_target", "lowres_on_target_weight" (N, 320); "scale" (N,) [flux units];
"z_place" (N,); with hi-res: "hires", "hires_weight" (N, 320), "hires_valid" (N,);
with images: "image" (N, 64, 64, 4) arcsinh-normalised.
"""

from __future__ import annotations

import keras
import numpy as np

from specsr_keras.instruments import ENCODER_GRID, TARGET_GRID, Instrument
from specsr_keras.models.preprocess import normalise_image, prepare_spectrum, spectrum_scale
from specsr_keras.resampling import resample_flux

# Model-input keys each training stage reads.
STAGE_KEYS = {
    "spectrum_autoencoder": ("lowres", "lowres_weight", "instrument", "hires", "hires_weight"),
    "image_autoencoder": ("image",),
    "contrastive": ("image", "lowres", "lowres_weight", "instrument", "hires", "hires_weight", "hires_valid"),
    "superres": ("lowres", "lowres_weight", "instrument", "lowres_on_target",
                 "lowres_on_target_weight", "hires", "hires_weight"),
    "generator": ("image", "hires", "hires_weight"),
}  # fmt: skip


# Per-example shapes of every model input (for building models before loading weights).
INPUT_SHAPES = {
    "lowres": (ENCODER_GRID.n_pixels,), "lowres_weight": (ENCODER_GRID.n_pixels,),
    "instrument": (), "lowres_on_target": (TARGET_GRID.n_pixels,),
    "lowres_on_target_weight": (TARGET_GRID.n_pixels,), "hires": (TARGET_GRID.n_pixels,),
    "hires_weight": (TARGET_GRID.n_pixels,), "hires_valid": (), "image": (64, 64, 4),
}  # fmt: skip


def dummy_inputs(keys, batch: int = 2) -> dict[str, np.ndarray]:
    """Zero-filled inputs (weights 1) of the given keys, to build a model."""
    return {k: (np.zeros((batch,), np.int32) if k == "instrument" else
                np.ones((batch, *INPUT_SHAPES[k]), np.float32)) for k in keys}


def _numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)


def target_edges(z: np.ndarray) -> np.ndarray:
    """Observed-frame bin edges (N, 321) [Å] of the hi-res window placed at redshift z."""
    return TARGET_GRID.bin_edges[None, :] * (1.0 + np.asarray(z, float)[:, None])


def lowres_inputs(flux, ivar, mask, instrument: Instrument, z_place) -> dict[str, np.ndarray]:
    """Model inputs from low-res spectra (N, L) on `instrument`'s grid, placed at `z_place`."""
    ivar = np.where(np.asarray(mask, bool) | ~np.isfinite(flux), 0.0, ivar).astype(np.float32)
    flux = np.where(ivar > 0, flux, 0.0).astype(np.float32)
    scale = _numpy(spectrum_scale(flux, ivar))
    enc_flux, enc_ivar = resample_flux(instrument.bin_edges, flux, ivar, ENCODER_GRID.bin_edges)
    tgt_flux, tgt_ivar = resample_flux(instrument.bin_edges, flux, ivar, target_edges(z_place))
    lowres, lowres_weight = map(_numpy, prepare_spectrum(enc_flux, enc_ivar, scale))
    on_target, on_target_weight = map(_numpy, prepare_spectrum(tgt_flux, tgt_ivar, scale))
    return {
        "lowres": lowres,
        "lowres_weight": lowres_weight,
        "instrument": np.full(len(flux), instrument.instrument_id, np.int32),
        "lowres_on_target": on_target,
        "lowres_on_target_weight": on_target_weight,
        "scale": scale,
        "z_place": np.asarray(z_place, np.float64),
    }


def hires_inputs(hires_flux, hires_mask, hires_z, z_place, scale, hires_ivar=None) -> dict[str, np.ndarray]:
    """Hi-res targets (N, 320) given on the window at `hires_z`, moved to `z_place`, normalised.

    Noiseless simulated truth (hires_ivar None): weight = 1 where covered. Real data:
    weight from the normalised ivar (`preprocess.spectrum_weight`).
    """
    covered = (~np.asarray(hires_mask, bool)).astype(np.float32)
    ivar = covered if hires_ivar is None else np.where(covered > 0, hires_ivar, 0.0)
    flux, ivar_moved = resample_flux(target_edges(hires_z), np.asarray(hires_flux, np.float32),
                                     ivar.astype(np.float32), target_edges(z_place))
    if hires_ivar is None:
        norm_flux, _ = prepare_spectrum(flux, ivar_moved, scale)
        weight = (ivar_moved > 0).astype(np.float32)
    else:
        norm_flux, weight = prepare_spectrum(flux, ivar_moved, scale)
    weight = _numpy(weight)
    return {"hires": _numpy(norm_flux), "hires_weight": weight,
            "hires_valid": (weight.sum(axis=1) > 0).astype(np.float32)}


def model_inputs(batch: dict, instrument: Instrument, *, noiseless_hires: bool = True) -> dict[str, np.ndarray]:
    """All model inputs of a simulated/real shard batch (docs/contracts.md fields)."""
    z_place = batch["z_prior"]
    out = lowres_inputs(batch["lowres_flux"], batch["lowres_ivar"], batch["lowres_mask"],
                        instrument, z_place)
    if "hires_flux" in batch:
        out.update(hires_inputs(batch["hires_flux"], batch["hires_mask"], batch.get("z", z_place),
                                z_place, out["scale"],
                                None if noiseless_hires else batch["hires_ivar"]))
    if "image" in batch:
        out["image"] = _numpy(normalise_image(batch["image"]))
    return out


def chunked_model_inputs(batch: dict, instrument: Instrument, chunk: int = 1024, **kwargs) -> dict:
    """`model_inputs` in row chunks (bounded temporary memory for large shards)."""
    n = len(batch["z_prior"])
    parts = [model_inputs({k: v[i : i + chunk] for k, v in batch.items()}, instrument, **kwargs)
             for i in range(0, n, chunk)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
