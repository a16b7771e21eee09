"""`specsr generate`: hi-res spectra (and line measurements) for image-only galaxies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


@one_line_errors
def generate(
    catalog: Annotated[str, typer.Argument(
        help="FITS / HDF5 / Parquet table with an `image` column (64x64x4 cutouts, "
        "nJy/pixel), ideally z_prior and, where known, log_mstar_catalog (the prior reads it).")],
    model: Annotated[Path, typer.Option(help="Training run directory (models/superres.keras) "
                                        "or a super-resolver .keras file.")],
    out: Annotated[Path, typer.Option(help="Run directory, e.g. results/RUN (reused to resume).")],
    chunk_rows: int = typer.Option(4096, min=1, help="Rows per chunk and output file."),
    batch: int = typer.Option(64, min=1, help="Rows per model call."),
    samples: int = typer.Option(None, min=2, help="Generated spectra per object (default: the model's)."),
    save_spectra: bool = typer.Option(
        True, help="Save the generated spectrum mean/std (320 px, rest 6460-6780 Å)."),
    overwrite: bool = typer.Option(False, help="Delete an earlier run in OUT and start over."),
    seed: int = typer.Option(0, min=0, help="Base seed; chunk seeds derive from it and the index."),
    workers: int = typer.Option(
        None, min=1, help="Start a local Dask cluster of N single-threaded worker processes."),
):
    """Generate spectra from images: SAMPLES draws per galaxy -> Hα, [NII], N2, z percentiles.

    Same chunks, manifest, resume and quarantine as `specsr infer` (bad cutouts end in
    quarantine.fits with a reason). Fluxes are in units of the object's spectrum scale
    (flag NO_FLUX_SCALE); N2 (dex) and z do not depend on it; z needs a z_prior.
    Example: [bold]specsr generate images.fits --model runs/quick --out results/gen[/]
    """
    from cli.infer import summary_table
    from specsr_keras.inference.runner import InferConfig, run_inference

    config = InferConfig(chunk_rows=chunk_rows, batch=batch, samples=samples,
                         save_spectra=save_spectra, seed=seed)
    summary = run_inference(catalog, f"generator:{Path(model).resolve()}", out, config,
                            workers=workers, overwrite=overwrite, reporter=reporter("rows"))
    console.print(summary_table(summary))
