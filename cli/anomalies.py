"""`specsr anomalies`: rank objects by shared-space anomaly score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors


@one_line_errors
def anomalies(
    index: Annotated[Path, typer.Option(help="Embedding file (specsr embed), e.g. images.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    spectra_index: Annotated[Path, typer.Option(
        help="Embedding file of the other modality (adds cross-modal disagreement).")] = None,
    results: Annotated[Path, typer.Option(
        help="results.fits of `specsr infer` on the same objects: adds its line-model anomaly_fpr "
        "(broad Hα, narrow-line χ²) as a part.")] = None,
    top: int = typer.Option(100, min=1, help="Objects in the top table and gallery (gallery "
                            "shows at most 25)."),
    k: int = typer.Option(10, min=1, help="Neighbours for the density term."),
):
    """Rank objects by a false-positive rate with named parts: 1 - cos(image, spectrum),
    the mean distance to the K nearest neighbours (each part's rate: the share of the sample
    at least as extreme) and, with --results, infer's line-model anomaly_fpr; combined as
    min(1, parts x the smallest rate) in anomaly_fpr (score: the parts standardised by
    median/MAD, averaged, breaks ties).

    Writes OUT/anomalies.fits (all objects, most anomalous first), OUT/anomalies_top.csv,
    OUT/score_histogram.png and OUT/gallery.png.
    Example: [bold]specsr anomalies --index img.h5 --spectra-index spec.h5 --out anomalies/[/]
    """
    from rich.table import Table

    from specsr_keras.crossmodal.report import write_anomalies

    result = write_anomalies(index, out, spectra_index=spectra_index, results=results, top=top, k=k)
    table = Table(title=f"top anomalies ({result['n']:,} objects; {result['components']})")
    table_all = result["table"]
    columns = ["object_id", "anomaly_fpr", "score"] + [c for c in table_all.colnames
                                                        if c.startswith("p_")]
    top_rows = table_all[columns][: min(top, 15)]
    for name in top_rows.colnames:
        table.add_column(name, justify="left" if name == "object_id" else "right")
    for row in top_rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"[green]wrote[/] {', '.join(result['files'])}")
