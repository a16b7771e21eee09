"""FITS image cutouts -> ImageCutout[H, W, bands].

Either one multi-extension file with one band per image HDU, or one file per band. The band
name comes from the FILTER keyword, the pixel scale and the centre RA/Dec from the WCS.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from specsr_keras.data.readers._fits import assumed, open_fits
from specsr_keras.data.records import ImageCutout, SpecsrInputError

FORMAT = {
    "band_keys": assumed(("FILTER", "FILTER1", "FILTER2", "EXTNAME"),
                         "HST WFC3 writes FILTER, ACS FILTER1/FILTER2 (CLEAR* skipped)"),
    "object_key": assumed("OBJECT", "else the (first) file name stem"),
    "flux_unit_key": assumed("BUNIT", "recorded in meta, data left as stored"),
    "pixel_scale_tolerance": assumed(1e-3, "relative; all bands must share one pixel grid"),
}


def read_cutout(paths, bands=None, object_id=None) -> ImageCutout:
    """Read a cutout from one multi-extension FITS file or a list of one-band files.

    `bands` (optional) selects and orders the planes by band name. data is float32
    [H, W, bands]; non-finite pixels are set to 0 and counted in meta["nonfinite_pixels"];
    meta holds "ra"/"dec" [deg] of the central pixel, "bunit" and the source paths.
    """
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not files:
        raise SpecsrInputError("<no files>", "no cutout files given")
    planes = []
    for path in files:
        planes.extend(_image_planes(path, every_hdu=len(files) == 1))
    if bands is not None:
        planes = _select_bands(planes, [str(b) for b in bands])
    names = [plane["band"] for plane in planes]
    if len(set(names)) != len(names):
        raise SpecsrInputError(files[0], f"duplicate band names {names}")
    first = planes[0]
    for plane in planes[1:]:
        _check_same_grid(first, plane)
    data = np.stack([plane["data"] for plane in planes], axis=-1).astype(np.float32)
    nonfinite = ~np.isfinite(data)
    data[nonfinite] = 0.0
    centre = first["wcs"].pixel_to_world((data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0)
    header = first["header"]
    meta = {"ra": float(centre.ra.deg), "dec": float(centre.dec.deg),
            "bunit": str(header.get(FORMAT["flux_unit_key"].value, "")),
            "nonfinite_pixels": int(nonfinite.sum()),
            "paths": [str(p) for p in files]}
    object_id = object_id or str(header.get(FORMAT["object_key"].value, "")).strip()
    return ImageCutout(data, tuple(names), first["scale"],
                       object_id=object_id or files[0].name.split(".")[0], meta=meta)


def _image_planes(path: Path, every_hdu: bool) -> list[dict]:
    """2-D image HDUs of `path` (all of them, or only the first) as band planes."""
    planes = []
    with open_fits(path) as hdul:
        for index, hdu in enumerate(hdul):
            if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) or hdu.data is None:
                continue
            if hdu.data.ndim != 2:
                raise SpecsrInputError(path, f"HDU {index} is not a 2-D image "
                                             f"(shape {hdu.data.shape})")
            planes.append(_plane(path, index, hdu))
            if not every_hdu:
                break
    if not planes:
        raise SpecsrInputError(path, "no 2-D image HDU")
    return planes


def _plane(path: Path, index: int, hdu) -> dict:
    header = hdu.header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    if not wcs.has_celestial:
        raise SpecsrInputError(path, f"HDU {index} has no celestial WCS")
    scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    return {"band": _band(path, index, header), "data": np.asarray(hdu.data, np.float64),
            "wcs": wcs, "scale": scale, "header": header, "where": f"{path.name}[{index}]"}


def _band(path: Path, index: int, header) -> str:
    for key in FORMAT["band_keys"].value:
        value = str(header.get(key, "")).strip()
        if value and not value.upper().startswith("CLEAR"):
            return value
    raise SpecsrInputError(path, f"HDU {index} has no band keyword "
                                 f"({', '.join(FORMAT['band_keys'].value)})")


def _select_bands(planes: list[dict], bands: list[str]) -> list[dict]:
    by_name = {plane["band"].upper(): plane for plane in planes}
    missing = [b for b in bands if b.upper() not in by_name]
    if missing:
        raise SpecsrInputError(planes[0]["where"], f"bands {missing} not found "
                                                   f"(have {[p['band'] for p in planes]})")
    return [by_name[b.upper()] for b in bands]


def _check_same_grid(first: dict, plane: dict) -> None:
    if plane["data"].shape != first["data"].shape:
        raise SpecsrInputError(plane["where"], f"shape {plane['data'].shape} differs from "
                                               f"{first['where']} {first['data'].shape}")
    tolerance = FORMAT["pixel_scale_tolerance"].value
    if abs(plane["scale"] / first["scale"] - 1.0) > tolerance:
        raise SpecsrInputError(plane["where"], f"pixel scale {plane['scale']:.4f}\" differs "
                                               f"from {first['where']} {first['scale']:.4f}\"")
