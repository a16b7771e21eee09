"""`specsr simulate-catalog`: a Euclid-like input catalog for `specsr infer`, truth held back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.common import one_line_errors, reporter


@one_line_errors
def simulate_catalog(
    out: Annotated[Path, typer.Option(help="Catalog FITS file; truth goes to OUT_truth.fits.")],
    n: int = typer.Option(..., min=1, help="Number of objects (rows)."),
    instrument: str = typer.Option(
        "euclid", help="Grism whose grid the spectra are on: euclid, g141, roman, ..."),
    seed: int = typer.Option(0, min=0, help="Random seed; the same seed gives the same catalog."),
    images: bool = typer.Option(False, help="Add the 64x64x4 image cutout column (64 kB/row)."),
    z_prior_fraction: float = typer.Option(
        1.0, min=0.0, max=1.0, help="Share of objects with a z prior (others get NaN)."),
    min_ha_snr: float = typer.Option(
        3.5, help="Keep objects whose expected grism Hα S/N (matched filter) is at least this."),
    workers: int = typer.Option(
        min(2, os.cpu_count() or 1), min=1, help="Processes simulating chunks in parallel."),
):
    """Simulate a catalog: id, RA/Dec, flux/ivar/mask on the grism grid, z prior, photometry, M*.

    Streams chunks to disk, so 1e5 rows need ~0.5 GB of disk and little memory.
    Example: [bold]specsr simulate-catalog --n 100000 --instrument euclid --out cat.fits[/]
    """
    from specsr_keras.simulate.catalog import simulate_catalog as simulate

    report = reporter("rows")
    result = simulate(n, instrument, out, seed=seed, images=images,
                      z_prior_fraction=z_prior_fraction, workers=workers, reporter=report,
                      min_ha_snr=min_ha_snr)
    report.info(f"[green]wrote[/] {n} rows to {result['catalog']} (truth: {result['truth']}) "
                f"in {result['seconds']:.1f} s ({n / result['seconds']:,.0f} rows/s)")
