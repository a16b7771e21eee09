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


def _print_version(value: bool) -> None:
    if value:
        import specsr_keras

        typer.echo(f"specsr {specsr_keras.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the specsr version and exit.")) -> None:
    """specsr: simulate, train, export, infer and evaluate (set SPECSR_DEBUG=1 for tracebacks)."""


def _register() -> None:
    from cli import build_dataset, evaluate, infer, simulate, simulate_catalog, train

    app.command("simulate")(simulate.simulate)
    app.command("simulate-catalog")(simulate_catalog.simulate_catalog)
    app.command("train")(train.train)
    app.command("infer")(infer.infer)
    app.command("evaluate")(evaluate.evaluate)
    app.command("build-dataset")(build_dataset.build_dataset)
    from cli import anomalies, embed, generate, similar

    app.command("embed")(embed.embed)
    app.command("similar")(similar.similar)
    app.command("anomalies")(anomalies.anomalies)
    app.command("generate")(generate.generate)
    from cli import export, serving_check, ship

    app.command("export")(export.export)
    app.command("serving-check")(serving_check.serving_check)
    app.command("ship")(ship.ship)


_register()


if __name__ == "__main__":
    app()
