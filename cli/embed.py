"""`specsr embed`: shared-space embeddings of a catalog's images or spectra (HDF5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


@one_line_errors
def embed(
    catalog: str = typer.Argument(..., help="FITS / HDF5 / Parquet table (image column for "
                                  "--modality image; flux/ivar for spectrum)."),
    model: Annotated[Path, typer.Option(
        help="Training run directory (models/contrastive.keras).")] = ...,
    modality: str = typer.Option("image", help="'image' (cutouts) or 'spectrum' (low-res)."),
    out: Annotated[Path, typer.Option(help="Output HDF5 file: ids, rows, embedding (N, D), "
                                      "quarantine_ids/reasons.")] = ...,
    chunk_rows: int = typer.Option(4096, min=1, help="Rows read and embedded at a time."),
    batch: int = typer.Option(256, min=1, help="Rows per model call."),
    instrument: str = typer.Option(None, help="Grid spectra are put on (default: the "
                                   "catalog's, else euclid)."),
):
    """Embed every row of CATALOG into the shared image-spectrum space (unit vectors).

    Rows that cannot be embedded (NaN or blank cutout, wrong shape, unusable spectrum)
    are listed with a reason in the output's quarantine datasets.
    Example: [bold]specsr embed cat.fits --model runs/quick --modality image --out img.h5[/]
    """
    from specsr_keras.crossmodal.store import embed_catalog
    from specsr_keras.instruments import resolve_instrument_name

    grid = resolve_instrument_name(instrument) if instrument else None
    result = embed_catalog(catalog, model, modality, out, chunk_rows=chunk_rows, batch=batch,
                           instrument=grid, reporter=reporter("rows"))
    console.print(f"[green]embedded[/] {result['rows_out']:,} of {result['rows_in']:,} rows "
                  f"({result['rows_quarantined']:,} quarantined) into {result['out']} "
                  f"in {result['seconds']:.1f} s")
