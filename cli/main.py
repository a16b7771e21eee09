"""The `specsr` command: registers one function per command module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="specsr",
    help="Super-resolve galaxy grism spectra with cross-modal diffusion models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from cli import simulate

    app.command("simulate")(simulate.simulate)


_register()
