"""Preprocessor (keras-hub style): raw fields -> normalised model inputs, in keras.ops.

One implementation for training (numpy shards, through `model_inputs`), `specsr infer`
and the served graph (tensors, through `lowres_inputs` / `image_inputs`).

Every spectrum of an object is divided by one scale measured on its low-res spectrum
(`models.preprocess.spectrum_scale`), so models never see physical units; log10 of that
scale is the "amplitude" modality. Placement: the hi-res window is TARGET_GRID (rest)
times (1 + z_place), z_place the catalogue / grism redshift prior (never the true
redshift; NaN -> the band centre, `spectral.window.placement_redshift`); the low-res
spectrum is resampled onto that window (model input channels, `spectral.window.to_window`)
and onto ENCODER_GRID (encoder input, `spectral.band.resample`), and a hi-res truth given
on its own frame (`hires_z`) is moved onto the same window (`spectral.window.shift_window`).

Keys (N = rows): "lowres", "lowres_weight" (N, 512); "instrument" (N,) int32;
"lowres_on_target", "lowres_on_target_weight" (N, 320); "scale" (N,) [1e-17 erg/s/cm²/Å];
"log_scale", "z_place" (N,); "flux", "ivar" (N, L) the cleaned low-res pixels; with hi-res:
"hires", "hires_weight" (N, 320), "hires_valid" (N,); with images: "image" (N, 64, 64, 4)
arcsinh-normalised, "log_image_amplitude" (N,); "log_mstar" (N,) a *catalogue* stellar
mass (the shard / catalogue field "log_mstar_catalog", where NaN or <= 0 means none: then 0
with "has_mass" 0, `mass_inputs`; never the true mass),
"has_image", "has_mass" (N,) presence flags; "z_spec" (N,) the spectroscopic redshift of a
training pair (the shard field "z", NaN without; taught to the shared space, never an input of
a prediction).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from specsr_keras.instruments import ENCODER_GRID, TARGET_GRID, Instrument, get_instrument
from specsr_keras.models.preprocess import image_level, normalise_image, prepare_spectrum, spectrum_scale
from specsr_keras.spectral.band import band_geometry, resample
from specsr_keras.spectral.noise import noise_inflation, noise_scale
from specsr_keras.spectral.window import (
    observe,
    observed_pixels,
    placement_redshift,
    shift_window,
    to_window,
    window_pixels,
)

register = keras.saving.register_keras_serializable(package="specsr")

# Model-input keys each training stage reads (the super-resolver's embeddings are computed
# by its frozen embedders from "lowres"/"image"; training precomputes them once).
STAGE_KEYS = {
    "spectrum_autoencoder": ("lowres", "lowres_weight", "instrument", "hires", "hires_weight"),
    "image_autoencoder": ("image",),
    "contrastive": ("image", "lowres", "lowres_weight", "instrument", "hires", "hires_weight", "hires_valid",
                    "log_scale", "log_image_amplitude", "z_spec", "log_mstar", "has_mass"),
    "superres": ("lowres", "lowres_weight", "instrument", "lowres_on_target", "lowres_on_target_weight",
                 "image", "log_image_amplitude", "has_image", "log_scale", "log_mstar", "has_mass", "z_place",
                 "hires", "hires_weight"),
    "generator": ("image", "hires", "hires_weight"),
}  # fmt: skip

# Per-example shapes of every model input (for building models before loading weights).
INPUT_SHAPES = {
    "lowres": (ENCODER_GRID.n_pixels,), "lowres_weight": (ENCODER_GRID.n_pixels,),
    "instrument": (), "lowres_on_target": (TARGET_GRID.n_pixels,),
    "lowres_on_target_weight": (TARGET_GRID.n_pixels,), "hires": (TARGET_GRID.n_pixels,),
    "hires_weight": (TARGET_GRID.n_pixels,), "hires_valid": (), "image": (64, 64, 4),
    "log_image_amplitude": (), "has_image": (), "log_scale": (), "log_mstar": (), "has_mass": (), "z_place": (),
    "z_spec": (),
}  # fmt: skip


def dummy_inputs(keys, batch: int = 2) -> dict[str, np.ndarray]:
    """Zero-filled inputs (weights 1, redshift 1.4) of the given keys, to build a model."""
    fill = {"z_place": 1.4}
    return {k: (np.zeros((batch,), np.int32) if k == "instrument" else
                np.full((batch, *INPUT_SHAPES[k]), fill.get(k, 1.0), np.float32)) for k in keys}


def clean_pixels(flux, ivar, mask=None):
    """(flux, ivar) float32 with masked (mask != 0), non-finite or ivar <= 0 pixels -> 0, 0."""
    flux, ivar = ops.cast(flux, "float32"), ops.cast(ivar, "float32")
    good = ops.logical_and(ops.logical_and(ops.isfinite(flux), ops.isfinite(ivar)), ivar > 0)
    if mask is not None:
        good = ops.logical_and(good, ops.logical_not(ops.cast(mask, "bool")))
    return ops.where(good, flux, 0.0), ops.where(good, ivar, 0.0)


@functools.lru_cache(maxsize=16)
def encoder_band(instrument: Instrument):
    """Band geometry from `instrument`'s pixels onto ENCODER_GRID (static, cached)."""
    return band_geometry(instrument.bin_edges, ENCODER_GRID.bin_edges)


def lowres_inputs(flux, ivar, mask, instrument: Instrument, z_prior) -> dict:
    """Model inputs (tensors) from low-res spectra (N, L) on `instrument`'s grid and z priors (N,)."""
    flux, ivar = clean_pixels(flux, ivar, mask)
    z_place = placement_redshift(z_prior, instrument)
    scale = spectrum_scale(flux, ivar)
    enc_flux, enc_ivar = resample(encoder_band(instrument), flux, ivar)
    tgt_flux, tgt_ivar = to_window(flux, ivar, window_pixels(instrument, z_place))
    lowres, lowres_weight = prepare_spectrum(enc_flux, enc_ivar, scale)
    on_target, on_target_weight = prepare_spectrum(tgt_flux, tgt_ivar, scale)
    return {
        "lowres": lowres,
        "lowres_weight": lowres_weight,
        "instrument": ops.full((ops.shape(flux)[0],), instrument.instrument_id, dtype="int32"),
        "lowres_on_target": on_target,
        "lowres_on_target_weight": on_target_weight,
        "scale": scale,
        "log_scale": ops.log10(scale),
        "z_place": z_place,
        "flux": flux,
        "ivar": ivar,
    }


def image_inputs(image) -> dict:
    """{"image": arcsinh-normalised cutouts, "log_image_amplitude": log10 of their level}."""
    return {"image": normalise_image(image), "log_image_amplitude": ops.log10(image_level(image))}


def mass_inputs(log_mstar_catalog) -> dict:
    """A catalogue log10 M*/Msun (B,) (NaN or <= 0, e.g. -1 in JSON: none) -> model inputs
    "log_mstar" (0 where none) and "has_mass" (B,) in {0, 1}."""
    mass = ops.cast(log_mstar_catalog, "float32")
    known = ops.logical_and(ops.isfinite(mass), mass > 0)
    return {"log_mstar": ops.where(known, mass, 0.0), "has_mass": ops.cast(known, "float32")}


def hires_inputs(hires_flux, hires_mask, hires_z, z_place, scale, hires_ivar=None) -> dict:
    """Hi-res targets (N, 320) given on the window at `hires_z`, moved to `z_place`, normalised.

    Noiseless simulated truth (hires_ivar None): weight = 1 where covered. Real data: weight
    from the moved ivar (`preprocess.spectrum_weight`).
    """
    covered = ops.logical_not(ops.cast(hires_mask, "bool"))
    flux = ops.where(covered, ops.cast(hires_flux, "float32"), 0.0)
    ivar = ops.cast(covered, "float32") if hires_ivar is None else ops.where(covered, hires_ivar, 0.0)
    moved, moved_ivar = shift_window(flux, ivar, hires_z, z_place)
    norm_flux, weight = prepare_spectrum(moved, moved_ivar, scale)
    if hires_ivar is None:
        weight = ops.cast(moved_ivar > 0, "float32")
    return {"hires": norm_flux, "hires_weight": weight,
            "hires_valid": ops.cast(ops.sum(weight, axis=1) > 0, "float32")}


def _numpy(values: dict) -> dict[str, np.ndarray]:
    return {k: keras.ops.convert_to_numpy(v) for k, v in values.items()}


def model_inputs(batch: dict, instrument: Instrument, *, noiseless_hires: bool = True) -> dict[str, np.ndarray]:
    """All model inputs of a simulated/real shard batch (docs/contracts.md fields), numpy
    (the keys of `lowres_inputs` but the cleaned pixels, `hires_inputs`, `image_inputs`,
    "log_mstar", "has_mass", "has_image", "z_spec")."""
    out = _numpy(lowres_inputs(batch["lowres_flux"], batch["lowres_ivar"], batch["lowres_mask"], instrument,
                               np.asarray(batch["z_prior"], np.float32)))
    del out["flux"], out["ivar"]  # on the instrument's own grid: not a model input
    if "hires_flux" in batch:
        hires_z = np.asarray(batch.get("z", batch["z_prior"]), np.float32)
        out.update(_numpy(hires_inputs(batch["hires_flux"], batch["hires_mask"], hires_z, out["z_place"],
                                       out["scale"], None if noiseless_hires else batch["hires_ivar"])))
    n = len(out["scale"])
    out["z_spec"] = np.asarray(batch.get("z", np.full(n, np.nan)), np.float32)
    if "image" in batch:
        out.update(_numpy(image_inputs(batch["image"])))
    has_image = np.asarray(batch.get("has_image", np.full(n, "image" in batch)), bool)
    out.update(has_image=has_image.astype(np.float32),
               **_numpy(mass_inputs(np.asarray(batch.get("log_mstar_catalog", np.full(n, np.nan)), np.float32))))
    return out


def chunked_model_inputs(batch: dict, instrument: Instrument, chunk: int = 256, **kwargs) -> dict:
    """`model_inputs` in row chunks (bounded temporary memory for large shards)."""
    n = len(batch["z_prior"])
    parts = [model_inputs({k: v[i : i + chunk] for k, v in batch.items()}, instrument, **kwargs)
             for i in range(0, n, chunk)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# Raw inputs of `SpectrumPreprocessor` besides the spectra: optional, per row.
OPTIONAL_RAW = ("source_sigma_arcsec", "image", "has_image", "log_mstar_catalog")


@register
class SpectrumPreprocessor:
    """Raw catalogue rows on one instrument's grid -> super-resolver inputs and observation.

    raw (dict of (B, ...) arrays or tensors): "lowres_flux", "lowres_ivar" (B, L)
    [1e-17 erg/s/cm²/Å and its inverse variance], "lowres_mask" (B, L) (non-zero = bad),
    "z_prior" (B,) (NaN = none: the window is placed at the band centre); optional
    "source_sigma_arcsec" (B,) (source size along the dispersion for the slitless LSF; NaN or
    < 0 = the instrument's reference size), "image" (B, 64, 64, 4) [nJy] with "has_image" (B,),
    "log_mstar_catalog" (B,) (NaN or <= 0 = none). Returns (model inputs, `window.Observation`);
    the inputs also hold "noise_inflation" (B,) (>= 1, `spectral.noise`; for the sampler's
    `noise_check`), measured only here, where an observation is made.
    """

    def __init__(self, instrument: str = "euclid_nisp_red"):
        self.instrument = get_instrument(instrument)

    @property
    def observed_pixels(self) -> int:
        """M: instrument pixels per row in the observation (static)."""
        return observed_pixels(self.instrument)

    def __call__(self, raw: dict):
        inputs = lowres_inputs(raw["lowres_flux"], raw["lowres_ivar"], raw["lowres_mask"], self.instrument,
                               raw["z_prior"])
        if "image" in raw:
            inputs.update(image_inputs(raw["image"]))
            inputs["has_image"] = raw.get("has_image", ops.ones_like(inputs["z_place"]))
        if "log_mstar_catalog" in raw:
            inputs.update(mass_inputs(raw["log_mstar_catalog"]))
        inputs["noise_inflation"] = noise_inflation(noise_scale(inputs["flux"], inputs["ivar"])[0])
        observation = observe(self.instrument, inputs["flux"], inputs["ivar"], inputs["z_place"],
                              raw.get("source_sigma_arcsec"))
        return inputs, observation

    def get_config(self) -> dict:
        return {"instrument": self.instrument.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
