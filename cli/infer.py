"""`specsr infer`: measure Hα, [NII], N2 and z for every object of a catalog, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


@one_line_errors
def infer(
    out: Annotated[Path, typer.Option(help="Run directory, e.g. results/RUN (reused to resume).")],
    catalog: str = typer.Argument(
        None, help="FITS / HDF5 / Parquet table, a directory, or a quoted glob of spectrum "
        "files (not needed with --merge)."),
    model: str = typer.Option(
        None, help="'baseline' (direct fit, Euclid grid), 'baseline:<instrument>', or an "
        "exported model."),
    chunk_rows: int = typer.Option(
        4096, min=1, help="Rows (files in directory mode) per chunk and output file."),
    batch: int = typer.Option(256, min=1, help="Rows per model call."),
    samples: int = typer.Option(
        None, min=2, help="Posterior samples per object (diffusion models); default: the model's own."),
    save_spectra: bool = typer.Option(
        False, help="Also save the super-resolved spectrum mean/std (320 px, rest 6460-6780 Å)."),
    scheduler: str = typer.Option(
        None, help="Dask scheduler address (tcp://host:port) of an existing cluster."),
    workers: int = typer.Option(
        None, min=1, help="Start a local Dask cluster of N single-threaded worker processes."),
    dashboard: str = typer.Option(
        ":8787", help="Address (host:port) of the --workers cluster's Dask dashboard, its URL logged "
        "(a busy port moves to a free one); 'off' for none."),
    overwrite: bool = typer.Option(False, help="Delete an earlier run in OUT and start over."),
    seed: int = typer.Option(0, min=0, help="Base seed; chunk seeds derive from it and the index."),
    merge: bool = typer.Option(
        False, "--merge", help="Only merge the finished chunks of OUT into results.fits."),
):
    """Run a model over a catalog: per-chunk files, a manifest, results.fits and quarantine.fits.

    A rerun of the same command skips finished chunks. Line fluxes in 1e-17 erg/s/cm²,
    N2 = log10([NII]6585/Hα) in dex; each with p2_5/p16/p50/p84/p97_5 (predictive
    percentiles from the samples: a calibrated model's p16-p84 holds the truth 68 % of the time).
    Example: [bold]specsr infer cat.fits --model baseline --out results/run1 --workers 2[/]
    """
    from specsr_keras.inference.merge import merge_run
    from specsr_keras.inference.runner import InferConfig, run_inference

    if merge:
        merged = merge_run(out, reporter=reporter("chunks"))
        console.print(f"[green]merged[/] {merged['rows_results']} rows into {merged['results']}, "
                      f"{merged['rows_quarantine']} into {merged['quarantine']}")
        return
    if catalog is None or model is None:
        raise ValueError("give a CATALOG and --model (or --merge alone to merge a finished run)")
    if scheduler and workers:
        raise ValueError("give --scheduler or --workers, not both")
    config = InferConfig(chunk_rows=chunk_rows, batch=batch, samples=samples,
                         save_spectra=save_spectra, seed=seed)
    summary = run_inference(catalog, model, out, config, workers=workers, scheduler=scheduler,
                            dashboard=None if dashboard == "off" else dashboard, overwrite=overwrite,
                            reporter=reporter("rows"))
    console.print(summary_table(summary))


def summary_table(summary):
    """Rich table of an InferSummary."""
    from rich.table import Table

    table = Table(title=f"specsr infer: {summary.run_dir}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("rows in", f"{summary.rows_in:,}"),
        ("rows out (results)", f"{summary.rows_out:,}"),
        ("rows quarantined", f"{summary.rows_quarantined:,}"),
        ("chunks run / skipped / total",
         f"{summary.chunks_run} / {summary.chunks_skipped} / {summary.chunks_total}"),
        ("time", f"{summary.seconds:,.1f} s"),
        ("throughput", f"{summary.rows_per_s:,.1f} rows/s"),
    ]
    rows += [(f"  quarantined: {reason}", f"{count:,}")
             for reason, count in summary.reasons.items()]
    if summary.rows_duplicate_id:
        rows.append(("rows flagged DUPLICATE_ID", f"{summary.rows_duplicate_id:,}"))
    if summary.rows_amplitude_ignored:
        rows.append(("rows flagged AMPLITUDE_IGNORED (flux units?)", f"{summary.rows_amplitude_ignored:,}"))
    rows += [("results", str(summary.results)), ("quarantine", str(summary.quarantine))]
    for name, value in rows:
        table.add_row(name, value)
    return table
