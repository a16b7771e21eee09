"""`specsr train`: staged, resumable training; every config field is an option."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import typer

from cli.common import one_line_errors, reporter
from specsr_keras.training.config import PRESETS, TrainConfig, field_names

_HELP = {
    "data": "Shard directories from `specsr simulate`/`build-dataset`, comma-separated; DIR@W weights a mix.",
    "val_data": "Held-out shard directory (default: hold out --val-fraction of --data).",
    "model_preset": "Network sizes: tiny (CPU) or base (GPU).",
    "stages": "Stages to run, in order: autoencoders,contrastive,decoders.",
    "checkpoint_every": "Optimizer steps between checkpoints.",
    "devices": "Devices for data parallelism (0 = all visible accelerators).",
    "init_from": "Run directory whose final weights initialise this run (fine-tuning).",
    "init_stages": "Stages whose weights --init-from provides (e.g. autoencoders,contrastive).",
    "sampler": "Super-resolver sampler settings saved with the model, e.g. 'amortised=true,steps=10'; "
               "'steps.g141=30' sets one instrument's steps.",
    "mixed_precision": "Mixed precision (GPU).",
}


def train(
    run_dir: Path = typer.Argument(..., help="Run directory, e.g. runs/quick (created; reused to resume)."),
    preset: str = typer.Option("quick", help=f"Training preset: {', '.join(PRESETS)}."),
    config: Path | None = typer.Option(None, exists=True, dir_okay=False, help="TOML file of config fields."),
    resume: bool = typer.Option(True, help="Continue from the newest valid checkpoint in RUN_DIR with the run's "
                                "saved config.toml (options given here override it)."),
    **fields,
):
    """Train the encoders, the contrastive head and the decoders.

    Example: [bold]specsr train runs/quick --preset quick --data demo/data/train[/]
    """
    from specsr_keras.training.config import run_config
    from specsr_keras.training.pipeline import train_run

    resolved = run_config(run_dir, preset, config, resume=resume, **fields)
    summary = train_run(resolved, run_dir, resume=resume, reporter=reporter("steps"))
    reporter().info(f"[green]trained[/] {run_dir}: {summary['headline']}")


def _with_config_options(command):
    """Give `command` one typer option per TrainConfig field (defaults None = from preset)."""
    signature = inspect.signature(command)
    fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, help=_HELP.get(name, name.replace("_", " ") + ".")),
            annotation={"str": str, "int": int, "float": float, "bool": bool}[types[name]] | None,
        )
        for name in field_names()
    ]
    command.__signature__ = signature.replace(parameters=fixed + options)
    return one_line_errors(command)


train = _with_config_options(train)
