"""`specsr similar`: nearest neighbours of an object in the shared embedding space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import one_line_errors


@one_line_errors
def similar(
    index: Annotated[Path, typer.Option(help="Embedding file (specsr embed) searched, or "
                                        "holding the query with --cross-modal.")],
    query: str = typer.Option(..., help="An object id of INDEX, or a .npy file of one "
                              "embedding (D,) or several (Q, D)."),
    k: int = typer.Option(10, min=1, help="Neighbours to list."),
    cross_modal: Annotated[Path, typer.Option(
        help="Search this embedding file (the other modality) instead of INDEX.")] = None,
    png: Annotated[Path, typer.Option(help="Save a mosaic of query + neighbours here.")] = None,
):
    """List the K objects most cosine-similar to QUERY (itself excluded).

    With --cross-modal the query's embedding is taken from INDEX and the neighbours from
    the other file: e.g. the spectra closest to a galaxy's image.
    Example: [bold]specsr similar --index img.h5 --query 42 --k 10 --cross-modal spec.h5[/]
    """
    from rich.console import Console
    from rich.table import Table

    from specsr_keras.crossmodal.search import find_similar

    result = find_similar(index, query, k=k, cross_modal=cross_modal, png=png)
    table = Table(title=f"neighbours of {query} in {result['searched']} ({result['backend']})")
    for name in ("query", "rank", "object_id", "cosine"):
        table.add_column(name, justify="right" if name in ("rank", "cosine") else "left")
    for row in result["rows"]:
        table.add_row(row["query"], str(row["rank"]), row["object_id"], f"{row['cosine']:.4f}")
    console = Console()
    console.print(table)
    if png:
        console.print(f"[green]mosaic[/] {png}")
