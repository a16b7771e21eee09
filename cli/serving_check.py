"""`specsr serving-check`: load an export in a fresh process and check every signature."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors


@one_line_errors
def serving_check(
    export_dir: Annotated[
        Path, typer.Argument(help="An export version, e.g. saved_models/specsr/11.")
    ],
    galaxies: Annotated[
        int, typer.Option(min=1, help="Simulated galaxies used as sample inputs.")
    ] = 4,
    seed: Annotated[int, typer.Option(min=0, help="Simulation and sampling seed.")] = 0,
    run: Annotated[
        Path | None,
        typer.Option(
            help="Training run for the Keras parity check "
            "(default: the run named in signatures.json)."
        ),
    ] = None,
    inputs: Annotated[
        Path | None,
        typer.Option(
            help=".npz of sample inputs (lowres_flux/ivar/mask, z_prior, seed, image) "
            "instead of simulated ones."
        ),
    ] = None,
):
    """Load EXPORT_DIR with tf.saved_model.load, run every signature, check shapes and parity.

    Shapes and dtypes are checked against signatures.json; super_resolve is compared with
    the Keras super-resolver on the same seed (max |diff| / flux scale <= 1e-4).
    Example: [bold]specsr serving-check saved_models/specsr/11[/]
    """
    from specsr_keras.export.serving_check import run_serving_check

    report = run_serving_check(export_dir, n=galaxies, seed=seed, run_dir=run, inputs=inputs)
    console.print(report["show"], highlight=False, markup=False)
    console.print(f"loaded in {report['load_seconds']:.1f} s")
    for name, info in report["signatures"].items():
        console.print(
            f"  {name}: {info['outputs']} outputs, {info['seconds'] * 1e3:.0f} ms "
            f"for {galaxies} objects"
        )
    parity = report["parity"]
    if "skipped" in parity:
        console.print(f"[yellow]parity skipped:[/] {parity['skipped']}")
    else:
        console.print(
            f"parity vs Keras: max |diff| = {parity['max_abs_diff_relative_to_scale']:.2e} "
            f"of the flux scale (tolerance {parity['tolerance']:.0e})"
        )
    console.print(f"[green]serving check passed[/] {export_dir}")
