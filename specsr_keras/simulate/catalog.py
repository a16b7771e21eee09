"""A Euclid-like input catalog for `specsr infer`, with its truth held back in a second file.

`simulate_catalog(n, instrument, out)` streams `iter_simulated_batches` into two FITS
tables written piece by piece (memory of one 1024-galaxy chunk, whatever n):

- OUT (e.g. cat.fits): object_id, ra/dec [deg], flux/ivar/mask vector columns on the
  instrument grid (header INSTRUME names it) [1e-17 erg s^-1 cm^-2 Å^-1], z_prior (NaN
  for objects without one), log_mstar = log10(M*/Msun) (the truth plus an SED-fit-like
  scatter), total
  photometry phot_<band> and its error phot_err_<band> [nJy] summed over the cutout,
  and with `images` the cutout itself (64, 64, 4) [nJy / pixel];
- OUT_truth (cat_truth.fits): the simulator's truth columns (TRUTH_FIELDS).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from specsr_keras.data.fits_table import FitsTableWriter
from specsr_keras.data.records import FLUX_UNIT
from specsr_keras.instruments import get_instrument
from specsr_keras.reporting import Reporter
from specsr_keras.simulate import SIMULATOR_VERSION, TRUTH_FIELDS, iter_simulated_batches
from specsr_keras.simulate.images import BANDS, IMAGE_SIZE

__all__ = ["catalog_dtype", "simulate_catalog", "truth_path"]

def truth_path(out_path) -> Path:
    """cat.fits -> cat_truth.fits."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".fits") + "_truth.fits")


def catalog_dtype(n_pixels: int, images: bool) -> np.dtype:
    """Columns of the simulated catalog for a grid of n_pixels."""
    fields = [("object_id", np.int64), ("ra", np.float64), ("dec", np.float64),
              ("flux", np.float32, (n_pixels,)), ("ivar", np.float32, (n_pixels,)),
              ("mask", np.bool_, (n_pixels,)), ("z_prior", np.float64),
              ("log_mstar", np.float64)]
    for band in BANDS:
        fields += [(f"phot_{band.name}", np.float32), (f"phot_err_{band.name}", np.float32)]
    if images:
        fields.append(("image", np.float32, (IMAGE_SIZE, IMAGE_SIZE, len(BANDS))))
    return np.dtype(fields)


def _catalog_rows(batch: dict, dtype: np.dtype, rng: np.random.Generator,
                  z_prior_fraction: float) -> dict:
    n = len(batch["object_id"])
    rows = {name: batch[name] for name in ("object_id", "ra", "dec")}
    rows.update(flux=batch["lowres_flux"], ivar=batch["lowres_ivar"], mask=batch["lowres_mask"])
    rows["z_prior"] = np.where(rng.random(n) < z_prior_fraction, batch["z_prior"], np.nan)
    rows["log_mstar"] = batch["log_mstar_catalog"]
    photometry = batch["image"].sum(axis=(1, 2))
    for index, band in enumerate(BANDS):
        rows[f"phot_{band.name}"] = photometry[:, index]
        rows[f"phot_err_{band.name}"] = np.full(n, band.pixel_noise_njy * IMAGE_SIZE)
    if "image" in dtype.names:
        rows["image"] = batch["image"]
    return rows


def simulate_catalog(n: int, instrument: str, out_path, *, seed: int = 0, images: bool = False,
                     z_prior_fraction: float = 1.0, workers: int = 1,
                     reporter: Reporter | None = None, **options) -> dict:
    """Write an n-row simulated catalog to out_path (.fits) and its truth beside it.

    instrument: name or alias (e.g. "euclid"); seed: the output depends only on (n,
    instrument, seed, z_prior_fraction, options); images: add the (64, 64, 4) cutouts
    (64 kB per row); z_prior_fraction: share of objects given a z prior; workers:
    simulation processes; options: SimulationOptions fields.
    Returns {"catalog", "truth": paths, "rows", "seconds"}.
    """
    out_path = Path(out_path)
    if not out_path.name.endswith(".fits"):
        raise ValueError(f"{out_path}: the catalog must be a .fits file")
    if not 0.0 <= z_prior_fraction <= 1.0:
        raise ValueError(f"z_prior_fraction must be in [0, 1], got {z_prior_fraction}")
    reporter = reporter or Reporter()
    grid = get_instrument(instrument)
    started = time.perf_counter()
    dtype = catalog_dtype(grid.grid.n_pixels, images)
    header = {"EXTNAME": "CATALOG", "INSTRUME": grid.name, "SIMVER": SIMULATOR_VERSION,
              "SEED": seed, "WAVEMIN": float(grid.bin_edges[0]),
              "WAVEMAX": float(grid.bin_edges[-1]), "DISPERS": grid.dispersion}
    units = {"ra": "deg", "dec": "deg", "flux": FLUX_UNIT, "ivar": FLUX_UNIT**-2,
             **{f"{kind}_{band.name}": "nJy" for band in BANDS for kind in ("phot", "phot_err")}}
    if images:
        units["image"] = "nJy"
    truth_dtype = np.dtype(list(TRUTH_FIELDS.items()))
    with FitsTableWriter(out_path, dtype, n, header=header, units=units) as catalog, \
            FitsTableWriter(truth_path(out_path), truth_dtype, n,
                            header={**header, "EXTNAME": "TRUTH"}) as truth, \
            reporter.task(f"simulate {out_path.name}", n) as advance:
        batches = iter_simulated_batches(n, grid, seed, workers=workers, **options)
        for index, batch in enumerate(batches):
            rng = np.random.default_rng([seed, index, 1])  # not the simulator's (seed, index)
            catalog.write(_catalog_rows(batch, dtype, rng, z_prior_fraction))
            truth.write({name: batch[name] for name in TRUTH_FIELDS})
            advance(len(batch["object_id"]))
    return {"catalog": str(out_path), "truth": str(truth_path(out_path)), "rows": n,
            "seconds": time.perf_counter() - started}
