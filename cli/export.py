"""`specsr export`: a training run -> a TensorFlow Serving SavedModel version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


@one_line_errors
def export(
    run_dir: Annotated[
        Path, typer.Argument(help="Finished training run (holds run.json and models/*.keras).")
    ],
    version: Annotated[
        int, typer.Option(min=1, help="Model version N: writes OUT/NAME/N (never overwritten).")
    ],
    name: Annotated[str, typer.Option(help="Model name served by TF Serving.")] = "specsr",
    instrument: Annotated[
        str,
        typer.Option(help="Grid the endpoints take low-res spectra on (euclid, g141, roman, ...)."),
    ] = "euclid",
    sampler: Annotated[
        str | None, typer.Option(help="ddim or dpm++2m (second order), and/or comma-separated key=value "
                                 "settings, e.g. 'noise_check=true' (see models/samplers.py); default: the "
                                 "model's sampler.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Sampler steps; default: the model's for --instrument.")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(min=2, help="Posterior samples K per object; default: the model's.")
    ] = None,
    eta: Annotated[
        float | None, typer.Option(min=0.0, help="DDIM eta (0 = deterministic given the seed); default: the model's.")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Export root: OUT/models.config and OUT/NAME/N/.")
    ] = Path("saved_models"),
):
    """Export the super-resolver and aligner as one SavedModel with five signatures.

    Signatures: super_resolve (= serving_default), embed_spectrum, embed_image,
    spectrum_from_image, anomaly_score; spectra in 1e-17 erg/s/cm²/Å on the instrument
    grid; preprocessing, data-consistent sampling and line fits in the graph. The sampler
    is the model's (saved with it) unless options change it. Writes OUT/NAME/N/signatures.json
    (inputs/outputs with units and shapes, metadata) and rewrites OUT/models.config.
    Example: [bold]specsr export runs/quick --name specsr --version 1[/]
    """
    from specsr_keras.export import export_run
    from specsr_keras.models.samplers import parse_sampler_settings

    options = {"steps": steps, "samples": samples, "eta": eta}
    changes = {**(parse_sampler_settings(sampler) or {}), **{k: v for k, v in options.items() if v is not None}}
    summary = export_run(
        run_dir, name=name, version=version, out=out, instrument=instrument, sampler=changes, reporter=reporter()
    )
    console.print(
        f"[green]exported[/] {summary['path']}: {', '.join(summary['endpoints'])} "
        f"({summary['size_bytes'] / 1e6:.1f} MB, trained on {summary['backend_trained_on']})"
    )
    mount = out if out.is_absolute() else f"$PWD/{out}"
    console.print(
        f"serve with: docker run -p 8501:8501 -v {mount}:/models tensorflow/serving "
        f"--model_config_file=/models/models.config",
        highlight=False,
    )
