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
    top: int = typer.Option(100, min=1, help="Objects in the top table and gallery (gallery "
                            "shows at most 25)."),
    k: int = typer.Option(10, min=1, help="Neighbours for the density term."),
):
    """Score every object: 1 - cos(image, spectrum) and mean distance to its K nearest
    neighbours, each standardised by median/MAD on the sample, averaged.

    Writes OUT/anomalies.fits (all objects, most anomalous first), OUT/anomalies_top.csv,
    OUT/score_histogram.png and OUT/gallery.png.
    Example: [bold]specsr anomalies --index img.h5 --spectra-index spec.h5 --out anomalies/[/]
    """
    from rich.table import Table

    from specsr_keras.crossmodal.report import write_anomalies

    result = write_anomalies(index, out, spectra_index=spectra_index, top=top, k=k)
    table = Table(title=f"top anomalies ({result['n']:,} objects; {result['components']})")
    table_all = result["table"]
    columns = ["object_id", "score", "percentile"] + [c for c in table_all.colnames
                                                       if c.startswith("z_")]
    top_rows = table_all[columns][: min(top, 15)]
    for name in top_rows.colnames:
        table.add_column(name, justify="left" if name == "object_id" else "right")
    for row in top_rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"[green]wrote[/] {', '.join(result['files'])}")
