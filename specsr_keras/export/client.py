"""TF Serving REST client for a specsr export (urllib only: no TensorFlow needed).

    from specsr_keras.export import client
    sig = client.load_signatures("saved_models/specsr/11")          # signatures.json
    body = client.spectrum_request("obj.fits", sig, z_prior=1.2, seed=0)
    response = client.predict("http://localhost:8501", "specsr", body)
    result = client.super_resolved(client.parse_response(response, sig))[0]
    result["flux"], result["wavelength"], result["ha_flux"]        # astropy Quantities

Requests use TF Serving's columnar ("inputs") format: {"signature_name": ..., "inputs":
{name: nested lists}}; the answer is {"outputs": {name: nested lists}} (or the bare
value when a signature has one output). Arrays are checked against signatures.json
first (shapes, the export grid's length, NaN flux at unmasked pixels), so a bad request
fails here with one clear line rather than inside the server. JSON has no NaN: flux at
masked pixels is sent as 0 (the graph ignores it anyway).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import astropy.units as u
import numpy as np

from specsr_keras.data.records import Spectrum
from specsr_keras.export.signatures import ENDPOINTS, PERCENTILE_NAMES, SAMPLE_QUANTITIES, SIGNATURES_FILE
from specsr_keras.instruments import TARGET_GRID
from specsr_keras.spectral.band import edges_from_centres, finer_grid_ivar_factor, resample_flux
from specsr_keras.units import FLUX_UNIT, LINE_FLUX_UNIT


def check_export_files(path) -> None:
    """FileNotFoundError naming the first file a SavedModel export lacks (saved_model.pb,
    signatures.json, variables/variables.index, a variables data shard)."""
    path = Path(path)
    needed = [path / "saved_model.pb", path / SIGNATURES_FILE, path / "variables" / "variables.index"]
    missing = next((str(p) for p in needed if not p.is_file()), None)
    if missing is None and not list((path / "variables").glob("variables.data-*")):
        missing = str(path / "variables" / "variables.data-*")
    if missing:
        raise FileNotFoundError(f"{missing}: missing, so {path} is not a complete SavedModel export; "
                                "re-export with `specsr export`")


def load_signatures(source) -> dict:
    """signatures.json as a dict, from an export directory, the file, or a dict."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    path = path / SIGNATURES_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {SIGNATURES_FILE} (not a specsr export)")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-export with `specsr export`") from None


def grid_edges(signatures: dict) -> np.ndarray:
    """Pixel edges (L+1,) [Å] of the export instrument's grid."""
    return np.asarray(signatures["metadata"]["lowres_bin_edges"], float)


# --- request -------------------------------------------------------------------------


def check_inputs(signatures: dict, endpoint: str, arrays: dict) -> dict[str, np.ndarray]:
    """Arrays for `endpoint` checked against signatures.json and cast to its dtypes.

    Raises ValueError (one line) for an unknown endpoint, a missing input, a wrong shape
    (e.g. a spectrum not on the export grid), rows that disagree on the batch size, or
    non-finite flux at unmasked pixels (ivar > 0 and mask 0). Scalars are broadcast to
    (B,) for per-row inputs (z_prior, seed).
    """
    endpoints = signatures["endpoints"]
    if endpoint not in endpoints:
        raise ValueError(f"unknown signature {endpoint!r}; this export has {', '.join(endpoints)}")
    spec = endpoints[endpoint]["inputs"]
    missing = [name for name in spec if name not in arrays]
    if missing:
        raise ValueError(f"{endpoint} needs inputs {', '.join(missing)}")
    out = {}
    for name in spec:
        value = np.asarray(arrays[name])
        out[name] = value.astype(np.float32) if value.dtype == bool else value
    # The batch size: the first axis of the first array input (spectrum or image).
    lead = next((n for n, io in spec.items() if len(io["shape"]) >= 2), next(iter(spec)))
    batch = out[lead].shape[0] if out[lead].ndim else 1
    for name, io in spec.items():
        value = out[name]
        if io["shape"] == [None] and value.size == 1 and value.ndim <= 1:
            value = np.repeat(value.reshape(1), batch)  # a scalar for every row
        expected = [batch if s is None else s for s in io["shape"]]
        if list(value.shape) != expected:
            hint = ""
            if name.startswith("lowres") and value.ndim == 2 and value.shape[0] == batch:
                grid = signatures["metadata"]["instrument"]
                hint = (
                    f": this export works on the {grid['instrument']} grid of {expected[-1]} "
                    f"pixels ({grid['wave_min']:.0f}-{grid['wave_max']:.0f} Å); resample "
                    "with specsr_keras.spectral.band.resample_flux"
                )
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected {tuple(expected)}{hint}"
            )
        if np.issubdtype(np.dtype(io["dtype"]), np.integer):
            if not np.all(np.isfinite(value)) or np.any(np.asarray(value) < 0):
                raise ValueError(f"{name} must be finite non-negative integers")
        out[name] = value.astype(io["dtype"])
    if "lowres_flux" in out:
        usable = (out["lowres_ivar"] > 0) & (out["lowres_mask"] == 0)
        bad = usable & ~np.isfinite(out["lowres_flux"])
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"lowres_flux has {int(bad.sum())} NaN/inf values at unmasked pixels "
                f"(rows {', '.join(map(str, rows[:5]))}): set lowres_mask=1 or ivar=0 there"
            )
        out["lowres_ivar"] = np.where(
            np.isfinite(out["lowres_ivar"]), out["lowres_ivar"], 0
        ).astype(np.float32)
    if "image" in out and not np.all(np.isfinite(out["image"])):
        raise ValueError("image has NaN/inf pixels: replace them (e.g. by 0) before sending")
    return out


# Values a request sends for "unknown" (JSON has no NaN; the graph reads them as missing):
# no z prior (< -0.5), the instrument's reference source size (< 0), no catalogue mass (<= 0).
MISSING_VALUES = {"z_prior": -1.0, "source_sigma_arcsec": -1.0, "log_mstar": -1.0}


def request_body(signatures: dict, endpoint: str = "super_resolve", **arrays) -> dict:
    """TF Serving REST `:predict` body (columnar "inputs" format) for `endpoint`; NaN in the
    optional scalars becomes MISSING_VALUES, NaN flux a masked pixel."""
    checked = check_inputs(signatures, endpoint, arrays)
    if "lowres_flux" in checked:
        finite = np.isfinite(checked["lowres_flux"])
        checked["lowres_mask"] = np.where(finite, checked["lowres_mask"], 1.0).astype(np.float32)
        checked["lowres_flux"] = np.where(finite, checked["lowres_flux"], 0.0).astype(np.float32)
    for name, missing in MISSING_VALUES.items():  # JSON has no NaN: the documented stand-ins
        if name in checked:
            checked[name] = np.where(np.isfinite(checked[name]), checked[name], missing).astype(np.float32)
    return {"signature_name": endpoint, "inputs": {k: v.tolist() for k, v in checked.items()}}


def lowres_on_grid(
    spectrum: Spectrum, signatures: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Spectrum resampled onto the export grid with the one flux-conserving resampler.

    Returns flux, ivar, mask (L,) float32; pixels the spectrum does not cover, or that
    touch its masked pixels, are masked (ivar 0, mask 1).
    """
    edges_in = edges_from_centres(spectrum.wavelength)
    ivar_in = np.where(spectrum.mask, 0.0, spectrum.ivar)
    flux, ivar = resample_flux(edges_in, spectrum.flux, ivar_in, grid_edges(signatures))
    ivar = ivar * finer_grid_ivar_factor(edges_in, grid_edges(signatures))
    mask = ~(ivar > 0)
    if mask.all():
        grid = signatures["metadata"]["instrument"]
        raise ValueError(
            f"spectrum {spectrum.object_id or ''} ({spectrum.wavelength[0]:.0f}-"
            f"{spectrum.wavelength[-1]:.0f} Å) does not overlap the export grid "
            f"{grid['wave_min']:.0f}-{grid['wave_max']:.0f} Å"
        )
    return flux.astype(np.float32), ivar.astype(np.float32), mask.astype(np.float32)


def spectrum_request(
    source,
    signatures,
    z_prior: float,
    seed: int = 0,
    endpoint: str = "super_resolve",
    format: str | None = None,
    source_sigma_arcsec: float = float("nan"),
    log_mstar: float = float("nan"),
) -> dict:
    """Request body for one FITS spectrum (path, read with `read_spectrum`) or Spectrum.

    source_sigma_arcsec: the source's Gaussian sigma along the dispersion (slitless LSF;
    NaN = the instrument's reference size); log_mstar: a catalogue stellar mass (NaN = none).
    """
    from specsr_keras.data.readers import read_spectrum

    signatures = load_signatures(signatures)
    spectrum = source if isinstance(source, Spectrum) else read_spectrum(source, format)
    flux, ivar, mask = lowres_on_grid(spectrum, signatures)
    return request_body(
        signatures,
        endpoint,
        lowres_flux=flux[None],
        lowres_ivar=ivar[None],
        lowres_mask=mask[None],
        z_prior=np.array([z_prior], np.float32),
        source_sigma_arcsec=np.array([source_sigma_arcsec], np.float32),
        log_mstar=np.array([log_mstar], np.float32),
        seed=np.array([seed], np.int32),
    )


# --- transport -----------------------------------------------------------------------


def model_url(server: str, name: str, version: int | None = None) -> str:
    """http://host:8501/v1/models/<name>[/versions/<version>]:predict"""
    base = server.rstrip("/")
    version_part = f"/versions/{int(version)}" if version is not None else ""
    return f"{base}/v1/models/{name}{version_part}:predict"


def predict(
    server: str, name: str, body: dict, version: int | None = None, timeout: float = 120.0
) -> dict:
    """POST `body` to TF Serving's REST API; the decoded JSON answer."""
    request = urllib.request.Request(
        model_url(server, name, version),
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise RuntimeError(f"TF Serving answered {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise ConnectionError(f"cannot reach TF Serving at {server}: {error.reason}") from None


# --- response ------------------------------------------------------------------------


def parse_response(
    response: dict, signatures: dict, endpoint: str = "super_resolve"
) -> dict[str, np.ndarray]:
    """A `:predict` answer ("outputs" or "predictions" format) as checked numpy arrays."""
    spec = load_signatures(signatures)["endpoints"][endpoint]["outputs"]
    names = list(spec)
    if "outputs" in response:
        raw = response["outputs"]
        raw = raw if isinstance(raw, dict) else {names[0]: raw}
    elif "predictions" in response:
        rows = response["predictions"]
        rows = [row if isinstance(row, dict) else {names[0]: row} for row in rows]
        raw = {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
    elif "error" in response:
        raise RuntimeError(f"TF Serving error: {response['error']}")
    else:
        raise ValueError("response has neither 'outputs' nor 'predictions'")
    missing = [name for name in names if name not in raw]
    if missing:
        raise ValueError(f"response lacks outputs {', '.join(missing)}")
    out = {}
    for name in names:
        value = np.asarray(raw[name], dtype=spec[name]["dtype"])
        expected = spec[name]["shape"]
        if value.ndim != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, value.shape, strict=True)
        ):
            raise ValueError(f"output {name} has shape {value.shape}, expected {expected}")
        out[name] = value
    return out


def super_resolved(outputs: dict) -> list[dict]:
    """Per-row super_resolve results with astropy units.

    Each row: "wavelength" (320,) observed [Å] (TARGET_GRID centres x (1 + z_place)),
    "rest_wavelength" [Å], "flux" and "flux_std" (320,) and "samples" (K, 320)
    [1e-17 erg/s/cm²/Å], "z_place", "scale", "reconstruction_chi2", and per line quantity
    `<q>_<p>` (ha_flux / nii_6585_flux in 1e-17 erg/s/cm², n2 in dex, z dimensionless).
    """
    units = {"ha_flux": LINE_FLUX_UNIT, "nii_6585_flux": LINE_FLUX_UNIT, "n2": u.dex, "z": u.dimensionless_unscaled}
    rows = []
    for b in range(len(outputs["z_place"])):
        z = float(outputs["z_place"][b])
        row = {
            "rest_wavelength": TARGET_GRID.wavelength * u.AA,
            "wavelength": TARGET_GRID.wavelength * (1.0 + z) * u.AA,
            "flux": outputs["sr_mean"][b] * FLUX_UNIT,
            "flux_std": outputs["sr_std"][b] * FLUX_UNIT,
            "samples": outputs["samples"][b] * FLUX_UNIT,
            "z_place": z,
            "scale": float(outputs["scale"][b]) * FLUX_UNIT,
            "reconstruction_chi2": float(outputs["reconstruction_chi2"][b]),
        }
        for q in SAMPLE_QUANTITIES:
            for p in PERCENTILE_NAMES:
                row[f"{q}_{p}"] = float(outputs[f"{q}_{p}"][b]) * units[q]
        rows.append(row)
    return rows


__all__ = [
    "ENDPOINTS",
    "check_inputs",
    "grid_edges",
    "load_signatures",
    "lowres_on_grid",
    "model_url",
    "parse_response",
    "predict",
    "request_body",
    "spectrum_request",
    "super_resolved",
]
