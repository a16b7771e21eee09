"""Tiny catalogs for the inference tests: simulated Euclid rows written as FITS/HDF5/Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import Table

from specsr_keras.simulate import simulate_galaxies

EUCLID = "euclid_nisp_red"
# The shipped model directory and its one SavedModel version.
SHIPPED = Path(__file__).resolve().parents[1] / "saved_models" / "specsr"
SHIPPED_SAVEDMODEL = max((p for p in SHIPPED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def simulated_columns(n: int, seed: int = 0) -> dict:
    """Catalog columns of n simulated Euclid objects (bright: min_ha_snr=8)."""
    batch = simulate_galaxies(n, EUCLID, seed, min_ha_snr=8.0)
    return {"object_id": batch["object_id"], "flux": batch["lowres_flux"],
            "ivar": batch["lowres_ivar"], "mask": batch["lowres_mask"],
            "z_prior": batch["z_prior"], "z_true": batch["z"]}


def write_table(path, columns: dict, instrument: str | None = EUCLID) -> Path:
    """Write columns as a FITS / HDF5 / Parquet table chosen by the suffix of path."""
    path = Path(path)
    table = Table(columns, meta={"INSTRUME": instrument} if instrument else {})
    kwargs = {"path": "catalog"} if path.suffix == ".h5" else {}
    table.write(path, overwrite=True, **kwargs)
    return path


def write_ragged_parquet(path, columns: dict, instrument: str = EUCLID,
                         row_group_size: int = 7) -> Path:
    """Parquet with list columns (rows may differ in length, None = null) and small row groups."""
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, list):
            arrays[name] = pa.array([None if v is None else np.asarray(v, np.float32)
                                     for v in values], type=pa.list_(pa.float32()))
        else:
            arrays[name] = pa.array(np.asarray(values))
    table = pa.table(arrays).replace_schema_metadata({"INSTRUME": instrument})
    pq.write_table(table, path, row_group_size=row_group_size)
    return Path(path)


# Rows of `bad_row_mix` that must be quarantined, with their reason codes.
BAD_ROWS = {3: "no_finite_flux", 5: "no_finite_flux", 7: "no_positive_ivar",
            9: "wrong_grid_length", 13: "missing_value", 17: "no_usable_pixels"}
# Rows with a problem that is masked or ignored, not quarantined, and the flag they get.
FLAGGED_ROWS = {11: "BAD_PIXELS_MASKED", 15: "Z_PRIOR_INVALID"}


def bad_row_mix(n: int = 20, seed: int = 0) -> dict:
    """Columns (lists per row, no mask column) with the bad rows of BAD_ROWS/FLAGGED_ROWS."""
    good = simulated_columns(n, seed)
    flux, ivar = list(good["flux"].astype(np.float64)), list(good["ivar"].astype(np.float64))
    z_prior = good["z_prior"].copy()
    flux[3] = np.full_like(flux[3], np.nan)
    flux[5] = np.full_like(flux[5], np.inf)
    ivar[7] = -np.abs(ivar[7])
    flux[9], ivar[9] = flux[9][:480], ivar[9][:480]
    flux[11] = flux[11].copy()
    flux[11][100] = np.nan
    ivar[11] = ivar[11].copy()
    ivar[11][200] = np.inf
    flux[13] = None
    z_prior[15] = np.inf
    flux[17], ivar[17] = flux[17].copy(), ivar[17].copy()
    flux[17][::2] = np.nan  # flux only where ivar is 0: no usable pixel
    ivar[17][1::2] = 0.0
    return {"object_id": good["object_id"], "flux": flux, "ivar": ivar, "z_prior": z_prior}
