"""`specsr ship`: put a trained run and its model card next to its SavedModel export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors


@one_line_errors
def ship(
    run: Annotated[Path, typer.Argument(help="Finished training run directory.")],
    name: Annotated[str, typer.Option(help="Model name under saved_models/.")] = "specsr",
    version: Annotated[int, typer.Option(min=1, help="Export version already written by `specsr export`.")] = 1,
    report: Annotated[list[Path], typer.Option(
        help="`specsr evaluate` report directory on held-out data (repeatable).")] = [],  # noqa: B006
    root: Annotated[Path, typer.Option(help="Directory holding the exports.")] = Path("saved_models"),
):
    """Copy RUN's models (no optimizer state) to ROOT/NAME/run and write ROOT/NAME/MODEL_CARD.md.

    Example: [bold]specsr ship runs/default --name specsr --version 1 --report reports/euclid[/]
    """
    from specsr_keras.ship.shipping import ship_model

    if not report:
        raise ValueError("give at least one --report: the card's evaluation comes from them")
    paths = ship_model(run, name, version, report, root=root)
    console.print(f"[green]shipped[/] {paths['saved_model']} with {paths['run']} and {paths['card']}")
