"""The serving endpoints of a specsr SavedModel: names, inputs, outputs, shapes, units.

Plain data (no TensorFlow, no Keras), shared by the exporter (which builds
`tf.TensorSpec`s from it and writes it to `signatures.json`), `serving-check`, the REST
client and the SavedModel predictor. Shapes use symbols: "B" batch (free), "L" the export
instrument's grid length, "K" samples per object, "D" the shared embedding size;
`resolve_endpoints` replaces L, K and D by numbers and B by None.

Seeds are per row: `seed` (B,) int32. Noise kind i of the sampler (`Sampler.noise_shapes`:
initial x_T, then per-step / posterior-draw noise) for row b is
`tf.random.stateless_normal((K, *shape), seed=[seed[b] + i, 0])`, so a row's answer
depends on its own seed only (not on its batch neighbours or on server-side batching),
and TF Serving's row ("instances") format works.
"""

from __future__ import annotations

from specsr_keras.schema import PERCENTILES, QUANTITY_UNITS
from specsr_keras.units import FLUX, IVAR

SIGNATURES_FILE = "signatures.json"  # written next to saved_model.pb
HIRES = 320  # TARGET_GRID pixels
IMAGE = (64, 64, 4)
PERCENTILE_NAMES = tuple(PERCENTILES)
# Per-sample quantities of the super_resolve endpoint (B, K), whose percentiles it returns.
SAMPLE_QUANTITIES = tuple(QUANTITY_UNITS)


def _io(shape, dtype, unit, doc, nan=False):
    """One input/output; nan: the value may be NaN (said in its description)."""
    return {"shape": list(shape), "dtype": dtype, "unit": unit, "description": doc, "nan": nan}


LOWRES_INPUTS = {
    "lowres_flux": _io(
        ("B", "L"),
        "float32",
        FLUX,
        "low-res spectrum on the export instrument's grid (NaN allowed where masked)",
    ),
    "lowres_ivar": _io(("B", "L"), "float32", IVAR, "inverse variance; 0 = masked"),
    "lowres_mask": _io(
        ("B", "L"), "float32", "", "bad-pixel mask: nonzero = bad (send bool masks as 0/1)"
    ),
}
Z_PRIOR = _io(
    ("B",),
    "float32",
    "",
    "redshift prior placing the Hα window; NaN or < -0.5 = none (the window is then centred "
    "on the instrument band: pass a prior or a coarse z from the spectrum)",
)
CATALOGUE_INPUTS = {
    "source_sigma_arcsec": _io(("B",), "float32", "arcsec", "Gaussian sigma of the source along the dispersion "
                               "(sets the slitless LSF); NaN or < 0 = the instrument's reference size"),
    "log_mstar": _io(("B",), "float32", "dex(Msun)", "catalogue log10 stellar mass; NaN or <= 0 = none"),
}
SEED = _io(("B",), "int32", "", "per-row sampling seed (>= 0); same seed, same samples")
IMAGE_INPUT = {
    "image": _io(
        ("B", *IMAGE),
        "float32",
        "nJy-like",
        'raw cutout, bands F606W-, F814W-, F125W-, F160W-like, 0.06"/px; normalised in the graph',
    )
}

_LINE_OUTPUTS = {
    f"{q}_{p}": _io(("B",), "float32", QUANTITY_UNITS[q],
                    f"{PERCENTILES[p]:g}th predictive percentile over the K samples (spectral/intervals.py); "
                    "NaN when fewer than two samples' line fits succeeded", nan=True)
    for q in SAMPLE_QUANTITIES
    for p in PERCENTILE_NAMES
}
_SAMPLE_OUTPUTS = {
    **{q: _io(("B", "K"), "float32", QUANTITY_UNITS[q], "per-sample line measurement (spectral/lines.py)")
       for q in SAMPLE_QUANTITIES},
    "sigma_v_kms": _io(("B", "K"), "float32", "km/s", "per-sample gas velocity dispersion"),
    "ok": _io(("B", "K"), "float32", "", "1 where the sample's line fit succeeded"),
}

ENDPOINTS = {
    "super_resolve": {
        "description": "low-res grism spectrum (+ catalogue size and mass) -> K posterior samples of the "
        "R=3600 rest-frame window 6460-6780 Å placed at z_place, consistent with the observed pixels, "
        "with line measurements",
        "inputs": {**LOWRES_INPUTS, "z_prior": Z_PRIOR, **CATALOGUE_INPUTS, "seed": SEED},
        "outputs": {
            "sr_mean": _io(
                ("B", HIRES),
                "float32",
                FLUX,
                "mean over samples, per observed Å, on TARGET_GRID rest edges x (1 + z_place)",
            ),
            "sr_std": _io(("B", HIRES), "float32", FLUX, "standard deviation over samples"),
            "samples": _io(("B", "K", HIRES), "float32", FLUX, "posterior samples"),
            "z_place": _io(("B",), "float32", "", "redshift placing the window"),
            "scale": _io(("B",), "float32", FLUX, "per-object normalisation scale"),
            "reconstruction_chi2": _io(
                ("B",), "float32", "", "reduced chi2 of the low-res data vs sr_mean seen through the "
                "instrument (NaN: no observing pixel)", nan=True
            ),
            "observed_pixels": _io(("B",), "float32", "", "low-res pixels observing the window"),
            "line_pixels": _io(("B",), "float32", "", "of those, pixels overlapping Hα + [NII] "
                               "(0: the estimate is the prior alone)"),
            "amplitudes_ignored": _io(("B",), "float32", "", "1: the spectrum's flux level was outside the "
                                      "model's training range (wrong units?) and not used by the prior"),
            **_SAMPLE_OUTPUTS,
            **_LINE_OUTPUTS,
        },
    },
    "embed_spectrum": {
        "description": "low-res spectrum -> unit vector in the shared image/spectrum space",
        "inputs": dict(LOWRES_INPUTS),
        "outputs": {"embedding": _io(("B", "D"), "float32", "", "L2-normalised")},
    },
    "embed_image": {
        "description": "image cutout -> unit vector in the shared image/spectrum space",
        "inputs": dict(IMAGE_INPUT),
        "outputs": {"embedding": _io(("B", "D"), "float32", "", "L2-normalised")},
    },
    "spectrum_from_image": {
        "description": "image cutout (+ z prior, catalogue mass) -> generated R=3600 window: the "
        "super-resolver's prior given the image alone",
        "inputs": {**IMAGE_INPUT, "z_prior": Z_PRIOR, "log_mstar": CATALOGUE_INPUTS["log_mstar"], "seed": SEED},
        "outputs": {
            "mean": _io(
                ("B", HIRES),
                "float32",
                "normalised",
                "in units of the object's low-res flux scale (multiply by a scale from "
                "photometry or a spectrum to get flux density)",
            ),
            "std": _io(("B", HIRES), "float32", "normalised", "standard deviation over samples"),
            "samples": _io(("B", "K", HIRES), "float32", "normalised", "generated samples"),
            **{k: v for k, v in _LINE_OUTPUTS.items() if k.startswith(("n2_", "z_"))},
        },
    },
    "anomaly_score": {
        "description": "spectrum + image -> anomaly score and its components (uncalibrated)",
        "inputs": {**LOWRES_INPUTS, "z_prior": Z_PRIOR, **CATALOGUE_INPUTS, "seed": SEED, **IMAGE_INPUT},
        "outputs": {
            "score": _io(("B",), "float32", "", "ANOMALY_WEIGHTS combination of the components (NaN: no "
                         "observing pixel)", nan=True),
            "cross_modal_disagreement": _io(
                ("B",), "float32", "", "1 - cos(image embedding, spectrum embedding)"
            ),
            "reconstruction_chi2": _io(
                ("B",), "float32", "", "reduced chi2 of the low-res data vs the SR mean re-observed "
                "(NaN: no observing pixel)", nan=True
            ),
            "z_place": _io(("B",), "float32", "", "redshift placing the window"),
        },
    },
}
DEFAULT_ENDPOINT = "super_resolve"  # also served as "serving_default"

# score = disagreement_weight * (1 - cos) + reconstruction_weight * ln(max(chi2_nu, 1)):
# ~0 for a galaxy the models explain (aligned embeddings, chi2_nu ~ 1); 1 unit per
# 0.5 of cosine disagreement or per factor e in chi2_nu. Calibration on normal data
# (and the kNN density term of DESIGN.md) is left for later.
ANOMALY_WEIGHTS = {"disagreement_weight": 2.0, "reconstruction_weight": 1.0}


def resolve_shape(shape, sizes: dict) -> list:
    """Symbolic shape -> concrete list with None for "B"."""
    return [None if s == "B" else sizes.get(s, s) for s in shape]


def resolve_endpoints(sizes: dict) -> dict:
    """ENDPOINTS with "L", "K", "D" replaced by `sizes` and "B" by None."""
    out = {}
    for name, spec in ENDPOINTS.items():
        out[name] = {
            "description": spec["description"],
            "inputs": {
                k: {**v, "shape": resolve_shape(v["shape"], sizes)}
                for k, v in spec["inputs"].items()
            },
            "outputs": {
                k: {**v, "shape": resolve_shape(v["shape"], sizes)}
                for k, v in spec["outputs"].items()
            },
        }
    return out
